// The dashboard: state kept from GET /events (no polling), reloaded from the
// REST API whenever the stream (re)connects or says events were missed. The one
// exception is GET /health, asked on a timer: whether the task database can be
// written is not an event (nothing happens when a disk fills up while idle).

import { api, get, ApiError, EventStream } from './api.js';
import { startAuth, relabelAuth, showAttribution, pausedByText } from './auth.js';
import { t, initLanguage, setLanguage, onLanguageChange } from './i18n.js';
import {
  renderRobot, renderConnection, renderRunning, renderPending, renderHistory,
  renderDetail, renderTranscript, tickRelativeTimes, inSequence, debounce,
} from './views.js';
import { CommandForm } from './form.js';
import { SequencePanel, cancelTarget } from './sequences.js';
import { SequenceBuilder } from './seqform.js';
import { startWebhooks, webhookEvent } from './webhooks.js';
import { showIdentity } from './identity.js';
import { QueueOps, queueOrder } from './queueops.js';
import { mergeProgress, adoptItems, gapFiller } from './progress.js';

const $ = (sel) => document.querySelector(sel);
const RANK = { pending: 0, running: 1, completed: 2, failed: 2, cancelled: 2 };
const HISTORY_PAGE = 10;
const ETA_LOOKUPS = 10; // only the next few pending tasks get their estimated start
const RELATIVE_TICK_MS = 20000; // "3 min ago" moves on without asking the server
const HEALTH_MS = 10000; // the server probes its database at most every 5 s

const state = {
  mode: null,
  robot: null,
  paused: false,
  pauseReason: null,
  pausedBy: null, // who paused it (null: the server itself, e.g. a held sequence)
  running: null, // task document
  pending: [], // task documents in queue order
  // Highest status seen per task: events replayed after a reconnect are older
  // than the reloaded state and must not move a task backwards.
  rank: new Map(),
  history: { status: '', cursors: [null], page: 0, total: 0, nextCursor: null, tasks: [], count: 0 },
  detail: null,
  conn: ['connecting', {}], // the stream's last status, re-rendered on a language switch
  store: null, // GET /health's {writable, error}; null until first asked
};

let form = null;
let builder = null;
// onNew: a sequence not seen before; no task events announced its pending steps.
const seqs = new SequencePanel($('#sequences-panel'), { onError: failed, onOpenTask: openDetail, onNew: () => reload(null) });
const seqName = (id) => seqs.nameOf(id);
const ops = new QueueOps({ state, seqs, onError: failed, render: () => { renderAll(); refreshEtas(); } });
let reloading = false;
let reloadAgain = false;
let buffered = [];

// -- small helpers ---------------------------------------------------------------------
function notice(text, kind = 'info') {
  const el = $('#notice');
  el.textContent = text;
  el.className = `notice notice-${kind}`;
  el.hidden = !text;
}

function failed(err) {
  if (err && err.dropped) return; // the operator went back from the reason prompt
  notice(err instanceof ApiError ? err.message : t('web.error.request_failed', { reason: err.message || err }), 'error');
}

const setQueue = (q) => { Object.assign(state, { paused: q.paused, pauseReason: q.pause_reason, pausedBy: q.paused_by || null }); ops.setMode(q); };

function seen(task) {
  const r = RANK[task.status] ?? 0;
  const known = state.rank.get(task.task_id) ?? -1;
  if (r < known) return false;
  state.rank.set(task.task_id, r);
  return true;
}

// -- rendering ------------------------------------------------------------------------
function renderQueueState() {
  $('#banner').hidden = !state.paused;
  $('#banner-reason').textContent = state.paused
    ? t('web.banner.reason', { reason: state.pauseReason || t('web.banner.no_reason') }) : '';
  $('#banner-by').textContent = state.paused ? pausedByText(state.pausedBy) : '';
  const btn = $('#pause-btn');
  btn.textContent = state.paused ? t('web.queue.resume') : t('web.queue.pause');
  btn.dataset.paused = String(state.paused);
}

// Persistent, unlike #notice: it stays until /health says the database takes writes.
function renderStoreAlert() {
  const down = Boolean(state.store && state.store.writable === false);
  $('#store-alert').hidden = !down;
  $('#store-reason').textContent = down
    ? t('web.store.reason', { reason: state.store.error || t('web.store.unknown_reason') }) : '';
}

function renderAll() {
  renderRobot($('#robot'), state.robot, state.mode);
  renderQueueState();
  renderStoreAlert();
  renderRunning($('#running'), state.running, { onCancel: cancelTask, seqName });
  renderPending($('#pending'), $('#pending-empty'), $('#pending-count'), state.pending, { onCancel: cancelTask, seqName, decorate: ops.decorate });
}

function renderDetailPanel() {
  renderDetail($('#detail'), state.detail, {
    onClose: () => { state.detail = null; renderDetailPanel(); },
    onRetry: retryTask,
    onTranscript: showTranscript,
  });
  showAttribution($('#detail'), state.detail);
}

// -- loading state --------------------------------------------------------------------
async function reload(snapshot) {
  if (reloading) { reloadAgain = true; return; }
  reloading = true;
  try {
    let snap = snapshot;
    if (!snap) {
      const [queue, robot] = await Promise.all([get('/queue/status'), get('/robot')]);
      snap = { queue, robot, mode: state.mode };
    }
    const runningId = snap.queue.running_task;
    const [running, pending] = await Promise.all([
      runningId ? get(`/task/${encodeURIComponent(runningId)}`).catch(() => null) : null,
      get('/tasks?status=pending&limit=500'),
    ]);
    state.robot = snap.robot;
    state.mode = snap.mode || state.mode;
    setQueue(snap.queue);
    state.running = running && running.status === 'running' ? running : null;
    if (state.running) seen(state.running);
    state.pending = queueOrder(pending.tasks, snap.queue.pending); // newest first -> queue order
    state.pending.forEach(seen);
  } catch (err) {
    failed(err);
  } finally {
    reloading = false;
  }
  const events = buffered;
  buffered = [];
  renderAll();
  events.forEach(([type, data]) => apply(type, data));
  refreshEtas();
  loadHistory();
  seqs.load().then(() => { renderAll(); renderHistoryPage(); }); // the step tags name their sequence
  if (state.detail) openDetail(state.detail.task_id);
  if (reloadAgain) { reloadAgain = false; reload(null); }
}

// Estimated start times move whenever anything ahead finishes; the list
// endpoint has no ETAs, so ask for the next few tasks after each change.
const refreshEtas = debounce(async () => {
  const ids = state.pending.slice(0, ETA_LOOKUPS).map((t) => t.task_id);
  if (state.running) ids.push(state.running.task_id);
  const docs = await Promise.all(ids.map((id) => get(`/task/${encodeURIComponent(id)}`).catch(() => null)));
  for (const doc of docs) {
    if (!doc) continue;
    if (doc.status === 'pending') {
      const i = state.pending.findIndex((t) => t.task_id === doc.task_id);
      if (i >= 0) state.pending[i] = { ...state.pending[i], estimated_start_time: doc.estimated_start_time };
    } else if (doc.status === 'running' && state.running && state.running.task_id === doc.task_id) {
      state.running.estimated_end_time = doc.estimated_end_time;
    }
  }
  renderAll();
}, 300);

async function loadHistory() {
  const hs = state.history;
  const params = new URLSearchParams({ limit: String(HISTORY_PAGE) });
  if (hs.status) params.set('status', hs.status);
  const cursor = hs.cursors[hs.page];
  if (cursor) params.set('cursor', cursor);
  try {
    const page = await get(`/tasks?${params}`);
    Object.assign(hs, { total: page.total, nextCursor: page.next_cursor, tasks: page.tasks, count: page.count });
    renderHistoryPage();
  } catch (err) {
    failed(err);
  }
}

function renderHistoryPage() {
  const hs = state.history;
  renderHistory($('#history'), hs.tasks, { onOpen: openDetail, onRetry: retryTask, seqName });
  const first = hs.page * HISTORY_PAGE + (hs.count ? 1 : 0);
  $('#page-info').textContent = t('web.history.page_info', {
    first, last: hs.page * HISTORY_PAGE + hs.count, total: hs.total,
  });
  $('#page-newer').disabled = hs.page === 0;
  $('#page-older').disabled = !hs.nextCursor;
}

// Later pages stay put while the operator reads them; page one follows live.
const historyChanged = debounce(() => { if (state.history.page === 0) loadHistory(); }, 250);

// A 503 is an answer here (the body says why): only an unreachable server keeps the
// last known state, which the connection badge already marks as stale.
async function loadHealth() {
  let health = null;
  try {
    health = showIdentity(await get('/health'));
  } catch (err) {
    if (err instanceof ApiError && err.body && err.body.store) health = showIdentity(err.body);
  }
  if (!health || !health.store) return;
  state.store = health.store;
  renderStoreAlert();
}

// -- events ---------------------------------------------------------------------------
function applyTask(doc) {
  if (!doc || !doc.task_id || !seen(doc)) return;
  const id = doc.task_id;
  const i = state.pending.findIndex((t) => t.task_id === id);
  if (doc.status === 'pending') {
    if (i >= 0) state.pending[i] = { ...state.pending[i], ...doc };
    else state.pending.push(doc);
  } else if (i >= 0) {
    state.pending.splice(i, 1);
  }
  if (doc.status === 'running') {
    const keep = state.running && state.running.task_id === id ? state.running : {};
    state.running = { ...keep, ...doc, progress: doc.progress || keep.progress };
  } else if (state.running && state.running.task_id === id) {
    state.running = null;
  }
  if (state.detail && state.detail.task_id === id) {
    state.detail = { ...state.detail, ...doc };
    renderDetailPanel();
  }
  seqs.taskChanged(doc);
  renderAll();
  refreshEtas();
  ops.refresh(); // who waits for whom changed
  historyChanged();
}

// GET /task for the items a progress event left out (server/static/progress.js).
const fillGap = gapFiller((id) => get(`/task/${encodeURIComponent(id)}`), (id, doc) => {
  if (doc.status !== 'running') applyTask(doc);
  else if (adoptItems(state.running, doc)) renderRunning($('#running'), state.running, { onCancel: cancelTask, seqName });
});

function applyProgress({ task_id: id, progress }) {
  if (state.running && state.running.task_id === id) {
    if (!mergeProgress(state.running, progress)) fillGap(id);
    renderRunning($('#running'), state.running, { onCancel: cancelTask, seqName });
  } else if ((state.rank.get(id) ?? -1) < 2) {
    // We missed its start: fetch the document rather than guess.
    get(`/task/${encodeURIComponent(id)}`).then(applyTask).catch(() => {});
  }
}

function apply(type, data) {
  switch (type) {
    case 'task': applyTask(data); break;
    case 'sequence': seqs.apply(data); renderAll(); ops.refresh(); break;
    case 'progress': applyProgress(data); break;
    case 'queue': setQueue(data); renderQueueState(); ops.refresh(); break;
    case 'robot':
      get('/robot').then((robot) => { state.robot = robot; renderAll(); ops.refresh(); }).catch(() => {});
      break;
    case 'reset': reload(null); break;
    default: break;
  }
}

function onEvent(type, data) {
  webhookEvent(type, data); // the Webhooks page and its banner follow the stream on their own
  if (type === 'snapshot') { reload(data); return; }
  if (reloading) { buffered.push([type, data]); return; }
  apply(type, data);
}

// -- operator actions -----------------------------------------------------------------
async function cancelTask(task) {
  try {
    const { data } = await api('POST', cancelTarget(task));
    if (data.message) notice(t('web.notice.task_message', { task_id: inSequence(task) ? task.sequence_id : task.task_id, message: data.message }));
  } catch (err) { failed(err); }
}

async function retryTask(id) {
  try {
    const { data } = await api('POST', `/task/${encodeURIComponent(id)}/retry`);
    notice(t('web.notice.retrying', { task_id: id, new_id: data.task_id })
      + (data.warning ? t('web.common.warning_suffix', { warning: data.warning }) : ''));
  } catch (err) { failed(err); }
}

async function openDetail(id) {
  try {
    state.detail = await get(`/task/${encodeURIComponent(id)}`);
    renderDetailPanel();
  } catch (err) { failed(err); }
}

async function showTranscript(id) {
  try {
    renderTranscript($('#detail'), await get(`/task/${encodeURIComponent(id)}/transcript`));
  } catch (err) { failed(err); }
}

async function togglePause() {
  try {
    const { data } = await api('POST', state.paused ? '/queue/resume' : '/queue/pause');
    setQueue(data);
    renderQueueState();
  } catch (err) { failed(err); }
}

// No confirmation on purpose: the button exists for the moment there is no time.
async function emergencyStop() {
  try {
    const { data } = await api('POST', '/robot/stop');
    notice(data.message, data.success ? 'warn' : 'error');
  } catch (err) { failed(err); }
}

// No form until the command list has loaded (the notice says why).
const submit = (validateOnly) => form && form.send(validateOnly);

// -- start ----------------------------------------------------------------------------
function wire() {
  for (const btn of document.querySelectorAll('[data-lang]')) {
    btn.addEventListener('click', () => setLanguage(btn.dataset.lang));
  }
  for (const id of ['#pause-btn', '#banner-resume']) $(id).addEventListener('click', togglePause);
  $('#estop-btn').addEventListener('click', emergencyStop);
  $('#submit-form').addEventListener('submit', (ev) => { ev.preventDefault(); submit(false); });
  $('#validate-btn').addEventListener('click', () => submit(true));
  $('#history-status').addEventListener('change', (ev) => {
    Object.assign(state.history, { status: ev.target.value, cursors: [null], page: 0 });
    loadHistory();
  });
  $('#page-older').addEventListener('click', () => {
    const hs = state.history;
    if (!hs.nextCursor) return;
    hs.cursors[++hs.page] = hs.nextCursor;
    loadHistory();
  });
  $('#page-newer').addEventListener('click', () => {
    if (state.history.page === 0) return;
    state.history.page -= 1;
    loadHistory();
  });
}

// A language switch re-renders from the state in memory; only the command list
// is asked again, because its descriptions come from the server in that language.
async function relabel() {
  renderAll();
  seqs.render();
  if (builder) builder.render();
  renderConnection($('#conn'), ...state.conn);
  renderHistoryPage();
  renderDetailPanel();
  relabelAuth();
  await loadCommands();
}

let commandsAsked = 0;
async function loadCommands() {
  const asked = ++commandsAsked;
  try {
    const { commands } = await get('/commands');
    if (asked !== commandsAsked) return; // a newer answer (the other language) wins
    if (form) form.relabel(commands);
    else {
      form = new CommandForm($('#submit-form'), commands);
      builder = new SequenceBuilder($('#seq-builder'), form);
    }
  } catch (err) { failed(err); }
}

async function main() {
  await initLanguage(); // before the first render: nothing shows in the wrong language
  onLanguageChange(relabel);
  // Whose task or sequence a button acts on (auth.js greys out what the role may not do).
  const find = ({ taskId, sequenceId }) => (sequenceId ? seqs.summaries.get(sequenceId)
    : [state.running, state.detail, ...state.pending, ...state.history.tasks].find((d) => d && d.task_id === taskId));
  startAuth({ find, onError: failed }).then(() => startWebhooks({ onError: failed }));
  wire();
  renderQueueState();
  renderConnection($('#conn'), ...state.conn);
  setInterval(() => tickRelativeTimes(), RELATIVE_TICK_MS);
  setInterval(loadHealth, HEALTH_MS);
  loadHealth();
  new EventStream('/events', {
    onEvent,
    onStatus: (status, info) => {
      state.conn = [status, info];
      renderConnection($('#conn'), status, info);
      if (status === 'live') loadHealth(); // (re)connected: the server may have changed
      // The server refused the page (host name, client address): say why, visibly.
      if (info.refused) notice(info.reason, 'error');
    },
  }).start();
  await loadCommands();
}

main();
