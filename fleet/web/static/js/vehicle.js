// Vehicle page: live values over the vehicle's WebSocket, the track with replay, charts, alarms, events,
// and (for a superuser) the trackers' last raw frames.
/* global L */

import { bucketFor, drawCharts } from './charts.js';
import { config, el, errorText, formatAgo, formatNumber, formatTime, notify, statusLabel, t } from './core.js';
import { LiveStream, showLiveState } from './live.js';
import { createMap } from './map.js';
import { api, requireSession } from './session.js';
import { TrackView } from './track.js';

const id = config.vehicle_id;
const map = createMap(document.getElementById('vehicle-map'), { zoom: 6 });
const track = new TrackView(map, {
  play: document.getElementById('replay-play'),
  slider: document.getElementById('replay-slider'),
  speed: document.getElementById('replay-speed'),
  time: document.getElementById('replay-time'),
});
const liveMarker = L.circleMarker([0, 0], { radius: 9, color: '#fff', weight: 3, fillColor: '#1a7f37', fillOpacity: 1 });
const liveButton = document.getElementById('live-button');
const indicator = document.getElementById('live-indicator');
let following = true;
let vehicle = null;
const channelRows = new Map();
const TRACK_POINTS = 20000;

function setStatus(state, lastActivity) {
  const badge = document.getElementById('vehicle-status');
  badge.dataset.status = state;
  badge.textContent = statusLabel(state);
  if (lastActivity !== undefined) {
    document.getElementById('vehicle-activity').textContent = `${t('vehicle.last_activity')}: ${formatTime(lastActivity)} (${formatAgo(lastActivity)})`;
  }
}

const POSITION_FIELDS = [
  ['time', 'field.time'], ['latitude', 'field.latitude'], ['longitude', 'field.longitude'], ['speed', 'field.speed'],
  ['course', 'field.course'], ['altitude', 'field.altitude'], ['satellites', 'field.satellites'], ['valid', 'field.valid'],
];

function showPosition(position) {
  if (!position) return;
  const list = document.getElementById('position-values');
  const units = { speed: t('unit.kmh'), altitude: 'm', course: '°' };
  list.replaceChildren(...POSITION_FIELDS.flatMap(([key, label]) => {
    let value = position[key];
    if (key === 'time') value = formatTime(value);
    else if (key === 'valid') value = value == null ? '—' : value ? t('common.yes') : t('common.no');
    else value = formatNumber(value, units[key]);
    return [el('dt', {}, t(label)), el('dd', { dataset: { field: key } }, value)];
  }));
  if (typeof position.latitude === 'number' && typeof position.longitude === 'number') {
    liveMarker.setLatLng([position.latitude, position.longitude]).addTo(map);
    if (following) map.setView([position.latitude, position.longitude], Math.max(map.getZoom(), 13), { animate: false });
  }
}

function showValues(items) {
  const body = document.querySelector('#channel-values tbody');
  for (const item of items) {
    let cells = channelRows.get(item.channel_id);
    if (!cells) {
      cells = { value: el('td', { dataset: { channel: item.name } }), time: el('td') };
      body.append(el('tr', {}, el('th', { scope: 'row' }, item.name || `#${item.channel_id}`), cells.value, cells.time));
      channelRows.set(item.channel_id, cells);
    }
    cells.value.textContent = formatNumber(item.value, item.unit);
    cells.time.textContent = formatTime(item.time);
  }
}

function alarmItem(alarm) {
  const when = alarm.time || alarm.raised_at;
  return el('li', { class: 'alarm', dataset: { active: String(alarm.active !== false), severity: alarm.severity ?? alarm.level ?? '' } },
    el('strong', {}, alarm.message || alarm.code || t('vehicle.alarm')),
    el('span', { class: 'meta' }, alarm.source ? `${formatTime(when)} · ${t(`source.${alarm.source}`)}` : formatTime(when)));
}

function eventItem(event) {
  const details = event.details && Object.keys(event.details).length ? JSON.stringify(event.details) : '';
  const kind = t(`event.${event.kind}`) === `event.${event.kind}` ? event.kind : t(`event.${event.kind}`);
  const where = typeof event.latitude === 'number' ? ` · ${formatNumber(event.latitude)}, ${formatNumber(event.longitude)}` : '';
  return el('li', { class: 'event', dataset: { kind: event.kind } },
    el('strong', {}, event.description ? `${kind}: ${event.description}` : kind),
    el('span', { class: 'meta' }, `${formatTime(event.time)}${where}`),
    details ? el('code', {}, details.length > 200 ? `${details.slice(0, 200)}…` : details) : null);
}

function onLive(message) {
  switch (message.type) {
    case 'hello':
      setStatus(message.status?.state || 'unknown', message.status?.last_activity_at ?? null);
      showPosition(message.last_position);
      showValues(message.values || []);
      break;
    case 'position':
      showPosition(message);
      // The live trail grows on a period that ends now (not on a chosen past one).
      if (following && document.getElementById('period-preset').value !== 'custom') track.append(message);
      document.getElementById('vehicle-activity').dataset.lastUpdate = message.time;
      break;
    case 'values':
      showValues(message.values || []);
      break;
    case 'status':
      setStatus(message.state, message.last_activity_at);
      break;
    case 'alarm':
      prepend('alarm-list', alarmItem(message));
      break;
    case 'event':
      prepend('event-list', eventItem(message));
      break;
    default:
      break;
  }
}

function prepend(listId, item) {
  const list = document.getElementById(listId);
  list.querySelector('.empty')?.remove();
  list.prepend(item);
  while (list.children.length > 50) list.lastElementChild.remove();
}

function fillList(listId, items, render) {
  const list = document.getElementById(listId);
  list.replaceChildren(...(items.length ? items.map(render) : [el('li', { class: 'empty' }, t('common.none'))]));
}

async function loadAlarmsAndEvents() {
  try {
    const alarms = await api(`/vehicles/${id}/alarms?limit=50`);
    fillList('alarm-list', alarms.items, alarmItem);
  } catch (error) {
    fillList('alarm-list', [], alarmItem);
    notify(errorText(error), 'error');
  }
  try {
    const events = await api(`/vehicles/${id}/events?limit=50`);
    fillList('event-list', events.items, eventItem);
  } catch (error) {
    document.getElementById('event-list').replaceChildren(el('li', { class: 'empty' }, errorText(error)));
  }
}

function period() {
  const preset = document.getElementById('period-preset').value;
  if (preset !== 'custom') {
    const to = new Date();
    return { from: new Date(to.getTime() - Number(preset) * 3600_000), to };
  }
  const from = new Date(document.getElementById('period-from').value);
  const to = new Date(document.getElementById('period-to').value);
  if (Number.isNaN(from.getTime()) || Number.isNaN(to.getTime()) || from >= to) return null;
  return { from, to };
}

async function loadHistory() {
  const span = period();
  if (!span) {
    notify(t('period.invalid'), 'error');
    return;
  }
  const seconds = (span.to - span.from) / 1000;
  const range = `from=${encodeURIComponent(span.from.toISOString())}&to=${encodeURIComponent(span.to.toISOString())}`;
  const chartBucket = bucketFor(seconds);
  try {
    const [raw, chartPositions, measurements] = await Promise.all([
      api(`/vehicles/${id}/positions?${range}&limit=${TRACK_POINTS}`),
      api(`/vehicles/${id}/positions?${range}&bucket=${chartBucket}&limit=5000`),
      api(`/vehicles/${id}/measurements?${range}&bucket=${chartBucket}&limit=100000`),
    ]);
    // The replay wants every fix; a period with more than TRACK_POINTS of them is downsampled instead.
    const positions = raw.has_more
      ? await api(`/vehicles/${id}/positions?${range}&bucket=${bucketFor(seconds, TRACK_POINTS)}&limit=${TRACK_POINTS}`)
      : raw;
    following = false;
    liveButton.setAttribute('aria-pressed', 'false');
    track.show(positions.items);
    drawCharts(document.getElementById('charts'), chartPositions.items, measurements);
    document.getElementById('charts-note').textContent = t('chart.bucket', { bucket: chartBucket });
  } catch (error) {
    notify(errorText(error), 'error');
  }
}

async function loadRawFrames() {
  const panel = document.getElementById('raw-panel');
  const body = document.querySelector('#raw-frames tbody');
  panel.hidden = false;
  const rows = [];
  for (const device of vehicle.devices || []) {
    try {
      const page = await api(`/api/v2/devices/${device.id}/raw-frames?limit=20`);
      for (const frame of page.items) rows.push({ ...frame, imei: device.imei });
    } catch (error) {
      notify(errorText(error), 'error');
    }
  }
  rows.sort((a, b) => (a.received_at < b.received_at ? 1 : -1));
  body.replaceChildren(...(rows.length ? rows.map((frame) => el('tr', { dataset: { outcome: frame.outcome } },
    el('td', {}, formatTime(frame.received_at)),
    el('td', {}, frame.imei),
    el('td', {}, frame.frame_type || '—'),
    el('td', {}, frame.error ? `${frame.outcome}: ${frame.error}` : frame.outcome),
    el('td', {}, String(frame.size)),
    el('td', { class: 'hex' }, el('code', {}, frame.data_hex)))) : [el('tr', {}, el('td', { colspan: 6 }, t('common.none')))]));
}

function goLive(recentre = true) {
  following = true;
  track.hideCursor();
  liveButton.setAttribute('aria-pressed', 'true');
  if (!recentre) return;
  const at = liveMarker.getLatLng();
  if (map.hasLayer(liveMarker) && at) map.setView(at, Math.max(map.getZoom(), 13), { animate: false });
}

async function main() {
  const me = await requireSession();
  try {
    const status = await api(`/vehicles/${id}/status`);
    vehicle = status.vehicle;
    document.getElementById('vehicle-name').textContent = vehicle.name;
    document.title = `${vehicle.name} · ${t('app.name')}`;
    setStatus(status.status, vehicle.last_activity_at);
    showPosition(status.last_position);
  } catch (error) {
    document.getElementById('vehicle-name').textContent = error.status === 404 ? t('vehicle.not_found') : errorText(error);
    return;
  }
  new LiveStream(`/ws/vehicles/${id}/live`, { onMessage: onLive, onState: (state) => showLiveState(indicator, state, t) }).start();
  liveButton.addEventListener('click', () => goLive());
  const leaveLive = () => { following = false; liveButton.setAttribute('aria-pressed', 'false'); };
  document.getElementById('replay-play').addEventListener('click', leaveLive);
  document.getElementById('replay-slider').addEventListener('input', leaveLive);
  document.getElementById('period-preset').addEventListener('change', (event) => {
    for (const field of document.querySelectorAll('.custom-range')) field.hidden = event.target.value !== 'custom';
  });
  document.getElementById('period-form').addEventListener('submit', (event) => { event.preventDefault(); loadHistory(); });
  await Promise.all([loadAlarmsAndEvents(), loadHistory()]);
  goLive(false); // live from the start, with the day's track in view until the next fix arrives
  if (me.role === 'superuser') await loadRawFrames();
}

main();
