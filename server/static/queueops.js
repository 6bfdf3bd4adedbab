// The queue as an operator shapes it (docs/queue.md): each waiting task and queued
// sequence in the Pending list gets To the front / Up / Down and can be dragged onto
// another waiting item to take its place (POST /task|/sequences/<id>/move|jump); each
// says why it waits (the first of its `waiting_for`, said in the page's language from its
// code and params: the SSE documents carry the server's) and, with a `not_before`, when
// it may start with a live count-down. Drain / Maintenance now / Open (with the banner
// while the queue is not open), and the history's CSV download (GET /tasks.csv).
//
// The list is in queue order, which the operator may have changed: GET /tasks lists by
// submission, so the order is rebuilt from each task's `waiting_for` (how many run before
// it) and, after a (re)connect, /queue/status's `pending` (the head of the queue, exact).
// The list is asked again after every `queue` event (a move, a pause, a mode change) and
// every task, sequence or robot change: no timer.

import { api, get, download } from './api.js';
import { t, onLanguageChange } from './i18n.js';
import { h, shortTime, parseTime, debounce } from './views.js';
import { may, named, promptReason } from './auth.js';
import { saveBlob } from './audit.js';

const $ = (sel) => document.querySelector(sel);
const REFRESH_MS = 300;
const TICK_MS = 1000;
const PENDING_LIMIT = 500;
const pad = (n) => String(n).padStart(2, '0');

// The tasks of GET /tasks?status=pending (newest first) in queue order: each has its
// `queue_position` (the server's order, operators' moves included). `first`:
// /queue/status's `pending`, the head of the queue, for a document without one.
export function queueOrder(tasks, first = []) {
  const exact = new Map(first.map((id, i) => [id, i + 1]));
  const place = (task) => task.queue_position ?? exact.get(task.task_id) ?? Infinity;
  return tasks.slice().reverse()
    .map((task, i) => ({ task, i, place: place(task) }))
    .sort((a, b) => a.place - b.place || a.i - b.i)
    .map((e) => e.task);
}

// "1:23", "1:02:03"; a day or more: [days, "h:mm:ss"].
function left(seconds) {
  const s = seconds % 60;
  const m = Math.floor(seconds / 60) % 60;
  const hours = Math.floor(seconds / 3600);
  const clock = (hh) => (hh ? `${hh}:${pad(m)}:${pad(s)}` : `${m}:${pad(s)}`);
  return hours >= 24 ? [Math.floor(hours / 24), clock(hours % 24)] : [0, clock(hours)];
}

function countdownText(until) {
  const seconds = Math.ceil((until - Date.now()) / 1000);
  if (seconds <= 0) return t('web.pending.start_due');
  const [days, clock] = left(seconds);
  return days ? t('web.pending.starts_in_days', { days, left: clock }) : t('web.pending.starts_in', { left: clock });
}

export class QueueOps {
  // `state`: app.js's (pending, rank, history); `seqs`: the SequencePanel (names, which
  // sequences are still queued); `render`: draw the lists again.
  constructor({ state, seqs, render, onError }) {
    Object.assign(this, { state, seqs, render, onError });
    this.mode = 'open';
    this.window = null; // the maintenance window: {reason, opened_by, opened_at, maintenance_at}
    this.dragged = null; // the unit being dragged: {id, sequence}
    this.asked = 0;
    this.refresh = debounce(() => this.reorder(), REFRESH_MS);
    this.decorate = (items, groups) => this.decorateAll(items, groups);
    $('#drain-btn').addEventListener('click', () => this.close('/queue/drain', t('web.reason.drain')));
    $('#maint-btn').addEventListener('click', () => this.close('/queue/maintenance', t('web.reason.maintenance')));
    for (const sel of ['#open-btn', '#maint-open']) $(sel).addEventListener('click', () => this.open());
    $('#history-csv').addEventListener('click', () => this.csv());
    onLanguageChange(() => this.renderMode());
    setInterval(() => this.tick(), TICK_MS);
    this.renderMode();
  }

  // -- the order ---------------------------------------------------------------------------
  async reorder() {
    const asked = ++this.asked;
    if (!this.state.pending.length) return; // nothing waits: nothing to put in order
    try {
      const page = await get(`/tasks?status=pending&limit=${PENDING_LIMIT}`);
      if (asked !== this.asked) return; // a newer answer is on its way
      const known = new Map(this.state.pending.map((task) => [task.task_id, task]));
      // Not what the page has seen start or end since (the list may be older than its events).
      const fresh = page.tasks.filter((task) => (this.state.rank.get(task.task_id) ?? 0) === 0);
      const listed = new Set(fresh.map((task) => task.task_id));
      this.state.pending = queueOrder(fresh).map((doc) => ({ ...known.get(doc.task_id), ...doc }))
        .concat(this.state.pending.filter((task) => !listed.has(task.task_id))); // submitted meanwhile
      this.render();
    } catch (err) {
      this.onError(err);
    }
  }

  async move(unit, where) {
    const path = `/${unit.sequence ? 'sequences' : 'task'}/${encodeURIComponent(unit.id)}/${where ? 'move' : 'jump'}`;
    try {
      await api('POST', path, where || undefined);
      this.refresh(); // the `queue` event does too; whichever comes first
    } catch (err) {
      this.onError(err);
    }
  }

  // -- the Pending list's rows ---------------------------------------------------------------
  // What can move: a waiting task on its own, or a sequence still queued (not the one
  // holding the robot, whose steps wait in the list too).
  unitOf(group) {
    if (group.sequenceId) {
      const s = this.seqs.summaries.get(group.sequenceId);
      return !s || s.status === 'pending' ? { id: group.sequenceId, sequence: true } : null;
    }
    return group.tasks[0].sequence_id ? null : { id: group.tasks[0].task_id, sequence: false };
  }

  decorateAll(items, groups) {
    const units = groups.map((g) => this.unitOf(g));
    const movable = units.map((u, i) => (u ? i : -1)).filter((i) => i >= 0);
    groups.forEach((group, i) => {
      const li = items[i];
      li.querySelector('.pending-main').append(...this.lines(group.tasks[0]));
      const unit = units[i];
      if (!unit) return;
      const k = movable.indexOf(i);
      const prev = k > 0 ? units[movable[k - 1]] : null;
      const next = k + 1 < movable.length ? units[movable[k + 1]] : null;
      const button = (cls, label, title, disabled, where) => h('button', {
        type: 'button', class: `secondary move ${cls}`, text: label, title, disabled,
        onclick: () => this.move(unit, where) });
      li.insertBefore(h('div', { class: 'move-actions' },
        button('move-jump', t('web.queue.jump'), t('web.queue.jump_title'), k === 0, null),
        button('move-up', t('web.queue.up'), null, !prev, prev && { before: prev.id }),
        button('move-down', t('web.queue.down'), null, !next, next && { after: next.id })), li.querySelector('button.cancel'));
      this.draggable(li, unit, i, units);
    });
  }

  // Dropped on another waiting item, the dragged one takes its place: before it when
  // dragged up, after it when dragged down.
  draggable(li, unit, i, units) {
    li.draggable = may('queue');
    if (li.draggable) li.querySelector('.position').title = t('web.queue.drag_title');
    li.addEventListener('dragstart', (ev) => {
      if (!may('queue')) { ev.preventDefault(); return; }
      this.dragged = unit;
      ev.dataTransfer.effectAllowed = 'move';
      ev.dataTransfer.setData('text/plain', unit.id);
      li.classList.add('dragging');
    });
    li.addEventListener('dragend', () => {
      this.dragged = null;
      for (const el of document.querySelectorAll('#pending .dragging, #pending .drop-target')) el.classList.remove('dragging', 'drop-target');
    });
    li.addEventListener('dragover', (ev) => {
      if (!this.dragged || this.dragged.id === unit.id) return;
      ev.preventDefault();
      ev.dataTransfer.dropEffect = 'move';
      li.classList.add('drop-target');
    });
    li.addEventListener('dragleave', () => li.classList.remove('drop-target'));
    li.addEventListener('drop', (ev) => {
      ev.preventDefault();
      li.classList.remove('drop-target');
      const dragged = this.dragged;
      this.dragged = null;
      if (!dragged || dragged.id === unit.id) return;
      const from = units.findIndex((u) => u && u.id === dragged.id);
      this.move(dragged, from >= 0 && from < i ? { after: unit.id } : { before: unit.id });
    });
  }

  // Under the row's times: its not_before with the count-down, and why it waits.
  lines(task) {
    const reasons = task.waiting_for || [];
    const later = reasons.find((r) => r.code === 'not_before');
    const at = task.not_before || (later && later.params.time);
    const out = [];
    const until = parseTime(at);
    if (at) {
      out.push(h('div', { class: 'not-before' }, t('web.pending.not_before', { time: shortTime(at) }), ' · ',
        until === null ? '' : h('span', { class: 'countdown', dataset: { until: String(until) }, text: countdownText(until) })));
    }
    const first = reasons[0];
    if (first && first.code !== 'not_before') {
      out.push(h('div', { class: 'waiting', dataset: { code: first.code }, text: this.reason(first) }));
    } else if (!first && task.waiting_for) {
      out.push(h('div', { class: 'waiting', dataset: { code: 'next' }, text: t('web.waiting.next') }));
    }
    return out;
  }

  // A reason in the page's language; a code this page does not know: the server's words.
  reason({ code, params = {}, message }) {
    const why = params.reason || t('web.banner.no_reason');
    switch (code) {
      case 'maintenance': return t('web.waiting.maintenance', { reason: why });
      case 'paused': return t('web.waiting.paused', { reason: why });
      case 'robot_disconnected': return t('web.waiting.robot_disconnected');
      case 'sequence_held': return t('web.waiting.sequence_held', { name: this.seqs.nameOf(params.sequence_id) });
      case 'queue_position': return t('web.waiting.queue_position', { ahead: params.ahead });
      default: return message || code;
    }
  }

  tick() {
    for (const el of document.querySelectorAll('#pending .countdown')) {
      const text = countdownText(Number(el.dataset.until));
      if (el.textContent !== text) el.textContent = text;
    }
  }

  // -- drain, maintenance, open -------------------------------------------------------------
  // From /queue/status, a `queue` event or a reply (one without the mode changes nothing).
  setMode(q) {
    if (!q || !q.queue_mode) return;
    this.mode = q.queue_mode;
    this.window = q.maintenance || null;
    this.renderMode();
  }

  renderMode() {
    const { mode } = this;
    const w = this.window || {};
    $('#maint-banner').hidden = mode === 'open';
    $('#maint-label').textContent = mode === 'draining' ? t('web.maint.draining') : t('web.maint.maintenance');
    $('#maint-reason').textContent = mode === 'open' ? '' : t('web.maint.reason', { reason: w.reason || t('web.banner.no_reason') });
    $('#maint-by').textContent = mode !== 'open' && named(w.opened_by) ? t('web.maint.by', { name: w.opened_by }) : '';
    const since = mode === 'maintenance' ? w.maintenance_at || w.opened_at : w.opened_at;
    $('#maint-since').textContent = mode !== 'open' && since ? t('web.maint.since', { time: shortTime(since) }) : '';
    $('#drain-btn').hidden = mode !== 'open';
    $('#maint-btn').hidden = mode === 'maintenance';
    $('#open-btn').hidden = mode === 'open';
  }

  async close(path, question) {
    const reason = await promptReason(question, true);
    if (reason === null) return; // went back
    try {
      const { data } = await api('POST', path, { reason });
      this.setMode(data);
    } catch (err) {
      this.onError(err);
    }
  }

  async open() {
    try {
      const { data } = await api('POST', '/queue/open');
      this.setMode(data);
    } catch (err) {
      this.onError(err);
    }
  }

  // -- the history as a file ---------------------------------------------------------------
  async csv() {
    const params = new URLSearchParams();
    if (this.state.history.status) params.set('status', this.state.history.status);
    const now = new Date();
    const stamp = `${now.getFullYear()}${pad(now.getMonth() + 1)}${pad(now.getDate())}-`
      + `${pad(now.getHours())}${pad(now.getMinutes())}${pad(now.getSeconds())}`;
    const query = params.toString();
    try {
      saveBlob(await download(query ? `/tasks.csv?${query}` : '/tasks.csv'), `tasks-${stamp}.csv`);
    } catch (err) {
      this.onError(err);
    }
  }
}
