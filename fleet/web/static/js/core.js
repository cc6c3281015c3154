// Page settings, messages, formatting and small DOM helpers shared by every page.

const configElement = document.getElementById('page-config');
export const config = JSON.parse(configElement ? configElement.textContent : '{}');
const messages = config.messages || {};

/** The message `key` of the page's language, with {name} placeholders filled from `values`. */
export function t(key, values) {
  const text = messages[key] ?? key;
  if (!values) return text;
  return text.replace(/\{(\w+)\}/g, (match, name) => (name in values ? String(values[name]) : match));
}

const dateTime = new Intl.DateTimeFormat(config.lang, { dateStyle: 'short', timeStyle: 'medium' });
const timeOnly = new Intl.DateTimeFormat(config.lang, { timeStyle: 'medium' });
const relative = new Intl.RelativeTimeFormat(config.lang, { numeric: 'auto' });
const number = new Intl.NumberFormat(config.lang, { maximumFractionDigits: 6 });

/** An ISO time in the browser's time zone and the page's language ('—' when absent). */
export function formatTime(iso) {
  if (!iso) return '—';
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return '—';
  const today = new Date();
  return date.toDateString() === today.toDateString() ? timeOnly.format(date) : dateTime.format(date);
}

/** "5 minutes ago" in the page's language. */
export function formatAgo(iso, now = Date.now()) {
  if (!iso) return t('time.never');
  const seconds = Math.round((new Date(iso).getTime() - now) / 1000);
  const abs = Math.abs(seconds);
  if (abs < 60) return relative.format(seconds, 'second');
  if (abs < 3600) return relative.format(Math.round(seconds / 60), 'minute');
  if (abs < 86400) return relative.format(Math.round(seconds / 3600), 'hour');
  return relative.format(Math.round(seconds / 86400), 'day');
}

export function formatNumber(value, unit) {
  if (value === null || value === undefined) return '—';
  const text = typeof value === 'number' ? number.format(value) : String(value);
  return unit ? `${text} ${unit}` : text;
}

/** Build an element; strings become text nodes (never HTML), attributes starting with "on" are refused. */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith('on')) throw new Error('event handlers are attached with addEventListener');
    if (name === 'dataset') Object.assign(node.dataset, value);
    else if (value === true) node.setAttribute(name, '');
    else node.setAttribute(name, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Show a short message in the page's live region (`kind`: info or error). */
export function notify(text, kind = 'info') {
  const box = document.getElementById('notice');
  if (!box) return;
  box.textContent = text;
  box.dataset.kind = kind;
  box.hidden = false;
  clearTimeout(notify.timer);
  if (kind === 'info') notify.timer = setTimeout(() => { box.hidden = true; }, 6000);
}

/** The message of an API error answer in the reader's language when we know its code. */
export function errorText(error) {
  if (error && error.code) {
    const key = `error.${error.code}`;
    const known = t(key);
    if (known !== key) return known;
  }
  if (error && error.status === 404 && error.missingEndpoint) return t('error.not_available');
  return (error && error.message) || t('error.generic');
}

export function statusLabel(status) {
  return t(`status.${status || 'unknown'}`);
}

/** Wire the language switch: remember the choice in a cookie (a year) and reload the page. */
export function setupLanguageSwitch() {
  const select = document.getElementById('lang-select');
  if (!select) return;
  const apply = () => {
    document.cookie = `fleet_lang=${encodeURIComponent(select.value)}; Path=/; Max-Age=31536000; SameSite=Lax`;
    window.location.reload();
  };
  select.addEventListener('change', apply);
  // A choice made while the page's script was still loading (the page shell renders first) counts too.
  if (select.value !== config.lang) apply();
}
