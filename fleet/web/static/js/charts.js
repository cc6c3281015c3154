// Time-series charts (uPlot) of position fields and channels, from the downsampled history endpoints.
/* global uPlot */

import { el, t } from './core.js';

const PALETTE = ['#0b5cad', '#1a7f37', '#b35900', '#8250df', '#d1242f', '#0a7b83'];

/** A bucket size that gives at most ~`points` points over `seconds` (the API's `bucket` syntax). */
export function bucketFor(seconds, points = 600) {
  const steps = [[5, '5s'], [10, '10s'], [30, '30s'], [60, '1m'], [120, '2m'], [300, '5m'], [900, '15m'], [1800, '30m'], [3600, '1h'], [10800, '3h'], [21600, '6h'], [86400, '1d']];
  for (const [size, label] of steps) if (seconds / size <= points) return label;
  return '1d';
}

function chart(container, title, unit, times, series) {
  const box = el('figure', { class: 'chart' }, el('figcaption', {}, unit ? `${title} (${unit})` : title));
  container.append(box);
  const width = Math.max(260, box.clientWidth - 4);
  const options = {
    width,
    height: 180,
    series: [{}, ...series.map((s, i) => ({ label: s.label, stroke: PALETTE[i % PALETTE.length], width: 1.5, spanGaps: false }))],
    axes: [{}, { size: 60 }],
    scales: { x: { time: true } },
    legend: { live: true },
  };
  // uPlot formats time in the browser's time zone by default.
  return new uPlot(options, [times, ...series.map((s) => s.values)], box);
}

/** Draw the charts for one period: positions (speed, altitude) and every channel with data. */
export function drawCharts(container, positions, measurements) {
  for (const plot of container.querySelectorAll('.chart')) plot.remove();
  const drawn = [];
  if (positions.length) {
    const times = positions.map((row) => new Date(row.time).getTime() / 1000);
    drawn.push(chart(container, t('chart.speed'), t('unit.kmh'), times, [
      { label: t('chart.speed_avg'), values: positions.map((row) => row.speed) },
      { label: t('chart.speed_max'), values: positions.map((row) => row.max_speed ?? row.speed) },
    ]));
    if (positions.some((row) => row.altitude != null)) {
      drawn.push(chart(container, t('chart.altitude'), 'm', times, [{ label: t('chart.altitude'), values: positions.map((row) => row.altitude) }]));
    }
  }
  const byChannel = new Map();
  for (const row of measurements.items) {
    if (!byChannel.has(row.channel_id)) byChannel.set(row.channel_id, []);
    byChannel.get(row.channel_id).push(row);
  }
  for (const channel of measurements.channels || []) {
    const rows = byChannel.get(channel.channel_id);
    if (!rows || !rows.length) continue;
    const times = rows.map((row) => new Date(row.time).getTime() / 1000);
    drawn.push(chart(container, channel.name || `#${channel.channel_id}`, channel.unit, times, [
      { label: t('chart.avg'), values: rows.map((row) => row.value) },
      { label: t('chart.min'), values: rows.map((row) => row.min ?? row.value) },
      { label: t('chart.max'), values: rows.map((row) => row.max ?? row.value) },
    ]));
  }
  container.dataset.charts = String(drawn.length);
  return drawn;
}
