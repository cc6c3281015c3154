// Sign-in page: password form (the Google button is a plain link to /auth/google).

import { errorText, setupLanguageSwitch, t } from './core.js';
import { login, refresh, user } from './session.js';

setupLanguageSwitch();

// Where a signed-in reader may be sent back to: our pages, and Grafana's sign-in (docs/OBSERVABILITY.md),
// never another site.
const NEXT_PREFIXES = ['/ui/', '/auth/grafana/login?', '/grafana/'];

function destination() {
  const next = new URLSearchParams(window.location.search).get('next') || '/ui/';
  return NEXT_PREFIXES.some((prefix) => next.startsWith(prefix)) && !next.includes('\\') ? next : '/ui/';
}

function go(account) {
  window.location.assign(account.status === 'pending' ? '/ui/pending' : destination());
}

const form = document.getElementById('login-form');
const error = document.getElementById('login-error');

form.addEventListener('submit', async (event) => {
  event.preventDefault();
  error.hidden = true;
  const email = form.elements.email.value.trim();
  const password = form.elements.password.value;
  if (!email || !password) {
    error.textContent = t('login.missing');
    error.hidden = false;
    return;
  }
  const button = form.querySelector('button[type=submit]');
  button.disabled = true;
  try {
    go(await login(email, password));
  } catch (failure) {
    error.textContent = errorText(failure);
    error.hidden = false;
    form.elements.password.select();
  } finally {
    button.disabled = false;
  }
});

// Already signed in (a live refresh cookie)? Go straight on.
refresh().then(() => go(user())).catch(() => form.elements.email.focus());
