// Fleet page: every visible vehicle in a list and on a clustered map, moving live over /ws/fleet.
//
// Loading is a fixed handful of requests whatever the fleet size: the vehicle list in pages of 1,000
// (fetched in parallel) and all last positions in one `GET /vehicles/latest-positions`.
/* global L */

import { el, errorText, formatAgo, formatTime, notify, statusLabel, t } from './core.js';
import { LiveStream, showLiveState } from './live.js';
import { FleetLayer, createMap } from './map.js';
import { api, requireSession } from './session.js';

const PAGE = 1000;
const LIST_LIMIT = 300; // rows drawn in the side list; the search narrows the rest
const vehicles = new Map(); // id → vehicle (from GET /vehicles) with `position` added

const mapElement = document.getElementById('fleet-map');
const map = createMap(mapElement);
let lastLive = null; // the newest live position, shown on the map element after each draw (tests read it)
const layer = new FleetLayer(map, {
  onSelect: showPopup,
  afterDraw: () => {
    if (lastLive) mapElement.dataset.lastPosition = `${lastLive.vehicle_id}:${lastLive.latitude},${lastLive.longitude}`;
  },
});
const search = document.getElementById('fleet-search');
const statusFilter = document.getElementById('fleet-status');
const list = document.getElementById('fleet-list');

async function loadVehicles() {
  const first = await api(`/vehicles?limit=${PAGE}&offset=0`);
  const pages = [first];
  const rest = [];
  for (let offset = PAGE; offset < first.total; offset += PAGE) rest.push(api(`/vehicles?limit=${PAGE}&offset=${offset}`));
  pages.push(...(await Promise.all(rest)));
  for (const page of pages) for (const vehicle of page.items) vehicles.set(vehicle.id, vehicle);
}

async function loadPositions() {
  try {
    const answer = await api('/vehicles/latest-positions');
    for (const item of answer.items) {
      const vehicle = vehicles.get(item.vehicle_id);
      if (!vehicle) continue;
      vehicle.position = item;
      layer.set(item.vehicle_id, item.latitude, item.longitude, vehicle.status);
    }
  } catch (error) {
    // A server without the bulk endpoint reads the path as /vehicles/{id} (422) or does not know it (404).
    const missing = error.status === 404 || error.status === 422;
    notify(`${t('fleet.positions_failed')}: ${missing ? t('error.not_available') : errorText(error)}`, 'error');
  }
}

function matches(vehicle, query, status) {
  if (status && vehicle.status !== status) return false;
  if (!query) return true;
  if (vehicle.name.toLowerCase().includes(query) || String(vehicle.id) === query) return true;
  return (vehicle.devices || []).some((device) => device.imei.includes(query));
}

function applyFilter() {
  const query = search.value.trim().toLowerCase();
  const status = statusFilter.value;
  const shown = [];
  const ids = new Set();
  for (const vehicle of vehicles.values()) {
    if (!matches(vehicle, query, status)) continue;
    ids.add(vehicle.id);
    if (shown.length < LIST_LIMIT) shown.push(vehicle);
  }
  layer.filter(query || status ? ids : null);
  renderList(shown, ids.size);
}

function row(vehicle) {
  return el('li', { class: 'vehicle-row', dataset: { id: vehicle.id, status: vehicle.status } },
    el('span', { class: 'status-dot', dataset: { status: vehicle.status }, title: statusLabel(vehicle.status) }),
    el('a', { href: `/ui/vehicles/${vehicle.id}`, class: 'vehicle-name' }, vehicle.name),
    el('span', { class: 'visually-hidden' }, statusLabel(vehicle.status)),
    el('span', { class: 'activity', title: formatTime(vehicle.last_activity_at) }, formatAgo(vehicle.last_activity_at)),
    vehicle.position ? null : el('span', { class: 'no-position' }, t('fleet.no_position')));
}

function renderList(shown, matching) {
  list.replaceChildren(...shown.map(row));
  const counts = { online: 0, offline: 0, unknown: 0 };
  for (const vehicle of vehicles.values()) counts[vehicle.status] = (counts[vehicle.status] || 0) + 1;
  document.getElementById('fleet-summary').textContent = t('fleet.summary', {
    total: vehicles.size, online: counts.online, offline: counts.offline, unknown: counts.unknown, shown: matching,
  });
  const more = document.getElementById('fleet-more');
  more.hidden = matching <= shown.length;
  more.textContent = t('fleet.more', { count: matching - shown.length });
}

function showPopup(id, latlng) {
  const vehicle = vehicles.get(id);
  if (!vehicle) return;
  const position = vehicle.position || {};
  const content = el('div', { class: 'popup' },
    el('a', { href: `/ui/vehicles/${id}`, class: 'vehicle-name' }, vehicle.name),
    el('div', {}, statusLabel(vehicle.status), ' · ', formatAgo(vehicle.last_activity_at)),
    position.time ? el('div', {}, formatTime(position.time), position.speed != null ? ` · ${Math.round(position.speed)} ${t('unit.kmh')}` : '') : null);
  L.popup().setLatLng(latlng).setContent(content).openOn(map);
}

function onPosition(message) {
  const vehicle = vehicles.get(message.vehicle_id);
  if (!vehicle) return; // granted while connected: shown after the next reload
  vehicle.position = message; // last activity is the server's word (status messages), not the fix time
  layer.set(message.vehicle_id, message.latitude, message.longitude, vehicle.status);
  lastLive = message;
}

function onLive(message) {
  if (message.type === 'position') {
    onPosition(message);
    layer.schedule();
  } else if (message.type === 'positions' && Array.isArray(message.items)) {
    // A batch of position messages in one frame, should the stream offer it: one task instead of many.
    for (const item of message.items) onPosition(item);
    layer.schedule();
  } else if (message.type === 'status') {
    const vehicle = vehicles.get(message.vehicle_id);
    if (!vehicle) return;
    vehicle.status = message.state;
    if (message.last_activity_at) vehicle.last_activity_at = message.last_activity_at;
    layer.setStatus(message.vehicle_id, message.state);
    layer.schedule();
    scheduleList();
  }
}

let listTimer = null;
function scheduleList() {
  if (!listTimer) listTimer = setTimeout(() => { listTimer = null; applyFilter(); }, 2000);
}

async function main() {
  await requireSession();
  performance.mark('fleet-session');
  try {
    await loadVehicles();
    await loadPositions();
  } catch (error) {
    notify(errorText(error), 'error');
  }
  layer.fit();
  applyFilter();
  // Signal (for people measuring, and for tests) once every marker is on the canvas.
  requestAnimationFrame(() => {
    performance.mark('fleet-markers-rendered');
    document.getElementById('fleet-map').dataset.rendered = '1';
  });
  const indicator = document.getElementById('live-indicator');
  new LiveStream('/ws/fleet', { onMessage: onLive, onState: (state) => showLiveState(indicator, state, t) }).start();
  search.addEventListener('input', () => applyFilter());
  statusFilter.addEventListener('change', () => applyFilter());
  document.getElementById('fleet-filters').addEventListener('submit', (event) => event.preventDefault());
  setInterval(scheduleList, 30_000); // keep "n minutes ago" current
}

main();
