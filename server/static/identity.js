// Which robot PC this dashboard belongs to (--name, --labels): GET /health's `name` and
// `labels`, in the page's title and under the header's heading, so a lab with several
// robot PCs tells their tabs apart. The title is a catalogue text: it follows the
// language switch (i18n.js puts the plain title back first, then tells us).
import { t, onLanguageChange } from './i18n.js';

let shown = null; // { name, labels } of the last /health answer that had them

function apply() {
  if (!shown) return;
  document.title = t('web.identity.title', { name: shown.name });
  const el = document.getElementById('device-name');
  if (!el) return;
  const labels = Object.entries(shown.labels || {}).map(([k, v]) => `${k}=${v}`).join(', ');
  el.textContent = labels ? `${shown.name} · ${labels}` : shown.name;
  el.title = `${t('web.identity.hint')}: ${el.textContent}`; // whole, where the line is cut
  el.hidden = false;
}

onLanguageChange(apply);

// Shows the identity of a /health answer and returns the answer as it is, so a caller
// can pass it through: `health = showIdentity(await get('/health'))`.
export function showIdentity(health) {
  if (health && typeof health.name === 'string') {
    shown = { name: health.name, labels: health.labels };
    apply();
  }
  return health;
}
