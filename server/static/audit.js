// The Audit page (the `#audit` address; role admin, i.e. permission `audit`): the audit
// trail from GET /audit, newest first, narrowed by who, action, target and a start
// time, with More for the next page (next_cursor); the same rows as CSV (GET
// /audit.csv, fetched with the token and saved through a Blob URL: the token is a
// header, never part of a link); and whether the hash chain holds (GET /audit/verify).

import { get, download } from './api.js';
import { t } from './i18n.js';
import { h } from './views.js';

const PAGE = 50;
// The actions the server records (the filter's choices; the rows show the names as is).
const ACTIONS = ['task.submit', 'task.retry', 'task.cancel', 'queue.pause', 'queue.resume', 'robot.stop',
  'queue.drain', 'queue.maintenance', 'queue.open', 'task.move', 'sequence.move',
  'sequence.submit', 'sequence.recover', 'sequence.confirm', 'sequence.cancel', 'sequence.fixit',
  'user.add', 'user.token', 'user.revoke', 'auth.refused', 'auth.lockout'];
const FIELDS = ['principal', 'action', 'target'];

const pad = (n) => String(n).padStart(2, '0');

// "2026-12-06T14:02:03.123Z" -> "2026-12-06 15:02:03", in the browser's time zone.
export function localTime(iso) {
  const d = new Date(iso);
  if (!iso || Number.isNaN(d.getTime())) return iso || '';
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} `
    + `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export class AuditPage {
  constructor(root, { onError, roleLabel }) {
    this.root = root;
    this.onError = onError;
    this.roleLabel = roleLabel;
    this.entries = [];
    this.next = null; // next_cursor: the seq below which More goes on
    this.verify = null; // GET /audit/verify's answer
    this.filters = new URLSearchParams();
    this.asked = 0;
    this.form = root.querySelector('#audit-filters');
    this.rows = root.querySelector('#audit-rows');
    this.more = root.querySelector('#audit-more');
    this.form.elements.action.append(...ACTIONS.map((a) => h('option', { value: a, text: a })));
    this.form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      this.filters = this.read();
      this.load(false);
    });
    this.more.addEventListener('click', () => this.load(true));
    root.querySelector('#audit-csv').addEventListener('click', () => this.csv());
  }

  // The form as query parameters; `since` (a local date and time) goes as UTC ISO 8601.
  read() {
    const params = new URLSearchParams();
    for (const name of FIELDS) {
      const value = this.form.elements[name].value.trim();
      if (value) params.set(name, value);
    }
    const since = new Date(this.form.elements.since.value);
    if (this.form.elements.since.value && !Number.isNaN(since.getTime())) {
      params.set('since', since.toISOString().replace(/\.\d{3}Z$/, 'Z'));
    }
    return params;
  }

  open() {
    this.filters = this.read();
    this.load(false);
    this.check();
  }

  async load(more) {
    const asked = ++this.asked; // a newer question (other filters) wins
    const params = new URLSearchParams(this.filters);
    params.set('limit', String(PAGE));
    if (more && this.next) params.set('cursor', this.next);
    try {
      const page = await get(`/audit?${params}`);
      if (asked !== this.asked) return;
      this.entries = more ? this.entries.concat(page.entries || []) : page.entries || [];
      this.next = page.next_cursor || null;
    } catch (err) {
      this.onError(err);
    }
    this.render();
  }

  async check() {
    try {
      this.verify = await get('/audit/verify');
    } catch (err) {
      this.verify = null;
      this.onError(err);
    }
    this.render();
  }

  render() {
    const v = this.verify;
    const line = this.root.querySelector('#audit-verify');
    line.textContent = !v ? '' : v.ok ? t('web.audit.verified', { rows: v.rows })
      : t('web.audit.broken', { row: v.first_bad, problem: v.problem || '' });
    line.className = `audit-verify${!v ? '' : v.ok ? ' verify-ok' : ' verify-bad'}`;
    this.rows.replaceChildren(...this.entries.map((e) => this.row(e)));
    if (!this.entries.length) {
      this.rows.append(h('tr', {}, h('td', { colspan: 9, class: 'empty', text: t('web.audit.empty') })));
    }
    this.more.hidden = !this.next;
  }

  row(e) {
    // The states as stored (task, queue, role...): data, like the action names.
    const change = e.before || e.after ? `${e.before || '—'} → ${e.after || '—'}` : '';
    return h('tr', { class: e.status >= 400 ? 'audit-refused' : null, dataset: { seq: String(e.seq) } },
      h('td', { text: String(e.seq) }),
      h('td', { class: 'audit-time', title: e.time, text: localTime(e.time) }),
      h('td', {}, h('strong', { text: e.principal }), e.role ? ` (${this.roleLabel(e.role)})` : ''),
      h('td', { text: e.address || '' }),
      h('td', {}, h('code', { text: e.action })),
      h('td', {}, e.target ? h('code', { text: e.target }) : ''),
      h('td', { text: change }),
      h('td', { class: 'audit-reason', text: e.reason || '' }),
      h('td', { text: String(e.status ?? '') }));
  }

  // The rows the form asks for, as the server's CSV file.
  async csv() {
    try {
      saveBlob(await download(`/audit.csv?${this.read()}`), 'audit.csv');
    } catch (err) {
      this.onError(err);
    }
  }
}

// A file fetched with the token (api.js download), handed to the browser as a download.
export function saveBlob(blob, name) {
  const url = URL.createObjectURL(blob);
  const link = h('a', { href: url, download: name, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000); // the download has its copy by then
}
