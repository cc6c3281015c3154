// Leaflet maps with the configured background tiles, drawn on canvas.
//
// Chosen by measurement (docs/WEB.md): Leaflet's canvas renderer with supercluster clustering drew 5,000
// vehicles in ~0.3 s and spent ~24 ms of main thread per second while all moved; MapLibre GL needed
// ~0.65 s and 76-120 ms/s without a GPU, Leaflet.markercluster ~350 ms/s.
/* global L */

import { config, t } from './core.js';

export const STATUS_COLOURS = { online: '#1a7f37', offline: '#b35900', unknown: '#6e7781' };

/** A map in `container` with the background tiles; a tile that fails to load leaves its square blank. */
export function createMap(container, { center = [48.5, 31.2], zoom = 5 } = {}) {
  const map = L.map(container, { preferCanvas: true, zoomControl: true, worldCopyJump: true, maxZoom: config.map.max_zoom })
    .setView(center, zoom);
  const tiles = L.tileLayer(config.map.tile_url, {
    maxZoom: config.map.max_zoom,
    attribution: config.map.attribution,
    crossOrigin: false,
  });
  let failures = 0;
  tiles.on('tileerror', () => {
    failures += 1;
    container.dataset.tileErrors = String(failures);
  });
  tiles.addTo(map);
  map.attributionControl.setPrefix(false);
  return map;
}

export function shortCount(count) {
  return count >= 1000 ? `${Math.round(count / 100) / 10}k` : String(count);
}

/**
 * Every vehicle of the fleet as one clustered layer: supercluster groups the points for the current view,
 * single vehicles are canvas circles, clusters a few DOM badges. Redraws at most once per `interval` ms.
 */
export class FleetLayer {
  constructor(map, { onSelect, afterDraw = () => {}, interval = 1000 }) {
    this.map = map;
    this.onSelect = onSelect;
    this.afterDraw = afterDraw;
    this.interval = interval;
    this.renderer = L.canvas({ padding: 0.3 });
    this.group = L.layerGroup().addTo(map);
    this.index = new window.Supercluster({ radius: 60, maxZoom: 15, minPoints: 3 });
    this.points = new Map(); // vehicle id → {lat, lon, status}
    this.visible = null; // Set of ids passing the filter, or null for all
    this.dirtyData = true;
    this.lastDraw = 0;
    this.timer = null;
    this.layers = new Map(); // "c<cluster id>" or "v<vehicle id>" → the Leaflet layer drawn for it
    map.on('moveend zoomend', () => this.draw());
  }

  set(id, lat, lon, status) {
    if (typeof lat !== 'number' || typeof lon !== 'number') return;
    const point = this.points.get(id);
    if (point) {
      point.lat = lat;
      point.lon = lon;
      if (status) point.status = status;
    } else {
      this.points.set(id, { lat, lon, status: status || 'unknown' });
    }
    this.dirtyData = true;
  }

  setStatus(id, status) {
    const point = this.points.get(id);
    if (point && point.status !== status) {
      point.status = status;
      this.dirtyData = true;
    }
  }

  filter(ids) {
    this.visible = ids;
    this.dirtyData = true;
    this.draw();
  }

  /** Schedule a redraw, coalescing bursts of updates into one per interval. */
  schedule() {
    if (this.timer) return;
    const wait = Math.max(0, this.interval - (performance.now() - this.lastDraw));
    this.timer = setTimeout(() => { this.timer = null; this.draw(); }, wait);
  }

  fit() {
    const bounds = [];
    for (const [id, p] of this.points) if (!this.visible || this.visible.has(id)) bounds.push([p.lat, p.lon]);
    if (bounds.length === 1) this.map.setView(bounds[0], 13);
    else if (bounds.length > 1) this.map.fitBounds(bounds, { padding: [30, 30], maxZoom: 14, animate: false });
  }

  rebuild() {
    const features = [];
    for (const [id, p] of this.points) {
      if (this.visible && !this.visible.has(id)) continue;
      features.push({ type: 'Feature', properties: { id, status: p.status }, geometry: { type: 'Point', coordinates: [p.lon, p.lat] } });
    }
    this.index.load(features);
    this.count = features.length;
    this.dirtyData = false;
  }

  draw() {
    this.lastDraw = performance.now();
    if (this.dirtyData) this.rebuild();
    const bounds = this.map.getBounds();
    const box = [Math.max(-180, bounds.getWest()), Math.max(-85, bounds.getSouth()), Math.min(180, bounds.getEast()), Math.min(85, bounds.getNorth())];
    const zoom = Math.round(this.map.getZoom());
    const items = this.index.getClusters(box, zoom);
    // Reuse the layers of clusters and vehicles still in view (moved, not recreated): once a second with
    // thousands of vehicles, creating a few hundred DOM badges each time is most of the page's work.
    const next = new Map();
    let clusters = 0;
    for (const item of items) {
      const [lon, lat] = item.geometry.coordinates;
      const props = item.properties;
      const key = props.cluster ? `c${props.cluster_id}` : `v${props.id}`;
      let layer = this.layers.get(key);
      if (props.cluster) {
        clusters += 1;
        if (!layer) layer = this.clusterMarker();
        if (layer.count !== props.point_count) {
          layer.count = props.point_count;
          const size = layer.count < 100 ? 34 : layer.count < 1000 ? 42 : 50;
          layer.setIcon(L.divIcon({ className: 'cluster', html: `<span>${shortCount(layer.count)}</span>`, iconSize: [size, size] }));
        }
        layer.clusterId = props.cluster_id;
      } else {
        if (!layer) layer = this.vehicleMarker(props.id);
        const colour = STATUS_COLOURS[props.status] || STATUS_COLOURS.unknown;
        if (layer.options.fillColor !== colour) layer.setStyle({ fillColor: colour });
      }
      const at = layer.getLatLng();
      if (!at || at.lat !== lat || at.lng !== lon) layer.setLatLng([lat, lon]);
      if (!this.group.hasLayer(layer)) this.group.addLayer(layer);
      const element = props.cluster ? layer.getElement() : null;
      if (element && element.dataset.count !== String(layer.count)) {
        element.dataset.count = String(layer.count);
        element.title = t('fleet.cluster', { count: layer.count }); // its name for keyboard and screen readers
      }
      next.set(key, layer);
    }
    for (const [key, layer] of this.layers) if (!next.has(key)) this.group.removeLayer(layer);
    this.layers = next;
    const container = this.map.getContainer();
    container.dataset.points = String(this.count);
    container.dataset.clusters = String(clusters);
    container.dataset.singles = String(items.length - clusters);
    this.afterDraw();
  }

  clusterMarker() {
    const marker = L.marker([0, 0], { keyboard: true });
    marker.on('click', () => {
      const zoom = Math.min(this.index.getClusterExpansionZoom(marker.clusterId), config.map.max_zoom);
      this.map.setView(marker.getLatLng(), zoom);
    });
    return marker;
  }

  vehicleMarker(id) {
    const circle = L.circleMarker([0, 0], {
      renderer: this.renderer, radius: 7, weight: 2, color: '#fff', fillColor: STATUS_COLOURS.unknown, fillOpacity: 0.95,
    });
    circle.on('click', () => this.onSelect(id, circle.getLatLng()));
    return circle;
  }
}
