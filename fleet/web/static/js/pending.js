// "Awaiting approval": a pending owner waits here; the check button (and a timer) looks again.

import { setupLanguageSwitch, t, notify } from './core.js';
import { fillHeader, refresh, user } from './session.js';

setupLanguageSwitch();

async function check(manual) {
  try {
    await refresh();
  } catch {
    window.location.assign('/ui/login');
    return;
  }
  fillHeader();
  const account = user();
  document.getElementById('pending-email').textContent = account.email;
  if (account.status === 'active') window.location.assign('/ui/');
  else if (manual) notify(t('pending.still'));
}

document.getElementById('pending-check').addEventListener('click', () => check(true));
check(false);
setInterval(() => check(false), 60_000);
