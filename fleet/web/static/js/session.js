// The signed-in session: access token in memory only, renewed through the HttpOnly refresh cookie.
//
// The refresh cookie is scoped to /auth and rotates on every use, so two tabs must never present the same
// one: refreshes are serialised across tabs with the Web Locks API (the second tab then sends the cookie
// the first one just received).

import { config, setupLanguageSwitch } from './core.js';

let accessToken = null;
let currentUser = null;
let refreshTimer = null;
let refreshing = null;
const tokenListeners = new Set();

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || code || `HTTP ${status}`);
    this.status = status;
    this.code = code;
  }
}

async function errorOf(response) {
  let body = null;
  try { body = await response.json(); } catch { /* not JSON */ }
  const error = (body && body.error) || {};
  const failure = new ApiError(response.status, error.code, error.message);
  // A 404 whose code is the generic one means the path itself is unknown to this server.
  failure.missingEndpoint = response.status === 404 && error.code === 'not_found' && /^Not Found$/i.test(error.message || '');
  return failure;
}

function adopt(body) {
  accessToken = body.access_token;
  currentUser = body.user || currentUser;
  clearTimeout(refreshTimer);
  // Renew a minute before expiry (at least 10 s from now), so requests and sockets never carry a stale token.
  const delay = Math.max(10, (body.expires_in || 900) - 60) * 1000;
  refreshTimer = setTimeout(() => { refresh().catch(() => signedOut()); }, delay);
  for (const listener of tokenListeners) listener(accessToken);
}

async function refreshOnce() {
  const response = await fetch('/auth/refresh', { method: 'POST', credentials: 'same-origin' });
  if (!response.ok) throw await errorOf(response);
  adopt(await response.json());
  return accessToken;
}

/** Exchange the refresh cookie for a new access token (one at a time, across tabs too). */
export function refresh() {
  if (!refreshing) {
    const run = navigator.locks ? navigator.locks.request('fleet-refresh', refreshOnce) : refreshOnce();
    refreshing = run.finally(() => { refreshing = null; });
  }
  return refreshing;
}

export function token() { return accessToken; }
export function user() { return currentUser; }
export function onToken(listener) { tokenListeners.add(listener); }

/** Sign in with e-mail and password; answers the user. */
export async function login(email, password) {
  const response = await fetch('/auth/login', {
    method: 'POST',
    credentials: 'same-origin',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ email, password }),
  });
  if (!response.ok) throw await errorOf(response);
  adopt(await response.json());
  return currentUser;
}

export async function logout() {
  clearTimeout(refreshTimer);
  try {
    await fetch('/auth/logout', {
      method: 'POST',
      credentials: 'same-origin',
      headers: accessToken ? { Authorization: `Bearer ${accessToken}` } : {},
    });
  } finally {
    accessToken = null;
    currentUser = null;
    window.location.assign('/ui/login');
  }
}

function signedOut() {
  accessToken = null;
  const next = encodeURIComponent(window.location.pathname + window.location.search + window.location.hash);
  window.location.assign(`/ui/login?next=${next}`);
}

/** Call the API as the signed-in user; JSON in and out. A refused token is renewed once. */
export async function api(path, { method = 'GET', body, retry = true } = {}) {
  const headers = { Accept: 'application/json' };
  if (accessToken) headers.Authorization = `Bearer ${accessToken}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(path, {
    method, headers, credentials: 'same-origin', body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 401 && retry) {
    try { await refresh(); } catch { signedOut(); throw await errorOf(response); }
    return api(path, { method, body, retry: false });
  }
  if (!response.ok) {
    const error = await errorOf(response);
    if (error.code === 'pending_approval') window.location.assign('/ui/pending');
    if (response.status === 401) signedOut();
    throw error;
  }
  if (response.status === 204) return null;
  return response.json();
}

/**
 * Start a page that needs a signed-in user: renew the session from the cookie (so a reload keeps it),
 * send a pending account to its waiting page, fill the header. Answers the user (active).
 */
export async function requireSession({ superuser = false } = {}) {
  setupLanguageSwitch();
  try {
    await refresh();
  } catch {
    signedOut();
    return new Promise(() => {}); // the page is being left
  }
  if (currentUser.status === 'pending') {
    window.location.assign('/ui/pending');
    return new Promise(() => {});
  }
  if (superuser && currentUser.role !== 'superuser') {
    window.location.assign('/ui/');
    return new Promise(() => {});
  }
  fillHeader();
  return currentUser;
}

export function fillHeader() {
  const email = document.getElementById('user-email');
  if (email && currentUser) email.textContent = currentUser.email;
  const admin = document.getElementById('nav-admin');
  if (admin) admin.hidden = !(currentUser && currentUser.role === 'superuser');
  const button = document.getElementById('logout');
  if (button) {
    button.hidden = !currentUser;
    if (!button.dataset.wired) button.addEventListener('click', () => logout());
    button.dataset.wired = '1';
  }
}

export { config };
