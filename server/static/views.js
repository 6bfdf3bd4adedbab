// DOM rendering. Everything goes through textContent (never innerHTML) because
// task params, results and robot messages are data from outside the page.

const STATUS_LABELS = {
  pending: 'Pending',
  running: 'Running',
  completed: 'Completed',
  failed: 'Failed',
  cancelled: 'Cancelled',
};

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

// Colour is never the only signal: every badge carries its word.
export function statusBadge(status) {
  return h('span', { class: `badge status-${status}`, text: STATUS_LABELS[status] || status });
}

// "2026-11-28 11:54:18" -> "11:54:18" when it is today's date, else as is.
export function shortTime(text) {
  if (!text) return '—';
  const today = new Date();
  const pad = (n) => String(n).padStart(2, '0');
  const ymd = `${today.getFullYear()}-${pad(today.getMonth() + 1)}-${pad(today.getDate())}`;
  return text.startsWith(ymd) ? text.slice(11) : text;
}

export function paramsSummary(params) {
  const entries = Object.entries(params || {});
  if (entries.length === 0) return 'no parameters';
  return entries.map(([k, v]) => `${k}=${Array.isArray(v) ? v.join(',') : v}`).join('  ');
}

export function renderRobot(el, robot, mode) {
  el.replaceChildren();
  if (!robot) {
    el.append(h('span', { class: 'badge state-unknown', text: 'Robot: unknown' }));
    return;
  }
  el.append(robot.connected
    ? h('span', { class: 'badge state-ok', id: 'robot-state', text: 'Robot connected' })
    : h('span', { class: 'badge state-bad', id: 'robot-state', text: 'Robot disconnected' }));
  const facts = [
    ['Port', robot.port],
    ['Firmware', robot.firmware],
    ['Mode', mode ? `${mode}` : null],
  ];
  for (const [label, value] of facts) {
    if (value) el.append(h('span', { class: 'fact' }, h('span', { class: 'fact-label', text: `${label} ` }), h('span', { text: value })));
  }
  if (robot.error) el.append(h('span', { class: 'fact error-text', text: `Error: ${robot.error}` }));
}

export function renderConnection(el, status, info) {
  const labels = {
    connecting: ['state-unknown', 'Connecting…'],
    live: ['state-ok', 'Live'],
    reconnecting: ['state-bad', `Offline — retrying in ${Math.ceil((info.delay || 0) / 1000)} s`],
  };
  const [cls, text] = labels[status] || ['state-unknown', status];
  el.className = `conn ${cls}`;
  el.textContent = text;
  el.title = info.reason || '';
}

function itemsTable(items) {
  const columns = [];
  for (const item of items) {
    for (const key of Object.keys(item)) if (!columns.includes(key)) columns.push(key);
  }
  return h('table', { class: 'items', id: 'running-items' },
    h('thead', {}, h('tr', {}, columns.map((c) => h('th', { text: c })))),
    h('tbody', {}, items.map((item) => h('tr', {},
      columns.map((c) => h('td', { text: item[c] === undefined ? '' : String(item[c]) }))))));
}

export function renderRunning(el, task, { onCancel }) {
  el.replaceChildren();
  if (!task) {
    el.append(h('p', { class: 'empty', text: 'No task running.' }));
    return;
  }
  const p = task.progress || {};
  const total = Number(p.total) || 0;
  const done = Number(p.done) || 0;
  const percent = p.percent !== undefined ? p.percent : (total ? (100 * done) / total : 0);
  const progress = h('progress', { id: 'running-progress', max: total || 1, value: total ? done : 0 });
  progress.setAttribute('aria-label', 'Progress');
  el.append(
    h('div', { class: 'running-head', dataset: { taskId: task.task_id } },
      statusBadge('running'),
      h('strong', { text: task.cmd_type }),
      h('code', { text: task.task_id }),
      h('button', { type: 'button', class: 'secondary', onclick: () => onCancel(task) , text: 'Cancel' })),
    h('p', { class: 'params', text: paramsSummary(task.params) }),
    progress,
    h('p', { class: 'progress-text', id: 'running-progress-text' },
      total ? `${done} / ${total} (${Math.round(percent)}%)` : 'Started, no progress reported yet',
      p.message ? ` — ${p.message}` : ''),
    h('p', { class: 'times' },
      `Started ${shortTime(task.start_time)}`,
      ` · ETA ${task.estimated_end_time ? shortTime(task.estimated_end_time) : 'unknown (no history yet)'}`),
  );
  if (Array.isArray(p.items) && p.items.length) el.append(itemsTable(p.items));
}

export function renderPending(list, empty, count, tasks, { onCancel }) {
  list.replaceChildren(...tasks.map((task, i) => h('li', { class: 'pending-item', dataset: { taskId: task.task_id } },
    h('span', { class: 'position', text: `#${i + 1}` }),
    h('div', { class: 'pending-main' },
      h('div', {}, statusBadge('pending'), ' ', h('strong', { text: task.cmd_type }), ' ', h('code', { text: task.task_id })),
      h('div', { class: 'params', text: paramsSummary(task.params) }),
      h('div', { class: 'times' },
        `Submitted ${shortTime(task.submit_time)} · est. start `,
        h('span', { class: 'eta', text: task.estimated_start_time ? shortTime(task.estimated_start_time) : 'unknown' }))),
    h('button', { type: 'button', class: 'secondary cancel', onclick: () => onCancel(task), text: 'Cancel' }))));
  empty.hidden = tasks.length > 0;
  count.textContent = String(tasks.length);
}

export function renderHistory(tbody, tasks, { onOpen, onRetry }) {
  tbody.replaceChildren(...tasks.map((task) => h('tr', { dataset: { taskId: task.task_id } },
    h('td', {}, statusBadge(task.status)),
    h('td', { text: task.cmd_type }),
    h('td', {}, h('code', { text: task.task_id })),
    h('td', { text: shortTime(task.submit_time) }),
    h('td', { text: shortTime(task.end_time) }),
    h('td', { text: task.duration_s !== undefined && task.duration_s !== null ? `${task.duration_s.toFixed(1)} s` : '—' }),
    h('td', { class: 'row-actions' },
      h('button', { type: 'button', class: 'secondary details', onclick: () => onOpen(task.task_id), text: 'Details' }),
      ['failed', 'cancelled'].includes(task.status)
        ? h('button', { type: 'button', class: 'secondary retry', onclick: () => onRetry(task.task_id), text: 'Retry' })
        : null))));
  if (tasks.length === 0) {
    tbody.append(h('tr', {}, h('td', { colspan: 7, class: 'empty', text: 'No tasks.' })));
  }
}

export function renderDetail(el, task, { onClose, onRetry, onTranscript }) {
  el.replaceChildren();
  el.hidden = !task;
  if (!task) return;
  const times = [
    ['Submitted', task.submit_time], ['Started', task.start_time], ['Ended', task.end_time],
    ['Duration', task.duration_s !== undefined && task.duration_s !== null ? `${task.duration_s} s` : null],
    ['Retry of', task.retry_of],
  ];
  const transcript = h('a', { href: `/task/${encodeURIComponent(task.task_id)}/transcript`, class: 'transcript-link', text: 'Transcript' });
  // The token cannot go in a URL, so the page fetches the transcript itself.
  transcript.addEventListener('click', (ev) => { ev.preventDefault(); onTranscript(task.task_id); });
  el.append(
    h('div', { class: 'detail-head' },
      h('h3', {}, 'Task ', h('code', { text: task.task_id })),
      statusBadge(task.status),
      h('button', { type: 'button', class: 'link-button', onclick: onClose, text: 'Close' })),
    h('dl', { class: 'facts' }, times.filter(([, v]) => v).flatMap(([k, v]) => [h('dt', { text: k }), h('dd', { text: v })])),
    h('h4', { text: 'Command' }),
    h('pre', { class: 'json', text: JSON.stringify({ cmd_type: task.cmd_type, params: task.params || {} }, null, 2) }),
    h('h4', { text: 'Result' }),
    h('pre', { class: 'json', id: 'detail-result', text: task.result ? JSON.stringify(task.result, null, 2) : 'not finished yet' }),
    h('div', { class: 'actions' },
      transcript,
      ['failed', 'cancelled'].includes(task.status)
        ? h('button', { type: 'button', onclick: () => onRetry(task.task_id), text: 'Retry this task' })
        : null),
    h('pre', { class: 'json transcript', id: 'detail-transcript', hidden: true }),
  );
}

const TRANSCRIPT_DIR = { tx: '→ robot', rx: '← robot', note: '· note ' };

function transcriptTime(t) {
  if (typeof t !== 'number') return String(t);
  const d = new Date(t * 1000);
  return `${d.toLocaleTimeString([], { hour12: false })}.${String(d.getMilliseconds()).padStart(3, '0')}`;
}

export function renderTranscript(el, doc) {
  const pre = el.querySelector('#detail-transcript');
  if (!pre) return;
  const lines = doc.transcript || [];
  pre.textContent = lines.length
    ? lines.map((l) => `${transcriptTime(l.t)}  ${TRANSCRIPT_DIR[l.dir] || l.dir} ${l.line}`).join('\n')
    : 'No lines were exchanged with the robot for this task.';
  pre.hidden = false;
}
