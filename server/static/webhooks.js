// The Webhooks page (the `#webhooks` address; permission `webhooks`, i.e. admins) and the
// dashboard's warning about failing subscriptions (docs/webhooks.md). The page lists the
// subscriptions from GET /webhooks with their last attempt, and per row: Enable/Disable
// (PATCH), Test (a ping, sent at once), Deliveries (the newest, each with Replay) and
// Remove; below, a form adds one and shows its secret once. The banner on the dashboard
// (#webhook-alert) says when a subscription was disabled by the server (410, every retry
// failed) or its last attempt failed, on every page.
//
// Kept current from the event stream (app.js hands every event to webhookEvent): the
// `webhook` event (a subscription disabled) and a (re)connect reload at once; a final
// task or sequence, a queue or robot change makes deliveries, so the list is asked again
// shortly after. A delivery waiting for its next retry changes with no event at all:
// while any is pending, the list is asked every PENDING_POLL_MS too.

import { api, get } from './api.js';
import { may } from './auth.js';
import { localTime } from './audit.js';
import { t, onLanguageChange } from './i18n.js';
import { h } from './views.js';

const $ = (sel) => document.querySelector(sel);

// docs/webhooks.md; `*` (every one) is the form's "All events".
const EVENT_TYPES = ['task.completed', 'task.failed', 'task.cancelled', 'sequence.completed',
  'sequence.failed', 'sequence.held', 'sequence.cancelled', 'queue.paused', 'queue.resumed',
  'robot.disconnected', 'robot.fault'];
const STATES = {
  ok: ['web.webhooks.state.ok', 'state-ok'],
  failing: ['web.webhooks.state.failing', 'status-failed'],
  disabled: ['web.webhooks.state.disabled', 'status-held'],
  new: ['web.webhooks.state.new', 'state-unknown'],
};
const REASONS = {
  gone: 'web.webhooks.reason.gone',
  retries_exhausted: 'web.webhooks.reason.retries_exhausted',
  by_operator: 'web.webhooks.reason.by_operator',
};
const DELIVERY = {
  pending: ['web.status.pending', 'status-pending'],
  delivered: ['web.webhooks.delivered', 'status-completed'],
  failed: ['web.status.failed', 'status-failed'],
};
const FINAL = new Set(['completed', 'failed', 'cancelled', 'held']);
const AFTER_EVENT_MS = 1500; // a delivery to a working receiver is tried well within this
const PENDING_POLL_MS = 15000;
const DELIVERIES_SHOWN = 20;
const ALERT_URLS = 3; // the banner names this many, then "…"

// ok, failing (its last attempt failed), disabled, or new (nothing sent yet).
function hookState(w) {
  if (!w.enabled) return 'disabled';
  if (!w.last) return 'new';
  return w.last.ok ? 'ok' : 'failing';
}

// Worth a warning: disabled by the server (not by an operator), or failing.
const alarming = (w) => (w.enabled ? hookState(w) === 'failing' : w.disabled_reason !== 'by_operator');

// An attempt's result in a few words: "HTTP 500", else the error (no answer at all).
function attemptText(a) {
  if (!a) return '—';
  return a.status_code !== null && a.status_code !== undefined
    ? t('web.webhooks.http_code', { code: a.status_code }) : a.error || '—';
}

const badge = ([key, cls]) => h('span', { class: `badge ${cls}`, text: t(key) });

class WebhooksPage {
  constructor({ onError }) {
    this.onError = onError;
    this.hooks = null; // GET /webhooks's list; null until asked (or not allowed)
    this.asked = 0;
    this.open = false;
    this.shown = null; // the subscription whose deliveries are listed
    this.deliveries = [];
    this.result = null; // [kind, text]: the outcome of the last action
    this.secret = null; // {url, secret} of the subscription just added: shown once
    this.rows = $('#webhooks-rows');
    this.form = $('#webhook-add');
    this.buildForm();
    $('#deliveries-close').addEventListener('click', () => { this.shown = null; this.render(); });
  }

  buildForm() {
    const boxes = EVENT_TYPES.map((type) => h('label', { class: 'webhook-event' },
      h('input', { type: 'checkbox', name: 'event', value: type }), ' ', h('code', { text: type })));
    $('#webhook-event-boxes').replaceChildren(...boxes);
    const all = this.form.elements.all;
    const sync = () => { for (const box of this.form.querySelectorAll('[name=event]')) box.disabled = all.checked; };
    all.addEventListener('change', sync);
    sync();
    this.form.addEventListener('submit', (ev) => { ev.preventDefault(); this.add(); });
    $('#webhook-secret-hide').addEventListener('click', () => { this.secret = null; this.render(); });
  }

  // -- loading ------------------------------------------------------------------------
  async refresh() {
    if (!may('webhooks')) { this.hooks = null; this.render(); return; }
    const asked = ++this.asked; // the newest answer wins
    try {
      const { webhooks } = await get('/webhooks');
      if (asked !== this.asked) return;
      this.hooks = webhooks;
    } catch (err) {
      if (this.open) this.onError(err);
      else console.warn(`GET /webhooks: ${err.message || err}`); // the banner keeps its last state
    }
    if (this.shown && !(this.hooks || []).some((w) => w.id === this.shown)) this.shown = null;
    this.render();
    if (this.open && this.shown) this.loadDeliveries();
  }

  async loadDeliveries() {
    const id = this.shown;
    try {
      const { deliveries } = await get(`/webhooks/${encodeURIComponent(id)}/deliveries?limit=${DELIVERIES_SHOWN}`);
      if (id !== this.shown) return;
      this.deliveries = deliveries;
    } catch (err) { this.onError(err); }
    this.render();
  }

  // -- actions --------------------------------------------------------------------------
  async act(fn) {
    try { await fn(); } catch (err) { this.onError(err); }
    this.refresh();
  }

  toggle(w) {
    return this.act(() => api('PATCH', `/webhooks/${encodeURIComponent(w.id)}`, { enabled: !w.enabled }));
  }

  test(w) {
    return this.act(async () => {
      const { data } = await api('POST', `/webhooks/${encodeURIComponent(w.id)}/test`);
      this.said(data.delivery, (d, a) => (d.status === 'delivered'
        ? t('web.webhooks.test_ok', { url: w.url, result: attemptText(a), ms: a ? a.duration_ms : 0 })
        : t('web.webhooks.test_failed', { url: w.url, result: attemptText(a) })));
    });
  }

  replay(d) {
    return this.act(async () => {
      const { data } = await api('POST', `/webhooks/deliveries/${encodeURIComponent(d.id)}/replay`);
      this.said(data.delivery, (n, a) => t(n.status === 'delivered' ? 'web.webhooks.replay_ok' : 'web.webhooks.replay_failed',
        { id: d.id, new_id: n.id, result: attemptText(a) }));
    });
  }

  remove(w) {
    if (!window.confirm(t('web.webhooks.remove_confirm', { url: w.url }))) return Promise.resolve();
    return this.act(() => api('DELETE', `/webhooks/${encodeURIComponent(w.id)}`));
  }

  // A delivery just sent (test, replay): its outcome in the result line.
  said(delivery, text) {
    const a = delivery.attempts[delivery.attempts.length - 1];
    this.result = [delivery.status === 'delivered' ? 'ok' : 'bad', text(delivery, a)];
  }

  showDeliveries(w) {
    this.shown = w.id;
    this.deliveries = [];
    this.render();
    this.loadDeliveries();
  }

  async add() {
    const els = this.form.elements;
    const events = els.all.checked ? ['*']
      : [...this.form.querySelectorAll('[name=event]:checked')].map((box) => box.value);
    const error = $('#webhook-add-error');
    error.textContent = events.length ? '' : t('web.webhooks.events_missing');
    if (!events.length) return;
    const body = { url: els.url.value.trim(), events };
    if (els.description.value.trim()) body.description = els.description.value.trim();
    try {
      const { data } = await api('POST', '/webhooks', body);
      this.secret = { url: data.webhook.url, secret: data.secret };
      this.form.reset();
      els.all.dispatchEvent(new Event('change'));
    } catch (err) {
      if (err && err.dropped) return;
      error.textContent = err.message || String(err);
    }
    this.refresh();
  }

  // -- rendering --------------------------------------------------------------------------
  render() {
    const hooks = this.hooks || [];
    const allowed = may('webhooks');
    $('#webhooks-link').hidden = !allowed;
    const bad = hooks.filter(alarming);
    $('#webhook-alert').hidden = !allowed || !bad.length;
    const urls = bad.slice(0, ALERT_URLS).map((w) => w.url).join(', ') + (bad.length > ALERT_URLS ? ', …' : '');
    $('#webhook-alert-text').textContent = bad.length
      ? t('web.webhooks.alert_text', { count: bad.length, total: hooks.length, urls }) : '';
    this.rows.replaceChildren(...hooks.map((w) => this.row(w)));
    if (!hooks.length) {
      this.rows.append(h('tr', {}, h('td', { colspan: 7, class: 'empty', text: t('web.webhooks.empty') })));
    }
    this.renderDeliveries();
    const line = $('#webhooks-result');
    line.textContent = this.result ? this.result[1] : '';
    line.className = `submit-result${this.result ? ` result-${this.result[0]}` : ''}`;
    $('#webhook-secret').hidden = !this.secret;
    $('#webhook-secret-text').textContent = this.secret ? t('web.webhooks.secret', { url: this.secret.url }) : '';
    $('#webhook-secret-value').textContent = this.secret ? this.secret.secret : '';
  }

  row(w) {
    const state = hookState(w);
    const last = w.last;
    const why = !w.enabled && w.disabled_reason
      ? h('div', { class: 'webhook-reason', text: REASONS[w.disabled_reason] ? t(REASONS[w.disabled_reason]) : w.disabled_reason })
      : null;
    const events = w.events.includes('*') ? t('web.webhooks.all_events')
      : w.events.join(', ');
    const button = (key, cls, onclick) => h('button', { type: 'button', class: `secondary ${cls}`, text: t(key), onclick });
    return h('tr', { class: alarming(w) ? 'webhook-bad' : null, dataset: { webhookId: w.id, state } },
      h('td', { class: 'webhook-state' }, badge(STATES[state]), why),
      h('td', { class: 'webhook-url' }, h('code', { text: w.url })),
      h('td', { text: events }),
      h('td', { class: 'webhook-description', text: w.description || '' }),
      h('td', { class: 'webhook-pending', text: String(w.pending) }),
      h('td', { class: 'webhook-last', title: last && last.error ? last.error : null },
        last ? [h('span', { class: 'audit-time', text: localTime(last.time) }), ' ',
          h('strong', { class: last.ok ? 'last-ok' : 'last-bad', text: attemptText(last) })] : '—'),
      h('td', { class: 'row-actions' },
        button(w.enabled ? 'web.webhooks.disable' : 'web.webhooks.enable', 'webhook-toggle', () => this.toggle(w)),
        button('web.webhooks.test', 'webhook-test', () => this.test(w)),
        button('web.webhooks.deliveries', 'webhook-deliveries-btn', () => this.showDeliveries(w)),
        button('web.webhooks.remove', 'webhook-remove', () => this.remove(w))));
  }

  renderDeliveries() {
    const w = (this.hooks || []).find((x) => x.id === this.shown);
    $('#webhook-deliveries').hidden = !w;
    if (!w) return;
    $('#deliveries-title').textContent = t('web.webhooks.deliveries_title', { url: w.url });
    const body = $('#deliveries-rows');
    body.replaceChildren(...this.deliveries.map((d) => {
      const a = d.attempts[d.attempts.length - 1];
      return h('tr', { dataset: { deliveryId: String(d.id), status: d.status } },
        h('td', { text: String(d.id) }),
        h('td', {}, h('code', { text: d.type }),
          d.replay_of ? h('div', { class: 'hint', text: t('web.webhooks.replay_of', { id: d.replay_of }) }) : null),
        h('td', {}, DELIVERY[d.status] ? badge(DELIVERY[d.status]) : d.status),
        h('td', { class: 'audit-time', text: localTime(d.created) }),
        h('td', { class: 'delivery-attempts', text: String(d.attempts.length) }),
        h('td', { title: a && a.error ? a.error : null },
          a ? [h('span', { class: 'audit-time', text: localTime(a.time) }), ' ', attemptText(a)] : '—'),
        h('td', { class: 'audit-time', text: d.next_try ? localTime(d.next_try) : '—' }),
        h('td', { class: 'row-actions' }, h('button', {
          type: 'button', class: 'secondary delivery-replay', text: t('web.webhooks.replay'), onclick: () => this.replay(d),
        })));
    }));
    if (!this.deliveries.length) {
      body.append(h('tr', {}, h('td', { colspan: 8, class: 'empty', text: t('web.webhooks.deliveries_empty') })));
    }
  }

  // The page is the `#webhooks` address (auth.js routes #audit and the dashboard).
  route() {
    const open = window.location.hash === '#webhooks' && may('webhooks');
    const opened = open && !this.open;
    this.open = open;
    $('#webhooks-page').hidden = !open;
    if (open) {
      $('#dashboard').hidden = true;
      $('#audit-page').hidden = true;
    }
    if (opened) { this.result = null; this.refresh(); }
  }
}

let page = null;
let soon = null;

// Every event of the stream, from app.js.
export function webhookEvent(type, data) {
  if (!page || !may('webhooks')) return;
  if (type === 'snapshot' || type === 'webhook') { page.refresh(); return; }
  const final = (type === 'task' || type === 'sequence') && data && FINAL.has(data.status);
  if (final || type === 'queue' || type === 'robot') {
    clearTimeout(soon);
    soon = setTimeout(() => page.refresh(), AFTER_EVENT_MS);
  }
}

// After auth.js knows who is signed in (its startAuth has resolved).
export function startWebhooks({ onError }) {
  page = new WebhooksPage({ onError });
  onLanguageChange(() => page.render());
  window.addEventListener('hashchange', () => page.route());
  page.route();
  page.refresh();
  setInterval(() => {
    if ((page.hooks || []).some((w) => w.enabled && w.pending > 0)) page.refresh();
  }, PENDING_POLL_MS);
}
