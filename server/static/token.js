// The sign-in box: a modal dialog that asks for a token (a person's, a program's, or
// the server's --api-token) and cannot be dismissed, because nothing works without
// one once the server has principals. api.js calls it (once for every request that
// got 401 meanwhile); the token is tried on GET /me before it is kept, so a wrong
// one is said here at once. Signing out (auth.js) forgets it and reloads the page,
// which brings this box back.

import { probeToken } from './api.js';
import { t } from './i18n.js';

const $ = (sel) => document.querySelector(sel);

function say(text, bad) {
  const el = $('#token-message');
  el.textContent = text;
  el.classList.toggle('error-message', bad);
}

// What a tried token got: null when it is good, else what to tell the person.
function refusal({ status, data }) {
  const message = data && data.message;
  if (status === 401) return t('web.token.rejected');
  if (status === 429) return message || t('web.token.locked'); // too many wrong tokens
  if (status === 0) return t('web.error.request_failed', { reason: message || '' });
  return null; // 200; anything else is for the page itself to report
}

export function askForToken(rejected) {
  const dialog = $('#token-dialog');
  const input = $('#token-input');
  const button = $('#token-form button[type=submit]');
  say(rejected ? t('web.token.rejected') : t('web.token.message'), rejected);
  input.value = '';
  return new Promise((resolve) => {
    const formEl = $('#token-form');
    const done = async (ev) => {
      ev.preventDefault(); // the dialog closes only for a token the server knows
      const token = input.value.trim();
      if (!token || button.disabled) return;
      button.disabled = true;
      const why = refusal(await probeToken(token));
      button.disabled = false;
      if (why) {
        say(why, true);
        input.select();
        return;
      }
      formEl.removeEventListener('submit', done);
      dialog.removeEventListener('cancel', block);
      dialog.close();
      resolve(token);
    };
    const block = (ev) => ev.preventDefault(); // nothing works without it
    formEl.addEventListener('submit', done);
    dialog.addEventListener('cancel', block);
    if (!dialog.open) dialog.showModal();
    input.focus();
  });
}
