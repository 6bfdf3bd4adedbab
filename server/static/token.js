// The API token prompt: a modal dialog that cannot be dismissed, because nothing
// works without the token. api.js calls it (once) when the server says 401.

import { t } from './i18n.js';

const $ = (sel) => document.querySelector(sel);

export function askForToken(rejected) {
  const dialog = $('#token-dialog');
  $('#token-message').textContent = rejected ? t('web.token.rejected') : t('web.token.message');
  $('#token-input').value = '';
  return new Promise((resolve) => {
    const formEl = $('#token-form');
    const done = (ev) => {
      const token = $('#token-input').value.trim();
      if (!token) { ev.preventDefault(); return; }
      formEl.removeEventListener('submit', done);
      dialog.removeEventListener('cancel', block);
      $('#forget-token').hidden = false;
      resolve(token);
    };
    const block = (ev) => ev.preventDefault(); // nothing works without it
    formEl.addEventListener('submit', done);
    dialog.addEventListener('cancel', block);
    if (!dialog.open) dialog.showModal();
  });
}
