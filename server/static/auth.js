// Who is signed in (GET /me) and what that role may do. The header shows the name and
// role with a sign-out link (or, on a server with nobody set up, that it is open to
// all); every control the role may not use is greyed out with the reason in its
// tooltip, the submit panel says it in words. The greying follows the page's own
// rendering (a MutationObserver): views.js and sequences.js draw their buttons as
// always and this module disables what is not allowed, so the server, which refuses
// such requests anyway (403), and the page agree. A reason for the audit trail is
// asked for here (api.js calls reasonFor before sending a change) where the server
// requires one, and offered for a cancel on a server where people sign in.

import { get, forgetToken, onTokenNeeded, onReasonWanted } from './api.js';
import { askForToken } from './token.js';
import { t } from './i18n.js';
import { h } from './views.js';
import { AuditPage } from './audit.js';

const $ = (sel) => document.querySelector(sel);

const ROLE_LABELS = { viewer: 'web.role.viewer', operator: 'web.role.operator', admin: 'web.role.admin' };
// Why a control is greyed out: the least role that has its permission.
const NEEDS = {
  submit: 'web.auth.needs_operator', cancel: 'web.auth.needs_operator', queue: 'web.auth.needs_operator',
  sequence: 'web.auth.needs_operator', stop: 'web.auth.needs_stop', audit: 'web.auth.needs_admin',
};
// What each control needs; `owned`: acting on another's task or sequence needs `others` too.
const CONTROLS = [
  { sel: '#submit-btn, #seq-submit, #seq-validate, #seq-add, #seq-add-confirm', perm: 'submit' },
  { sel: '#history button.retry, #detail .actions button', perm: 'submit', owned: true },
  { sel: '#pending button.cancel, #running .running-head button, #sequences .seq-cancel', perm: 'cancel', owned: true },
  { sel: '#pause-btn, #banner-resume, #drain-btn, #maint-btn, #open-btn, #maint-open, #pending button.move', perm: 'queue' },
  { sel: '#sequences .seq-retry, #sequences .seq-skip, #sequences .seq-abort, #sequences .seq-confirm-btn', perm: 'sequence' },
  { sel: '#estop-btn', perm: 'stop' }, // every role has it: stopping is always safe
];

let me = null; // GET /me's answer; null until known (everything stays enabled meanwhile)
let lookup = () => null; // ({taskId, sequenceId}) -> the task or sequence document, from app.js
let audit = null;

export const may = (perm) => !me || (me.permissions || []).includes(perm);
const roleLabel = (role) => (ROLE_LABELS[role] ? t(ROLE_LABELS[role]) : role);
// Names are shown once people sign in; on an open server everything is `anonymous`.
export const named = (name) => Boolean(name && me && me.auth_required);

// The document a control belongs to: its row's task or sequence (the detail panel is
// marked with its task by showAttribution).
function ownerOf(el) {
  const holder = el.closest('[data-task-id], [data-sequence-id]');
  if (!holder) return null;
  const doc = lookup({ taskId: holder.dataset.taskId, sequenceId: holder.dataset.sequenceId });
  return doc ? doc.submitted_by : null;
}

function denial(rule, el) {
  if (!may(rule.perm)) return t(NEEDS[rule.perm]);
  if (rule.owned && me && !may('others')) {
    const owner = ownerOf(el);
    if (owner && owner !== me.name) return t('web.auth.needs_admin_others', { name: owner });
  }
  return null;
}

function guard() {
  for (const rule of CONTROLS) {
    for (const el of document.querySelectorAll(rule.sel)) {
      const why = denial(rule, el);
      if (why) {
        if (!el.disabled || el.title !== why) Object.assign(el, { disabled: true, title: why });
        el.dataset.denied = rule.perm;
      } else if (el.dataset.denied) { // allowed since (another sign-in)
        el.disabled = false;
        el.removeAttribute('title');
        delete el.dataset.denied;
      }
    }
  }
  // Changed only when it differs: the observer that calls guard() sees every text change.
  const note = $('#submit-denied');
  const text = may('submit') ? '' : t('web.auth.submit_denied', { role: roleLabel(me.role) });
  note.hidden = !text;
  if (note.textContent !== text) note.textContent = text;
}

// Who submitted, cancelled, recovered and confirmed a sequence, on its row.
function markSequences() {
  for (const li of document.querySelectorAll('#sequences li.seq-item[data-sequence-id]')) {
    const facts = li.querySelector('.seq-facts');
    if (!facts || facts.querySelector('.seq-by')) continue;
    const text = attribution(lookup({ sequenceId: li.dataset.sequenceId })).map(([, , said]) => said).join(' · ');
    if (text) facts.append(' · ', h('span', { class: 'seq-by', text }));
  }
}

// [label, name, sentence] for each attribution field of a task or sequence document.
function attribution(doc) {
  if (!doc) return [];
  const fields = [
    [doc.submitted_by, 'web.auth.submitted_by_label', 'web.auth.submitted_by'],
    [doc.cancelled_by, 'web.auth.cancelled_by_label', 'web.auth.cancelled_by'],
    [doc.recovered_by, 'web.auth.recovered_by_label', 'web.auth.recovered_by'],
    [doc.resumed_by, 'web.auth.confirmed_by_label', 'web.auth.confirmed_by'],
  ];
  return fields.filter(([name]) => named(name)).map(([name, label, said]) => [t(label), name, t(said, { name })]);
}

// The task detail panel (views.js drew it): who submitted and cancelled the task.
export function showAttribution(el, task) {
  if (!task) return;
  el.dataset.taskId = task.task_id;
  const facts = el.querySelector('dl.facts');
  for (const [label, name] of attribution(task)) {
    if (facts) facts.append(h('dt', { text: label }), h('dd', { class: 'by', text: name }));
  }
  guard();
}

export const pausedByText = (name) => (named(name) ? t('web.auth.paused_by', { name }) : '');

function renderWho() {
  $('#who').hidden = !me;
  if (!me) return;
  const who = $('#who-name');
  who.textContent = me.auth_required
    ? t('web.auth.signed_in', { name: me.name, role: roleLabel(me.role) }) : t('web.auth.open_server');
  who.title = me.auth_required ? who.textContent : t('web.auth.open_server_title'); // a long name is cut
  $('#sign-out').hidden = !me.auth_required;
  $('#audit-link').hidden = !may('audit');
}

// -- reasons ---------------------------------------------------------------------------
let prompting = Promise.resolve();

// The reason dialog: resolves with the text ('' when optional and left empty), or null
// when the person went back (the action is not sent). One at a time.
export function promptReason(message, required) {
  const ask = () => new Promise((resolve) => {
    const dialog = $('#reason-dialog');
    const input = $('#reason-input');
    $('#reason-message').textContent = message;
    $('#reason-label').textContent = required ? t('web.reason.label_required') : t('web.reason.label_optional');
    $('#reason-error').textContent = '';
    input.value = '';
    input.required = required;
    const finish = (value) => {
      $('#reason-form').removeEventListener('submit', submit);
      $('#reason-back').removeEventListener('click', back);
      dialog.removeEventListener('cancel', back);
      dialog.close();
      resolve(value);
    };
    const submit = (ev) => {
      ev.preventDefault();
      const text = input.value.trim();
      if (required && !text) { $('#reason-error').textContent = t('web.reason.missing'); input.focus(); return; }
      finish(text);
    };
    const back = (ev) => { ev.preventDefault(); finish(null); };
    $('#reason-form').addEventListener('submit', submit);
    $('#reason-back').addEventListener('click', back);
    dialog.addEventListener('cancel', back);
    dialog.showModal();
    input.focus();
  });
  prompting = prompting.then(ask, ask);
  return prompting;
}

// A cancel's target, from its path: {taskId} or {sequenceId}, else null.
function cancelTarget(method, path) {
  const task = /^\/task\/([^/?]+)(\/cancel)?$/.exec(path);
  if (task && (task[2] ? method === 'POST' : method === 'DELETE')) return { taskId: decodeURIComponent(task[1]) };
  const seq = /^\/sequences\/([^/?]+)\/cancel$/.exec(path);
  return seq && method === 'POST' ? { sequenceId: decodeURIComponent(seq[1]) } : null;
}

async function reasonFor(method, path, required) {
  if (required) return promptReason(t('web.reason.server_asks'), true); // a 400 reason_required
  if (!me) return undefined;
  const strict = Boolean(me.require_reason);
  if (strict && method === 'POST' && path === '/queue/resume') return promptReason(t('web.reason.resume'), true);
  if (strict && method === 'POST' && /^\/sequences\/[^/?]+\/recover$/.test(path)) {
    return promptReason(t('web.reason.recover'), true);
  }
  const target = cancelTarget(method, path);
  if (!target) return undefined;
  const doc = lookup(target);
  const owner = doc && doc.submitted_by;
  if (strict && owner && owner !== me.name) return promptReason(t('web.reason.cancel_other', { name: owner }), true);
  return strict || me.auth_required ? promptReason(t('web.reason.cancel'), false) : undefined;
}

// -- start -----------------------------------------------------------------------------
async function load() {
  try {
    me = await get('/me');
  } catch (err) {
    console.warn(`GET /me: ${err.message || err}`); // an older server: everything stays enabled
    me = null;
  }
  renderWho();
  guard();
  route();
}

// The Audit page is the `#audit` address: a reload or a bookmark opens it again.
function route() {
  const open = window.location.hash === '#audit' && Boolean(me) && may('audit');
  $('#dashboard').hidden = open;
  $('#audit-page').hidden = !open;
  if (open) audit.open();
}

export function relabelAuth() {
  renderWho();
  guard();
  audit.render(); // the sequences' rows are drawn anew (and marked again) by app.js
}

// `find` gives app.js's task and sequence documents; `onError` reports a failed request.
export function startAuth({ find, onError }) {
  lookup = find;
  audit = new AuditPage($('#audit-page'), { onError, roleLabel });
  onReasonWanted(reasonFor);
  // A new token after a 401 (revoked, expired): whoever it is may be someone else.
  onTokenNeeded((rejected) => askForToken(rejected).then((token) => {
    if (me) setTimeout(load, 0); // after api.js has kept the token
    return token;
  }));
  $('#sign-out').addEventListener('click', () => { forgetToken(); window.location.reload(); });
  window.addEventListener('hashchange', route);
  new MutationObserver(() => { guard(); markSequences(); })
    .observe(document.body, { childList: true, subtree: true });
  return load();
}
