// DOM rendering. Everything goes through textContent (never innerHTML) because
// task params, results and robot messages are data from outside the page.
// Every word the page itself says comes from the catalogue (i18n.js).

import { t } from './i18n.js';

// Display labels only: the JSON values (pending, running...) never change.
const STATUS_LABELS = {
  pending: 'web.status.pending',
  running: 'web.status.running',
  completed: 'web.status.completed',
  failed: 'web.status.failed',
  cancelled: 'web.status.cancelled',
  held: 'web.status.held', // a sequence's
  skipped: 'web.status.skipped', // a sequence's step
};
const MODE_LABELS = { queue: 'web.mode.queue', sync: 'web.mode.sync' };

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'text') el.textContent = value;
    else if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

// Calls `fn` once `ms` after the last of a burst of calls.
export function debounce(fn, ms) {
  let timer = null;
  return () => { clearTimeout(timer); timer = setTimeout(fn, ms); };
}

export function statusLabel(status) {
  return STATUS_LABELS[status] ? t(STATUS_LABELS[status]) : status;
}

// Colour is never the only signal: every badge carries its word.
export function statusBadge(status) {
  return h('span', { class: `badge status-${status}`, text: statusLabel(status) });
}

// "2026-11-28 11:54:18" -> "11:54:18" when it is today's date, else as is.
export function shortTime(text) {
  if (!text) return '—';
  const today = new Date();
  const pad = (n) => String(n).padStart(2, '0');
  const ymd = `${today.getFullYear()}-${pad(today.getMonth() + 1)}-${pad(today.getDate())}`;
  return text.startsWith(ymd) ? text.slice(11) : text;
}

// The server writes its local time without a zone (the guide's format); the lab's
// browsers are on the same LAN and, in practice, the same zone.
export function parseTime(text) {
  const m = /^(\d{4})-(\d{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2})$/.exec(text || '');
  if (!m) return null;
  const [y, mo, d, hh, mm, ss] = m.slice(1).map(Number);
  return new Date(y, mo - 1, d, hh, mm, ss).getTime();
}

// "just now", "3 min ago", "in 2 h". An estimate (`expected`) that has passed is
// still to come: "any moment", never "2 min ago".
export function relativeTime(ms, now = Date.now(), expected = false) {
  const diff = (now - ms) / 1000;
  if (expected && diff > -45) return t('web.time.soon');
  const past = diff >= 0;
  const secs = Math.abs(diff);
  if (secs < 45) return past ? t('web.time.just_now') : t('web.time.soon');
  const mins = Math.max(1, Math.floor(secs / 60));
  if (mins < 60) return past ? t('web.time.minutes_ago', { n: mins }) : t('web.time.in_minutes', { n: mins });
  const hours = Math.floor(mins / 60);
  if (hours < 24) return past ? t('web.time.hours_ago', { n: hours }) : t('web.time.in_hours', { n: hours });
  const days = Math.floor(hours / 24);
  return past ? t('web.time.days_ago', { n: days }) : t('web.time.in_days', { n: days });
}

function relativeText(el) {
  const relative = relativeTime(Number(el.dataset.ts), Date.now(), el.dataset.expected === 'true');
  return t('web.time.with_relative', { time: el.dataset.short, relative });
}

// A server time shown as "11:54:18 (3 min ago)"; tickRelativeTimes keeps the
// relative part current without asking the server anything.
export function timeWithRelative(text, expected = false) {
  const ms = parseTime(text);
  if (ms === null) return h('span', { text: shortTime(text) });
  const el = h('time', { class: 'rel-time', datetime: new Date(ms).toISOString(), title: text,
    dataset: { ts: String(ms), short: shortTime(text), expected: String(expected) } });
  el.textContent = relativeText(el);
  return el;
}

export function tickRelativeTimes(root = document) {
  for (const el of root.querySelectorAll('time.rel-time')) el.textContent = relativeText(el);
}

// 12.3 s; 3 min 20 s; 1 h 5 min. `precise` keeps the server's milliseconds.
export function formatDuration(seconds, precise = false) {
  if (seconds === undefined || seconds === null) return '—';
  if (seconds < 60) return t('web.duration.seconds', { s: precise ? String(seconds) : seconds.toFixed(1) });
  const total = Math.round(seconds);
  if (total < 3600) return t('web.duration.minutes', { m: Math.floor(total / 60), s: total % 60 });
  return t('web.duration.hours', { h: Math.floor(total / 3600), m: Math.floor((total % 3600) / 60) });
}

export function paramsSummary(params) {
  const entries = Object.entries(params || {});
  if (entries.length === 0) return t('web.params.none');
  return entries.map(([k, v]) => `${k}=${Array.isArray(v) ? v.join(',') : v}`).join('  ');
}

// A step of a sequence (or a fix-it command run while it is held) says so: it is not
// cancelled or retried on its own (the server answers 409 task_in_sequence).
export const inSequence = (task) => Boolean(task && task.sequence_id && !task.fixit);

function sequenceNote(task, seqName) {
  if (!task.sequence_id) return null;
  const name = seqName(task.sequence_id);
  return h('span', { class: 'seq-tag', dataset: { sequenceId: task.sequence_id },
    text: task.fixit ? t('web.seq.fixit_of', { name }) : t('web.seq.step_of', { step: task.step, name }) });
}

export function renderRobot(el, robot, mode) {
  el.replaceChildren();
  if (!robot) {
    el.append(h('span', { class: 'badge state-unknown', text: t('web.robot.unknown') }));
    return;
  }
  // Settling: a robot without reply ids must be quiet before the next command goes out.
  el.append(!robot.connected
    ? h('span', { class: 'badge state-bad', id: 'robot-state', text: t('web.robot.disconnected') })
    : robot.settling
      ? h('span', { class: 'badge state-unknown', id: 'robot-state', text: t('web.robot.settling') })
      : h('span', { class: 'badge state-ok', id: 'robot-state', text: t('web.robot.connected') }));
  const facts = [
    [t('web.robot.port'), robot.port, 'fact-port'],
    [t('web.robot.firmware'), robot.firmware, ''],
    [t('web.robot.mode'), mode ? (MODE_LABELS[mode] ? t(MODE_LABELS[mode]) : mode) : null, ''],
  ];
  for (const [label, value, cls] of facts) {
    // A long port name (/dev/serial/by-id/...) is cut with an ellipsis to keep the header
    // on one row; the whole name stays in the tooltip.
    if (value) el.append(h('span', { class: `fact ${cls}`.trim(), title: cls ? value : null }, h('span', { class: 'fact-label', text: `${label} ` }), h('span', { class: 'fact-value', text: value })));
  }
  if (robot.error) {
    const error = t('web.robot.error', { error: robot.error });
    el.append(h('span', { class: 'fact error-text', title: error, text: error }));
  }
}

export function renderConnection(el, status, info) {
  const labels = {
    connecting: ['state-unknown', () => t('web.conn.connecting')],
    live: ['state-ok', () => t('web.conn.live')],
    reconnecting: ['state-bad', () => t('web.conn.offline', { seconds: Math.ceil((info.delay || 0) / 1000) })],
  };
  const [cls, text] = labels[status] || ['state-unknown', () => status];
  el.className = `conn ${cls}`;
  el.textContent = text();
  el.title = info.reason || '';
}

// Column heads for the item fields our codecs and simulator send; a lab robot's own
// fields keep their JSON names. The data keys themselves never change.
const ITEM_LABELS = { position: 'web.item.position', code: 'web.item.code', rack: 'web.item.rack' };

function itemCell(value) {
  if (value === undefined) return '';
  if (value === null) return t('web.item.none'); // an empty slot: no bottle, no code
  return typeof value === 'object' ? JSON.stringify(value) : String(value);
}

function itemsTable(items) {
  const columns = [];
  for (const item of items) {
    for (const key of Object.keys(item)) if (!columns.includes(key)) columns.push(key);
  }
  return h('table', { class: 'items', id: 'running-items' },
    h('thead', {}, h('tr', {}, columns.map((c) => h('th', { 'data-key': c, text: ITEM_LABELS[c] ? t(ITEM_LABELS[c]) : c })))),
    h('tbody', {}, items.map((item) => h('tr', {},
      columns.map((c) => h('td', { text: itemCell(item[c]) }))))));
}

export function renderRunning(el, task, { onCancel, seqName }) {
  el.replaceChildren();
  if (!task) {
    el.append(h('p', { class: 'empty', text: t('web.running.none') }));
    return;
  }
  const p = task.progress || {};
  const total = Number(p.total) || 0;
  const done = Number(p.done) || 0;
  const percent = p.percent !== undefined ? p.percent : (total ? (100 * done) / total : 0);
  const progress = h('progress', { id: 'running-progress', max: total || 1, value: total ? done : 0 });
  progress.setAttribute('aria-label', t('web.running.progress_label'));
  el.append(
    h('div', { class: 'running-head', dataset: { taskId: task.task_id } },
      statusBadge('running'),
      h('strong', { text: task.cmd_type }),
      h('code', { text: task.task_id }),
      h('button', { type: 'button', class: 'secondary', onclick: () => onCancel(task),
        text: inSequence(task) ? t('web.seq.cancel') : t('web.action.cancel') })),
    sequenceNote(task, seqName) || '', // append() would write a null as "null"
    h('p', { class: 'params', text: paramsSummary(task.params) }),
    progress,
    h('p', { class: 'progress-text', id: 'running-progress-text' },
      total ? t('web.running.progress', { done, total, percent: Math.round(percent) }) : t('web.running.no_progress'),
      p.message ? ` — ${p.message}` : ''),
    h('p', { class: 'times' },
      t('web.running.started'), ' ', timeWithRelative(task.start_time), ' · ', t('web.running.eta'), ' ',
      task.estimated_end_time ? timeWithRelative(task.estimated_end_time, true) : t('web.running.eta_unknown')),
  );
  if (Array.isArray(p.items) && p.items.length) el.append(itemsTable(p.items));
}

// The steps of one sequence wait as one item (they take one place in the queue); its
// Cancel cancels the sequence.
function pendingGroups(tasks) {
  const groups = [];
  tasks.forEach((task, i) => {
    const last = groups[groups.length - 1];
    if (inSequence(task) && last && last.sequenceId === task.sequence_id) last.tasks.push(task);
    else groups.push({ position: i + 1, sequenceId: inSequence(task) ? task.sequence_id : null, tasks: [task] });
  });
  return groups;
}

const stepsSummary = (group) => group.slice(0, 6).map((g) => g.cmd_type).join(' · ') + (group.length > 6 ? ' …' : '');

// `decorate(items, groups)` adds to the drawn rows (queueops.js: reorder, why it waits).
export function renderPending(list, empty, count, tasks, { onCancel, seqName, decorate }) {
  const groups = pendingGroups(tasks);
  list.replaceChildren(...groups.map(({ position, sequenceId, tasks: group }) => {
    const task = group[0];
    const head = sequenceId
      ? h('div', {}, statusBadge('pending'), ' ', h('strong', { text: t('web.seq.pending_group', { name: seqName(sequenceId), n: group.length }) }))
      : h('div', {}, statusBadge('pending'), ' ', h('strong', { text: task.cmd_type }), ' ', h('code', { text: task.task_id }));
    return h('li', { class: sequenceId ? 'pending-item pending-seq' : 'pending-item',
      dataset: sequenceId ? { sequenceId } : { taskId: task.task_id } },
    h('span', { class: 'position', text: `#${position}` }),
    h('div', { class: 'pending-main' },
      head,
      h('div', { class: 'params', text: sequenceId ? stepsSummary(group) : paramsSummary(task.params) }),
      h('div', { class: 'times' },
        t('web.pending.submitted'), ' ', h('span', { text: shortTime(task.submit_time) }), ' · ', t('web.pending.est_start'), ' ',
        h('span', { class: 'eta' },
          task.estimated_start_time ? timeWithRelative(task.estimated_start_time, true) : t('web.pending.est_unknown')))),
    h('button', { type: 'button', class: 'secondary cancel', onclick: () => onCancel(task),
      text: sequenceId ? t('web.seq.cancel') : t('web.action.cancel') }));
  }));
  if (decorate) decorate(list.children, groups);
  empty.hidden = tasks.length > 0;
  count.textContent = String(tasks.length);
}

export function renderHistory(tbody, tasks, { onOpen, onRetry, seqName }) {
  tbody.replaceChildren(...tasks.map((task) => h('tr', { dataset: { taskId: task.task_id } },
    h('td', {}, statusBadge(task.status)),
    h('td', {}, task.cmd_type, sequenceNote(task, seqName)),
    h('td', {}, h('code', { text: task.task_id })),
    h('td', { text: shortTime(task.submit_time) }),
    h('td', { class: 'ended' }, task.end_time ? timeWithRelative(task.end_time) : '—'),
    h('td', { text: formatDuration(task.duration_s) }),
    h('td', { class: 'row-actions' },
      h('button', { type: 'button', class: 'secondary details', onclick: () => onOpen(task.task_id), text: t('web.history.details') }),
      ['failed', 'cancelled'].includes(task.status) && !inSequence(task)
        ? h('button', { type: 'button', class: 'secondary retry', onclick: () => onRetry(task.task_id), text: t('web.action.retry') })
        : null))));
  if (tasks.length === 0) {
    tbody.append(h('tr', {}, h('td', { colspan: 7, class: 'empty', text: t('web.history.empty') })));
  }
}

export function renderDetail(el, task, { onClose, onRetry, onTranscript }) {
  el.replaceChildren();
  el.hidden = !task;
  if (!task) return;
  const times = [
    [t('web.detail.submitted'), task.submit_time], [t('web.detail.started'), task.start_time],
    [t('web.detail.ended'), task.end_time],
    [t('web.detail.duration'), task.duration_s !== undefined && task.duration_s !== null
      ? formatDuration(task.duration_s, true) : null],
    [t('web.detail.retry_of'), task.retry_of],
    [t('web.detail.sequence'), !task.sequence_id ? null : task.fixit
      ? t('web.detail.sequence_fixit', { sequence_id: task.sequence_id })
      : t('web.detail.sequence_step', { sequence_id: task.sequence_id, step: task.step })],
  ];
  const transcript = h('a', { href: `/task/${encodeURIComponent(task.task_id)}/transcript`, class: 'transcript-link', text: t('web.detail.transcript') });
  // The token cannot go in a URL, so the page fetches the transcript itself.
  transcript.addEventListener('click', (ev) => { ev.preventDefault(); onTranscript(task.task_id); });
  el.append(
    h('div', { class: 'detail-head' },
      h('h3', {}, t('web.detail.task'), ' ', h('code', { text: task.task_id })),
      statusBadge(task.status),
      h('button', { type: 'button', class: 'link-button', onclick: onClose, text: t('web.detail.close') })),
    h('dl', { class: 'facts' }, times.filter(([, v]) => v).flatMap(([k, v]) => [h('dt', { text: k }), h('dd', { text: v })])),
    h('h4', { text: t('web.detail.command') }),
    h('pre', { class: 'json', text: JSON.stringify({ cmd_type: task.cmd_type, params: task.params || {} }, null, 2) }),
    h('h4', { text: t('web.detail.result') }),
    h('pre', { class: 'json', id: 'detail-result', text: task.result ? JSON.stringify(task.result, null, 2) : t('web.detail.not_finished') }),
    h('div', { class: 'actions' },
      transcript,
      ['failed', 'cancelled'].includes(task.status) && !inSequence(task)
        ? h('button', { type: 'button', onclick: () => onRetry(task.task_id), text: t('web.detail.retry') })
        : null),
    h('pre', { class: 'json transcript', id: 'detail-transcript', hidden: true }),
  );
}

const TRANSCRIPT_DIR = { tx: 'web.transcript.tx', rx: 'web.transcript.rx', note: 'web.transcript.note' };

function transcriptTime(time) {
  if (typeof time !== 'number') return String(time);
  const d = new Date(time * 1000);
  return `${d.toLocaleTimeString([], { hour12: false })}.${String(d.getMilliseconds()).padStart(3, '0')}`;
}

export function renderTranscript(el, doc) {
  const pre = el.querySelector('#detail-transcript');
  if (!pre) return;
  const lines = doc.transcript || [];
  pre.textContent = lines.length
    ? lines.map((l) => `${transcriptTime(l.t)}  ${TRANSCRIPT_DIR[l.dir] ? t(TRANSCRIPT_DIR[l.dir]) : l.dir} ${l.line}`).join('\n')
    : t('web.transcript.empty');
  pre.hidden = false;
}
