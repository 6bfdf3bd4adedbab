// Sequences (docs/sequences.md): one row each, from GET /sequences, that expands to its
// steps (GET /sequences/<id>). An SSE `sequence` event carries a summary on every change:
// the row is redrawn from it and an expanded row's steps are asked for again. A held
// sequence offers Retry / Skip / Abort, a waiting CONFIRM step its message and Confirm,
// an unfinished sequence Cancel; each sends the token through api.js like every call.

import { api, get } from './api.js';
import { t } from './i18n.js';
import { h, statusBadge, shortTime, timeWithRelative, paramsSummary, inSequence } from './views.js';

const RECENT = 10; // finished sequences shown besides every unfinished one
const ACTIVE_LIMIT = 100;
const ENDED = ['completed', 'failed', 'cancelled'];
const ORDER = { held: 0, running: 1, pending: 2 }; // unfinished first: they may need a hand
// A sequence never goes back: pending -> running <-> held -> ended.
const RANK = { pending: 0, running: 1, held: 1, completed: 2, failed: 2, cancelled: 2 };
const REFRESH_MS = 150;
const path = (id, tail = '') => `/sequences/${encodeURIComponent(id)}${tail}`;

export class SequencePanel {
  constructor(root, { onError, onOpenTask, onNew }) {
    this.list = root.querySelector('#sequences');
    this.empty = root.querySelector('#sequences-empty');
    this.count = root.querySelector('#sequences-count');
    this.onError = onError;
    this.onOpenTask = onOpenTask;
    this.onNew = onNew;
    this.summaries = new Map(); // sequence_id -> summary
    this.docs = new Map(); // sequence_id -> full document, for the expanded rows
    this.expanded = new Set();
    this.busy = new Set(); // sequences with an operator request under way
    this.timers = new Map();
    this.touched = null; // during load(): the summaries events brought meanwhile
  }

  // The name people read, else the id (also for the task lists' step tags).
  nameOf(id) {
    const s = this.summaries.get(id);
    return (s && s.name) || id;
  }

  // After a (re)connect: the newest sequences and every unfinished one. An event that
  // arrived while the lists were asked for is as new as they are (or newer): it stays,
  // unless it would move the sequence backwards.
  async load() {
    const touched = new Map();
    this.touched = touched;
    try {
      const pages = await Promise.all([
        get(`/sequences?limit=${RECENT}`),
        ...['held', 'running', 'pending'].map((st) => get(`/sequences?status=${st}&limit=${ACTIVE_LIMIT}`)),
      ]);
      const fresh = new Map();
      for (const page of pages) for (const s of page.sequences || []) fresh.set(s.sequence_id, s);
      for (const [id, s] of touched) {
        const f = fresh.get(id);
        if (!f || (RANK[s.status] ?? 0) >= (RANK[f.status] ?? 0)) fresh.set(id, s);
      }
      this.summaries = fresh;
    } catch (err) {
      this.onError(err);
    } finally {
      if (this.touched === touched) this.touched = null;
    }
    for (const id of this.expanded) this.refresh(id);
    this.render();
  }

  // An SSE summary (or a document a request answered with). A summary that would move
  // a sequence backwards (replayed after a reconnect, or sent late) is ignored.
  apply(summary) {
    if (!summary || !summary.sequence_id) return;
    const id = summary.sequence_id;
    const known = this.summaries.get(id);
    if (known && (RANK[summary.status] ?? 0) < (RANK[known.status] ?? 0)) return;
    const { steps, fixits, ...rest } = summary;
    this.summaries.set(id, { ...known, ...rest });
    if (this.touched) this.touched.set(id, this.summaries.get(id));
    // A new sequence's step tasks were queued without `task` events: reload them.
    if (!known && !ENDED.includes(summary.status) && this.onNew) this.onNew(id);
    if (steps && this.expanded.has(id)) this.docs.set(id, summary);
    else if (this.expanded.has(id)) this.refresh(id);
    this.render();
  }

  // A task event: a step of an expanded sequence changed.
  taskChanged(task) {
    if (task && task.sequence_id && this.expanded.has(task.sequence_id)) this.refresh(task.sequence_id);
  }

  // Debounced per sequence: a burst of events costs one request.
  refresh(id) {
    clearTimeout(this.timers.get(id));
    this.timers.set(id, setTimeout(async () => {
      this.timers.delete(id);
      try {
        const doc = await get(path(id));
        this.docs.set(id, doc);
        this.apply(doc);
      } catch (err) {
        this.onError(err);
      }
    }, REFRESH_MS));
  }

  toggle(id) {
    if (this.expanded.has(id)) {
      this.expanded.delete(id);
      this.docs.delete(id);
    } else {
      this.expanded.add(id);
      this.refresh(id);
    }
    this.render();
  }

  async act(id, tail, body) {
    if (this.busy.has(id)) return;
    this.busy.add(id);
    this.render();
    try {
      const { data } = await api('POST', path(id, tail), body);
      const doc = data && (data.sequence || data); // the document, bare or under `sequence`
      if (doc && doc.sequence_id && doc.status) this.apply(doc);
    } catch (err) {
      this.onError(err);
    } finally {
      this.busy.delete(id);
      this.render();
    }
  }

  sorted() {
    const all = [...this.summaries.values()].sort((a, b) => {
      const ra = ORDER[a.status] ?? 3;
      const rb = ORDER[b.status] ?? 3;
      if (ra !== rb) return ra - rb;
      return String(b.submit_time || '').localeCompare(String(a.submit_time || ''));
    });
    const unfinished = all.filter((s) => !ENDED.includes(s.status));
    return unfinished.concat(all.filter((s) => ENDED.includes(s.status)).slice(0, RECENT));
  }

  render() {
    const shown = this.sorted();
    this.list.replaceChildren(...shown.map((s) => this.row(s)));
    this.empty.hidden = shown.length > 0;
    this.count.textContent = String(shown.filter((s) => !ENDED.includes(s.status)).length);
  }

  row(s) {
    const id = s.sequence_id;
    const open = this.expanded.has(id);
    const busy = this.busy.has(id);
    const p = s.progress || {};
    const stepsId = `seq-steps-${id}`;
    const li = h('li', { class: `seq-item seq-${s.status}`, dataset: { sequenceId: id } },
      h('div', { class: 'seq-head' },
        h('button', { type: 'button', class: 'link-button seq-toggle', 'aria-expanded': String(open),
          'aria-controls': stepsId, onclick: () => this.toggle(id),
          text: open ? t('web.seq.hide_steps') : t('web.seq.show_steps') }),
        statusBadge(s.status),
        h('strong', { class: 'seq-name', text: s.name || t('web.seq.unnamed') }),
        h('code', { text: id }),
        h('span', { class: 'seq-progress', text: t('web.seq.progress', { done: p.steps_done ?? 0, total: p.steps_total ?? 0 }) }),
        s.current_step ? h('span', { class: 'seq-current', text: t('web.seq.at_step', { step: s.current_step }) }) : null,
        ENDED.includes(s.status) ? null
          : h('button', { type: 'button', class: 'secondary seq-cancel', disabled: busy,
            onclick: () => this.act(id, '/cancel'), text: t('web.seq.cancel') })),
      this.facts(s),
      s.status === 'held' ? this.holdBox(s, busy) : null,
      s.confirm ? this.confirmBox(s, busy) : null);
    if (open) li.append(this.steps(id, stepsId));
    return li;
  }

  facts(s) {
    const parts = [];
    if (s.external_id) parts.push(h('span', { text: t('web.seq.external_id', { id: s.external_id }) }));
    parts.push(h('span', {}, t('web.pending.submitted'), ' ', shortTime(s.submit_time)));
    if (s.end_time) parts.push(h('span', {}, t('web.detail.ended'), ' ', timeWithRelative(s.end_time)));
    else if (s.estimated_end_time) parts.push(h('span', {}, t('web.running.eta'), ' ', timeWithRelative(s.estimated_end_time, true)));
    if (s.failed_steps && s.failed_steps.length) {
      parts.push(h('span', { class: 'seq-failed', text: t('web.seq.failed_steps', { steps: s.failed_steps.join(', ') }) }));
    }
    return h('div', { class: 'times seq-facts' }, parts.flatMap((el, i) => (i ? [' · ', el] : [el])));
  }

  holdBox(s, busy) {
    const button = (action, cls, key) => h('button', { type: 'button', class: cls, disabled: busy,
      onclick: () => this.act(s.sequence_id, '/recover', { action }), text: t(key) });
    return h('div', { class: 'seq-hold', role: 'group' },
      h('p', { class: 'seq-hold-reason' },
        h('strong', { text: t('web.seq.held_at', { step: s.current_step ?? '?' }) }), ' ',
        h('span', { text: s.hold_reason || s.hold_code || '' })),
      h('p', { class: 'hint', text: t('web.seq.hold_hint') }),
      h('div', { class: 'actions' },
        button('retry', 'seq-retry', 'web.seq.retry'),
        button('skip', 'secondary seq-skip', 'web.seq.skip'),
        button('abort', 'secondary seq-abort', 'web.seq.abort')));
  }

  confirmBox(s, busy) {
    const c = s.confirm;
    return h('div', { class: 'seq-confirm', role: 'group' },
      h('p', {}, h('strong', { text: t('web.seq.confirm_wait', { step: c.step }) }), ' ',
        h('span', { class: 'seq-confirm-message', text: c.message })),
      c.deadline ? h('p', { class: 'times' }, t('web.seq.confirm_deadline'), ' ', timeWithRelative(c.deadline, true)) : null,
      h('div', { class: 'actions' },
        h('button', { type: 'button', class: 'seq-confirm-btn', disabled: busy,
          onclick: () => this.act(s.sequence_id, '/confirm'), text: t('web.seq.confirm') })));
  }

  steps(id, stepsId) {
    const doc = this.docs.get(id);
    const box = h('div', { class: 'seq-steps', id: stepsId });
    if (!doc || !Array.isArray(doc.steps)) {
      box.append(h('p', { class: 'empty', text: t('web.seq.loading') }));
      return box;
    }
    const cols = [t('web.seq.col.step'), t('web.col.status'), t('web.col.command'), t('web.seq.col.label'),
      t('web.seq.col.attempts'), t('web.col.task')];
    box.append(h('div', { class: 'table-wrap' }, h('table', { class: 'steps' },
      h('thead', {}, h('tr', {}, cols.map((c) => h('th', { text: c })))),
      h('tbody', {}, doc.steps.map((st) => this.stepRow(st, doc))))));
    if (Array.isArray(doc.fixits) && doc.fixits.length) {
      box.append(h('h4', { text: t('web.seq.fixits') }),
        h('ul', { class: 'seq-fixits' }, doc.fixits.map((f) => h('li', {},
          statusBadge(f.status), ' ', h('strong', { text: f.cmd_type }), ' ',
          h('span', { class: 'params', text: paramsSummary(f.params) }), ' ',
          h('span', { class: 'hint', text: t('web.seq.fixit_at', { step: f.at_step }) })))));
    }
    return box;
  }

  stepRow(st, doc) {
    const result = st.result && st.result.message && ['failed', 'cancelled'].includes(st.status) ? st.result.message : '';
    return h('tr', { class: st.step === doc.current_step ? 'current' : null, dataset: { step: String(st.step) } },
      h('td', { text: String(st.step) }),
      h('td', {}, statusBadge(st.status)),
      h('td', {}, h('strong', { text: st.cmd_type }), ' ', h('span', { class: 'params', text: paramsSummary(st.params) }),
        result ? h('div', { class: 'seq-step-result', text: result }) : null),
      h('td', { text: st.label || '' }),
      h('td', { text: String(st.attempts ?? 0) }),
      h('td', { class: 'row-actions' }, st.task_id
        ? h('button', { type: 'button', class: 'secondary details', onclick: () => this.onOpenTask(st.task_id), text: t('web.history.details') })
        : '—'));
  }
}

// Cancel from the task lists: a step cancels its whole sequence.
export function cancelTarget(task) {
  return inSequence(task) ? path(task.sequence_id, '/cancel') : `/task/${encodeURIComponent(task.task_id)}/cancel`;
}
