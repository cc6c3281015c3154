// Registration page: creates a pending owner account, then signs in to show the waiting page.

import { errorText, setupLanguageSwitch, t } from './core.js';
import { login } from './session.js';

setupLanguageSwitch();

const form = document.getElementById('register-form');
const error = document.getElementById('register-error');

form.addEventListener('submit', async (event) => {
  event.preventDefault();
  error.hidden = true;
  const email = form.elements.email.value.trim();
  const password = form.elements.password.value;
  const name = form.elements.name.value.trim();
  if (!email || password.length < 8) {
    error.textContent = t('register.invalid');
    error.hidden = false;
    return;
  }
  const button = form.querySelector('button[type=submit]');
  button.disabled = true;
  try {
    const response = await fetch('/auth/register', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(name ? { email, password, name } : { email, password }),
    });
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      throw Object.assign(new Error(), body.error || {}, { status: response.status });
    }
    await login(email, password);
    window.location.assign('/ui/pending');
  } catch (failure) {
    error.textContent = errorText(failure);
    error.hidden = false;
  } finally {
    button.disabled = false;
  }
});
