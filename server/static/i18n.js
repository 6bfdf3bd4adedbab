// The page's message catalogue: one flat JSON object per language
// (/static/i18n-en.json, /static/i18n-zh.json), the same format as the server's.
// Keys are always whole string literals ('web.status.pending'), never built from
// pieces, so a test can check every key the page uses against both catalogues.

const LANG_KEY = 'robot-task-server.lang';
export const LANGS = ['en', 'zh'];
const HTML_LANG = { en: 'en', zh: 'zh-CN' };

let current = 'en';
let messages = {};
const loaded = new Map(); // lang -> catalogue, so switching back costs no request
const listeners = [];

// The operator's explicit choice, if they made one on this browser.
function storedLanguage() {
  try {
    const value = localStorage.getItem(LANG_KEY);
    return LANGS.includes(value) ? value : null;
  } catch {
    return null; // storage refused: fall back to the browser's languages
  }
}

// The first of the browser's languages that we have decides: ["de", "zh-CN"] -> zh,
// ["en-US", "zh-CN"] -> en. Nothing we have -> English.
export function browserLanguage(list = navigator.languages || [navigator.language]) {
  for (const tag of list || []) {
    const primary = String(tag || '').toLowerCase().split(/[-_]/)[0];
    if (LANGS.includes(primary)) return primary;
  }
  return 'en';
}

export function getLang() { return current; }

async function fetchCatalogue(lang) {
  if (loaded.has(lang)) return loaded.get(lang);
  const resp = await fetch(`/static/i18n-${lang}.json`, { cache: 'no-cache' });
  if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
  const data = await resp.json();
  loaded.set(lang, data);
  return data;
}

async function use(lang) {
  try {
    messages = await fetchCatalogue(lang);
    current = lang;
  } catch (err) {
    console.error(`message catalogue ${lang} could not be loaded: ${err.message || err}`);
    if (lang !== 'en') { await use('en'); return; }
    messages = {};
    current = 'en';
  }
  document.documentElement.lang = HTML_LANG[current];
}

// Before the first render: the stored choice, else the browser's languages.
export async function initLanguage() {
  await use(storedLanguage() || browserLanguage());
  applyStatic();
}

// The header's switch: remembered on this browser, applied without a reload.
export async function setLanguage(lang) {
  if (!LANGS.includes(lang)) return;
  try { localStorage.setItem(LANG_KEY, lang); } catch { /* storage refused: this tab only */ }
  await use(lang);
  applyStatic();
  for (const fn of listeners) fn(current);
}

export function onLanguageChange(fn) { listeners.push(fn); }

// `{name}` placeholders are filled by name; a missing key or value is logged as a
// console error (the browser tests fail on those) and shown as the key itself.
export function t(key, params = {}) {
  const text = messages[key];
  if (text === undefined) {
    if (Object.keys(messages).length) console.error(`message key ${key} is missing`);
    return key;
  }
  return text.replace(/\{([A-Za-z0-9_]+)\}/g, (whole, name) => {
    if (Object.prototype.hasOwnProperty.call(params, name)) return String(params[name]);
    console.error(`message ${key}: no value for {${name}}`);
    return whole;
  });
}

// Static markup names its key in an attribute: data-i18n (text), data-i18n-title,
// data-i18n-aria-label, data-i18n-placeholder. Without a catalogue the English
// text written in the HTML stays.
const ATTRIBUTES = [
  ['data-i18n-title', 'title'],
  ['data-i18n-aria-label', 'aria-label'],
  ['data-i18n-placeholder', 'placeholder'],
];

export function applyStatic(root = document) {
  const has = (key) => messages[key] !== undefined;
  for (const el of root.querySelectorAll('[data-i18n]')) {
    if (has(el.dataset.i18n)) el.textContent = t(el.dataset.i18n);
  }
  for (const [data, attr] of ATTRIBUTES) {
    for (const el of root.querySelectorAll(`[${data}]`)) {
      const key = el.getAttribute(data);
      if (has(key)) el.setAttribute(attr, t(key));
    }
  }
  if (has('web.title')) document.title = t('web.title');
  for (const btn of root.querySelectorAll('[data-lang]')) {
    btn.setAttribute('aria-pressed', String(btn.dataset.lang === current));
  }
  document.documentElement.classList.remove('i18n-pending');
}
