// Admin page (superusers): registrations, users, vehicles and their owners, trackers, the audit log.
// Every action is one API call (the server audits it); the tables reload after each change.

import { el, errorText, formatTime, notify, statusLabel, t } from './core.js';
import { api, requireSession, user } from './session.js';

const AUDIT_PAGE = 50;
let auditOffset = 0;
let vehicles = [];
let users = [];

function button(label, handler, attributes = {}) {
  const node = el('button', { type: 'button', ...attributes }, label);
  node.addEventListener('click', async () => {
    node.disabled = true;
    try { await handler(); } catch (error) { notify(errorText(error), 'error'); } finally { node.disabled = false; }
  });
  return node;
}

function empty(columns) {
  return el('tr', {}, el('td', { colspan: columns, class: 'empty' }, t('common.none')));
}

async function loadPending() {
  const page = await api('/admin/users/pending?limit=100');
  const body = document.querySelector('#pending-table tbody');
  body.replaceChildren(...(page.items.length ? page.items.map((item) => el('tr', { dataset: { email: item.email } },
    el('td', {}, item.email), el('td', {}, item.name || '—'), el('td', {}, formatTime(item.created_at)),
    el('td', { class: 'actions' },
      button(t('admin.approve'), () => act(`/admin/users/${item.id}/approve`, 'admin.approved', item.email), { class: 'primary', 'aria-label': `${t('admin.approve')} ${item.email}` }),
      button(t('admin.reject'), () => act(`/admin/users/${item.id}/reject`, 'admin.rejected', item.email), { 'aria-label': `${t('admin.reject')} ${item.email}` })))) : [empty(4)]));
}

async function act(path, message, subject, body) {
  await api(path, { method: 'POST', body });
  notify(t(message, { subject }));
  await Promise.all([loadPending(), loadUsers(), loadAudit()]);
}

async function loadUsers() {
  const status = document.getElementById('users-status').value;
  const page = await api(`/admin/users?limit=1000${status ? `&status=${status}` : ''}`);
  if (!status) users = page.items;
  const me = user();
  const body = document.querySelector('#users-table tbody');
  body.replaceChildren(...(page.items.length ? page.items.map((item) => el('tr', { dataset: { email: item.email, status: item.status } },
    el('td', {}, item.email), el('td', {}, t(`role.${item.role}`)), el('td', {}, t(`user.${item.status}`)), el('td', {}, formatTime(item.last_login_at)),
    el('td', { class: 'actions' },
      item.id === me.user_id || item.id === me.id ? null
        : item.status === 'blocked'
          ? button(t('admin.unblock'), () => act(`/admin/users/${item.id}/unblock`, 'admin.unblocked', item.email))
          : button(t('admin.block'), async () => {
            if (window.confirm(t('admin.confirm_block', { email: item.email }))) await act(`/admin/users/${item.id}/block`, 'admin.blocked', item.email);
          })))) : [empty(5)]));
}

function vehicleOptions(select, withNone) {
  const options = vehicles.map((vehicle) => el('option', { value: vehicle.id }, `${vehicle.name} (#${vehicle.id})`));
  select.replaceChildren(...(withNone ? [el('option', { value: '' }, t('admin.no_vehicle'))] : []), ...options);
}

/** Vehicles first, then trackers: the trackers' link menus list the vehicles. */
async function reloadFleet() {
  await loadVehicles();
  await loadTrackers();
  await loadAudit(); // the change just made is at its top
}

async function loadVehicles() {
  const all = [];
  for (let offset = 0; ; offset += 1000) {
    const page = await api(`/vehicles?limit=1000&offset=${offset}`);
    all.push(...page.items);
    if (!page.has_more) break;
  }
  vehicles = all;
  vehicleOptions(document.getElementById('as-vehicle'), false);
  vehicleOptions(document.getElementById('tf-vehicle'), true);
  const body = document.querySelector('#vehicles-table tbody');
  body.replaceChildren(...(vehicles.length ? vehicles.map((vehicle) => el('tr', { dataset: { id: vehicle.id } },
    el('td', {}, String(vehicle.id)),
    el('td', {}, el('a', { href: `/ui/vehicles/${vehicle.id}` }, vehicle.name)),
    el('td', {}, statusLabel(vehicle.status)),
    el('td', {}, (vehicle.devices || []).map((device) => device.imei).join(', ') || '—'),
    el('td', { class: 'actions' },
      button(t('admin.edit'), () => editVehicle(vehicle)),
      button(t('admin.delete'), async () => {
        if (!window.confirm(t('admin.confirm_delete', { name: vehicle.name }))) return;
        await api(`/admin/vehicles/${vehicle.id}`, { method: 'DELETE' });
        notify(t('admin.deleted', { subject: vehicle.name }));
        await reloadFleet();
      })))) : [empty(5)]));
}

const vehicleForm = document.getElementById('vehicle-form');

function editVehicle(vehicle) {
  vehicleForm.elements.id.value = vehicle.id;
  vehicleForm.elements.name.value = vehicle.name;
  vehicleForm.elements.vpn_ip.value = vehicle.vpn_ip || '';
  vehicleForm.elements.api_port.value = vehicle.api_port || '';
  vehicleForm.elements.api_key.value = '';
  document.getElementById('vf-submit').textContent = t('admin.vehicle_save');
  document.getElementById('vf-cancel').hidden = false;
  vehicleForm.elements.name.focus();
}

function resetVehicleForm() {
  vehicleForm.reset();
  vehicleForm.elements.id.value = '';
  document.getElementById('vf-submit').textContent = t('admin.vehicle_create');
  document.getElementById('vf-cancel').hidden = true;
}

vehicleForm.addEventListener('submit', async (event) => {
  event.preventDefault();
  const form = vehicleForm.elements;
  const body = { name: form.name.value.trim() };
  if (form.vpn_ip.value.trim()) body.vpn_ip = form.vpn_ip.value.trim();
  if (form.api_port.value) body.api_port = Number(form.api_port.value);
  try {
    if (form.id.value) {
      await api(`/admin/vehicles/${form.id.value}`, { method: 'PATCH', body });
      if (form.api_key.value) await api(`/admin/vehicles/${form.id.value}/api-key`, { method: 'POST', body: { api_key: form.api_key.value } });
      notify(t('admin.saved', { subject: body.name }));
    } else {
      if (form.api_key.value) body.api_key = form.api_key.value;
      await api('/admin/vehicles', { method: 'POST', body });
      notify(t('admin.created', { subject: body.name }));
    }
    resetVehicleForm();
    await reloadFleet();
  } catch (error) {
    notify(errorText(error), 'error');
  }
});
document.getElementById('vf-cancel').addEventListener('click', resetVehicleForm);

const assignForm = document.getElementById('assign-form');
assignForm.addEventListener('submit', async (event) => {
  event.preventDefault();
  const vehicleId = assignForm.elements.vehicle_id.value;
  const email = assignForm.elements.email.value.trim();
  try {
    await api(`/admin/vehicles/${vehicleId}/assign`, { method: 'POST', body: { email } });
    notify(t('admin.assigned', { subject: email }));
    await loadAudit();
  } catch (error) {
    notify(errorText(error), 'error');
  }
});
document.getElementById('as-revoke').addEventListener('click', async () => {
  const vehicleId = assignForm.elements.vehicle_id.value;
  const email = assignForm.elements.email.value.trim().toLowerCase();
  const target = users.find((item) => item.email.toLowerCase() === email);
  if (!target) {
    notify(t('admin.no_such_user', { email }), 'error');
    return;
  }
  try {
    await api(`/admin/vehicles/${vehicleId}/access/${target.id}`, { method: 'DELETE' });
    notify(t('admin.revoked', { subject: email }));
    await loadAudit();
  } catch (error) {
    notify(errorText(error), 'error');
  }
});

async function loadTrackers() {
  const body = document.querySelector('#trackers-table tbody');
  let page;
  try {
    page = await api('/admin/devices?limit=1000');
  } catch (error) {
    body.replaceChildren(el('tr', {}, el('td', { colspan: 5, class: 'empty' }, errorText(error))));
    return;
  }
  const names = new Map(vehicles.map((vehicle) => [vehicle.id, vehicle.name]));
  body.replaceChildren(...(page.items.length ? page.items.map((device) => {
    const linkTo = el('select', { 'aria-label': t('admin.link_to', { imei: device.imei }) }, ...vehicles.map((vehicle) => el('option', { value: vehicle.id }, vehicle.name)));
    return el('tr', { dataset: { imei: device.imei } },
      el('td', {}, device.imei), el('td', {}, device.protocol || '—'),
      el('td', {}, device.vehicle_id ? device.vehicle_name || names.get(device.vehicle_id) || `#${device.vehicle_id}` : t('admin.no_vehicle')),
      el('td', {}, formatTime(device.last_seen_at || device.last_connected_at)),
      el('td', { class: 'actions' },
        linkTo,
        button(t('admin.link'), () => linkTracker(device, Number(linkTo.value), false)),
        device.vehicle_id ? button(t('admin.unlink'), async () => {
          await api(`/admin/devices/${device.id}/unlink`, { method: 'POST' });
          notify(t('admin.unlinked', { subject: device.imei }));
          await reloadFleet();
        }) : null,
        button(t('admin.delete'), async () => {
          if (!window.confirm(t('admin.confirm_delete', { name: device.imei }))) return;
          await api(`/admin/devices/${device.id}`, { method: 'DELETE' });
          await reloadFleet();
        })));
  }) : [empty(5)]));
}

async function linkTracker(device, vehicleId, move) {
  try {
    await api(`/admin/devices/${device.id}/link`, { method: 'POST', body: { vehicle_id: vehicleId, move } });
  } catch (error) {
    if (error.code === 'device_linked_elsewhere' && !move && window.confirm(t('admin.confirm_move', { imei: device.imei }))) {
      await linkTracker(device, vehicleId, true);
      return;
    }
    throw error;
  }
  notify(t('admin.linked', { subject: device.imei }));
  await reloadFleet();
}

const trackerForm = document.getElementById('tracker-form');
trackerForm.addEventListener('submit', async (event) => {
  event.preventDefault();
  const form = trackerForm.elements;
  const body = { imei: form.imei.value.trim(), protocol: form.protocol.value };
  if (form.vehicle_id.value) body.vehicle_id = Number(form.vehicle_id.value);
  try {
    await api('/admin/devices', { method: 'POST', body });
    notify(t('admin.created', { subject: body.imei }));
    trackerForm.reset();
    await reloadFleet();
  } catch (error) {
    notify(errorText(error), 'error');
  }
});

async function loadAudit() {
  const form = document.getElementById('audit-form').elements;
  const query = new URLSearchParams({ limit: String(AUDIT_PAGE), offset: String(auditOffset) });
  if (form.action.value.trim()) query.set('action', form.action.value.trim());
  if (form.actor.value.trim()) query.set('actor', form.actor.value.trim());
  const page = await api(`/api/audit?${query}`);
  const body = document.querySelector('#audit-table tbody');
  body.replaceChildren(...(page.items.length ? page.items.map((entry) => el('tr', { dataset: { action: entry.action } },
    el('td', {}, formatTime(entry.time)), el('td', {}, entry.actor_email || (entry.actor_id ? `#${entry.actor_id}` : '—')),
    el('td', {}, entry.action), el('td', {}, entry.target || '—'),
    el('td', {}, el('code', {}, JSON.stringify(entry.details || {}))), el('td', {}, entry.client_addr || '—'))) : [empty(6)]));
  document.getElementById('audit-page').textContent = t('admin.page_of', { from: page.total ? auditOffset + 1 : 0, to: auditOffset + page.items.length, total: page.total });
  document.getElementById('audit-prev').disabled = auditOffset === 0;
  document.getElementById('audit-next').disabled = !page.has_more;
}

document.getElementById('audit-form').addEventListener('submit', (event) => {
  event.preventDefault();
  auditOffset = 0;
  loadAudit().catch((error) => notify(errorText(error), 'error'));
});
document.getElementById('audit-prev').addEventListener('click', () => { auditOffset = Math.max(0, auditOffset - AUDIT_PAGE); loadAudit(); });
document.getElementById('audit-next').addEventListener('click', () => { auditOffset += AUDIT_PAGE; loadAudit(); });
document.getElementById('users-status').addEventListener('change', () => loadUsers());

async function main() {
  await requireSession({ superuser: true });
  const steps = [loadPending, loadUsers, reloadFleet];
  await Promise.all(steps.map((step) => step().catch((error) => notify(errorText(error), 'error'))));
  document.body.dataset.ready = '1';
}

main();
