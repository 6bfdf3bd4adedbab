// Every request to the server goes through this module, so the API token is
// handled in one place: kept in localStorage, sent only as an Authorization
// header (never in a URL or cookie), asked for once when the server says 401.
// Every request also says which language the operator chose (Accept-Language),
// so the server's messages and command descriptions come back in it. A change
// may carry a reason (X-Reason, for the audit trail): asked for through the hook
// auth.js sets, before sending where it is known to be needed, and after a 400
// `reason_required` otherwise.

import { getLang, t } from './i18n.js';

const TOKEN_KEY = 'robot-task-server.token';
const STALL_MS = 40000; // the server sends a keep-alive every 15 s
const MAX_BACKOFF_MS = 30000;

let askToken = async () => { throw new Error('no way to ask for a token'); };
let pendingPrompt = null; // one dialog shared by every request that got 401
// (method, path, required) -> the reason text, '' or undefined for none, null when
// the operator dropped the action (see auth.js).
let askReason = async () => undefined;

export function onTokenNeeded(fn) { askToken = fn; }
export function onReasonWanted(fn) { askReason = fn; }

// Kept in memory too: where storage is refused the token lasts until reload.
let memoryToken = null;

export function getToken() {
  try { return localStorage.getItem(TOKEN_KEY) ?? memoryToken; } catch { return memoryToken; }
}

function setToken(token) {
  memoryToken = token;
  try { localStorage.setItem(TOKEN_KEY, token); } catch { /* storage refused */ }
}

export function forgetToken() {
  memoryToken = null;
  try { localStorage.removeItem(TOKEN_KEY); } catch { /* storage refused */ }
}

// `used` is the token the failed request carried: if another request has
// already obtained a newer one, retry with that instead of asking again.
async function tokenAfter401(used) {
  if (getToken() !== used) return;
  if (!pendingPrompt) {
    pendingPrompt = askToken(Boolean(used))
      .then(setToken)
      .finally(() => { pendingPrompt = null; });
  }
  await pendingPrompt;
}

// X-Requested-With makes every request one a browser sends cross-site only after
// a CORS preflight, which the server refuses to foreign sites: so the server can
// tell this page's requests, even through a reverse proxy that renames the host,
// from a foreign page's form posts (server/guard/crosssite.py).
function authHeaders(extra) {
  const headers = { 'Accept-Language': getLang(), 'X-Requested-With': 'robot-dashboard', ...extra };
  const token = getToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  return { headers, token };
}

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || t('web.error.http', { status }));
    this.status = status;
    this.body = body;
    this.field = body && body.field;
  }
}

// The operator closed a reason prompt: the action was not sent (nothing to report).
export class Dropped extends Error {
  constructor() { super('dropped'); this.dropped = true; }
}

export async function api(method, path, body) {
  const change = method !== 'GET';
  let reason = change ? await askReason(method, path, false) : undefined;
  let askedAgain = false;
  for (;;) {
    if (reason === null) throw new Dropped();
    const { headers, token } = authHeaders({ Accept: 'application/json' });
    if (reason) headers['X-Reason'] = encodeURIComponent(reason);
    const init = { method, headers, cache: 'no-store' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const resp = await fetch(path, init);
    if (resp.status === 401) {
      await tokenAfter401(token);
      continue;
    }
    const data = await resp.json().catch(() => null);
    if (resp.status === 400 && change && !askedAgain && data && data.code === 'reason_required') {
      askedAgain = true;
      reason = await askReason(method, path, true);
      continue;
    }
    if (!resp.ok) throw new ApiError(resp.status, data);
    return { status: resp.status, data };
  }
}

// A token typed into the sign-in box, tried on GET /me before it is kept:
// the status (0: no answer) and the body.
export async function probeToken(token) {
  const headers = { Accept: 'application/json', 'Accept-Language': getLang(),
    'X-Requested-With': 'robot-dashboard', Authorization: `Bearer ${token}` };
  try {
    const resp = await fetch('/me', { headers, cache: 'no-store' });
    return { status: resp.status, data: await resp.json().catch(() => null) };
  } catch (err) {
    return { status: 0, data: { message: err.message || String(err) } };
  }
}

// A file the API serves (GET /audit.csv): fetched with the token, handed over as a Blob.
export async function download(path) {
  for (;;) {
    const { headers, token } = authHeaders({});
    const resp = await fetch(path, { headers, cache: 'no-store' });
    if (resp.status === 401) {
      await tokenAfter401(token);
      continue;
    }
    if (!resp.ok) throw new ApiError(resp.status, await resp.json().catch(() => null));
    return resp.blob();
  }
}

export const get = (path) => api('GET', path).then((r) => r.data);

// Server-Sent Events over fetch(): EventSource cannot send the Authorization
// header. Parses id/event/data/retry per the SSE spec, resumes with
// Last-Event-ID and backs off exponentially while the server is unreachable.
export class EventStream {
  constructor(path, { onEvent, onStatus }) {
    this.path = path;
    this.onEvent = onEvent;
    this.onStatus = onStatus;
    this.lastId = null;
    this.retryMs = 2000;
    this.failures = 0;
  }

  start() { this.run(); }

  async run() {
    for (;;) {
      let reason = t('web.conn.lost');
      let refused = false;
      try {
        reason = await this.connectOnce();
      } catch (err) {
        reason = err && err.message ? err.message : String(err);
        refused = Boolean(err && err.refused);
      }
      if (reason === 'auth') continue; // a token was just entered: retry at once
      this.failures += 1;
      const delay = Math.min(this.retryMs * 2 ** (this.failures - 1), MAX_BACKOFF_MS);
      const jittered = Math.round(delay * (0.8 + Math.random() * 0.4));
      this.onStatus('reconnecting', { delay: jittered, reason, refused });
      await new Promise((resolve) => { setTimeout(resolve, jittered); });
    }
  }

  async connectOnce() {
    this.onStatus('connecting', {});
    const extra = { Accept: 'text/event-stream' };
    if (this.lastId !== null) extra['Last-Event-ID'] = this.lastId;
    const { headers, token } = authHeaders(extra);
    const ctrl = new AbortController();
    let watchdog = null;
    // A half-open TCP connection never errors: abort when even keep-alives stop.
    const kick = () => {
      clearTimeout(watchdog);
      watchdog = setTimeout(() => ctrl.abort(), STALL_MS);
    };
    try {
      kick();
      const resp = await fetch(this.path, { headers, signal: ctrl.signal, cache: 'no-store' });
      if (resp.status === 401) {
        await tokenAfter401(token);
        return 'auth';
      }
      if (!resp.ok || !resp.body) {
        // A refusal (wrong host name, address not allowed...) says what to configure.
        const data = await resp.json().catch(() => null);
        const err = new Error((data && data.message) || t('web.error.http', { status: resp.status }));
        err.refused = resp.status >= 400 && resp.status < 500;
        throw err;
      }
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      let event = { type: '', data: [], id: null };
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return t('web.conn.closed');
        kick();
        buffer += value;
        // A trailing CR may be half of a CRLF: keep it until the next chunk.
        const cut = buffer.endsWith('\r') ? buffer.length - 1 : buffer.length;
        const lines = buffer.slice(0, cut).split(/\r\n|\r|\n/);
        buffer = lines.pop() + buffer.slice(cut);
        for (const line of lines) {
          if (line === '') {
            this.dispatch(event);
            event = { type: '', data: [], id: null };
          } else if (!line.startsWith(':')) {
            const i = line.indexOf(':');
            const field = i < 0 ? line : line.slice(0, i);
            const val = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '');
            if (field === 'event') event.type = val;
            else if (field === 'data') event.data.push(val);
            else if (field === 'id' && !val.includes('\0')) this.lastId = val;
            else if (field === 'retry' && /^\d+$/.test(val)) this.retryMs = Number(val);
          }
        }
      }
    } finally {
      clearTimeout(watchdog);
      ctrl.abort();
    }
  }

  dispatch(event) {
    if (event.data.length === 0) return;
    let data;
    try {
      data = JSON.parse(event.data.join('\n'));
    } catch {
      return; // not ours to show; the next snapshot repairs state anyway
    }
    const type = event.type || 'message';
    if (type === 'snapshot') {
      this.failures = 0;
      this.onStatus('live', {});
    }
    this.onEvent(type, data);
  }
}
