// The vehicle's track for a period, and its replay: a marker that travels the track in (scaled) time.
/* global L */

import { formatTime, formatNumber, t } from './core.js';

export class TrackView {
  constructor(map, controls) {
    this.map = map;
    this.controls = controls;
    this.line = L.polyline([], { color: '#0b5cad', weight: 3, opacity: 0.8 }).addTo(map);
    this.cursor = L.circleMarker([0, 0], { radius: 8, color: '#fff', weight: 2, fillColor: '#d1242f', fillOpacity: 1 });
    this.points = [];
    this.times = [];
    this.playing = false;
    this.timer = null;
    const { play, slider } = controls;
    play.addEventListener('click', () => (this.playing ? this.pause() : this.play()));
    slider.addEventListener('input', () => { this.pause(); this.seek(Number(slider.value)); });
  }

  /** Show a track: rows of the positions endpoint (time, latitude, longitude, speed...). */
  show(rows) {
    this.pause();
    this.points = rows.filter((row) => typeof row.latitude === 'number' && typeof row.longitude === 'number');
    this.times = this.points.map((row) => new Date(row.time).getTime());
    this.line.setLatLngs(this.points.map((row) => [row.latitude, row.longitude]));
    this.map.getContainer().dataset.trackPoints = String(this.points.length);
    const { play, slider } = this.controls;
    slider.max = String(Math.max(0, this.points.length - 1));
    slider.value = '0';
    play.disabled = slider.disabled = this.points.length < 2;
    if (this.points.length) {
      this.map.fitBounds(this.line.getBounds(), { padding: [20, 20], maxZoom: 16, animate: false });
      this.seek(0);
    } else {
      this.cursor.remove();
      this.controls.time.textContent = t('vehicle.no_track');
    }
  }

  /** Extend the shown track with a live fix (when it is newer than the track's last point). */
  append(row) {
    if (typeof row.latitude !== 'number' || typeof row.longitude !== 'number') return;
    const time = new Date(row.time).getTime();
    if (this.times.length && time <= this.times[this.times.length - 1]) return;
    this.points.push(row);
    this.times.push(time);
    this.line.addLatLng([row.latitude, row.longitude]);
    this.controls.slider.max = String(Math.max(0, this.points.length - 1));
    this.controls.play.disabled = this.controls.slider.disabled = this.points.length < 2;
    this.map.getContainer().dataset.trackPoints = String(this.points.length);
  }

  seek(index) {
    const row = this.points[index];
    if (!row) return;
    this.index = index;
    this.cursor.setLatLng([row.latitude, row.longitude]).addTo(this.map);
    this.controls.slider.value = String(index);
    this.controls.time.textContent = `${formatTime(row.time)} · ${formatNumber(row.speed == null ? null : Math.round(row.speed), t('unit.kmh'))}`;
    this.map.getContainer().dataset.replayIndex = String(index);
  }

  /** Play from the cursor: track time advances `speed` times faster than the clock, in 100 ms steps. */
  play() {
    if (this.points.length < 2) return;
    if (this.index >= this.points.length - 1) this.seek(0);
    this.playing = true;
    this.controls.play.textContent = t('replay.pause');
    this.controls.play.setAttribute('aria-pressed', 'true');
    let clock = this.times[this.index];
    this.timer = setInterval(() => {
      clock += 100 * Number(this.controls.speed.value);
      let next = this.index;
      while (next < this.points.length - 1 && this.times[next + 1] <= clock) next += 1;
      if (next === this.index && next < this.points.length - 1 && this.times[next + 1] - clock > 600_000) {
        clock = this.times[next + 1]; // jump over long stops rather than wait through them
      }
      this.seek(next);
      if (next >= this.points.length - 1) this.pause();
    }, 100);
  }

  pause() {
    clearInterval(this.timer);
    this.timer = null;
    this.playing = false;
    this.controls.play.textContent = t('replay.play');
    this.controls.play.setAttribute('aria-pressed', 'false');
  }

  hideCursor() {
    this.pause();
    this.cursor.remove();
  }
}
