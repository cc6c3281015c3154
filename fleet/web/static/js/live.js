// A live stream over WebSocket (INTERFACES §1): authenticated by a first message (no token in the URL),
// renewed in place when the access token is refreshed, reconnected with backoff when it drops.
//
// States reported to `onState`: connecting, live, offline (the socket is down, retrying), refused.

import { onToken, refresh, token } from './session.js';

const MAX_BACKOFF_MS = 30_000;

export class LiveStream {
  constructor(path, { onMessage, onState }) {
    this.path = path;
    this.onMessage = onMessage;
    this.onState = onState || (() => {});
    this.socket = null;
    this.attempt = 0;
    this.closed = false;
    this.timer = null;
    onToken((fresh) => this.send({ type: 'auth', token: fresh }));
  }

  url() {
    const scheme = window.location.protocol === 'https:' ? 'wss:' : 'ws:';
    return `${scheme}//${window.location.host}${this.path}`;
  }

  start() {
    this.closed = false;
    this.connect();
    return this;
  }

  stop() {
    this.closed = true;
    clearTimeout(this.timer);
    if (this.socket) this.socket.close(1000);
  }

  send(message) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify(message));
  }

  connect() {
    this.onState('connecting');
    let socket;
    try {
      socket = new WebSocket(this.url());
    } catch {
      this.retry();
      return;
    }
    this.socket = socket;
    socket.addEventListener('open', () => {
      socket.send(JSON.stringify({ type: 'auth', token: token() }));
    });
    socket.addEventListener('message', (event) => {
      let message;
      try { message = JSON.parse(event.data); } catch { return; }
      if (message.type === 'hello') {
        this.attempt = 0;
        this.onState('live');
      } else if (message.type === 'error' && message.code === 'token_expired') {
        refresh().catch(() => {}); // the fresh token is sent by the onToken listener
        return;
      }
      this.onMessage(message);
    });
    socket.addEventListener('close', (event) => {
      if (this.socket !== socket) return;
      this.socket = null;
      if (this.closed) return;
      if (event.code === 4403 || event.code === 4404) {
        this.onState('refused', event.code);
        return;
      }
      if (event.code === 4401) refresh().catch(() => {});
      this.retry();
    });
  }

  retry() {
    this.onState('offline');
    const delay = Math.min(MAX_BACKOFF_MS, 1000 * 2 ** this.attempt) * (0.75 + Math.random() / 2);
    this.attempt += 1;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), delay);
  }
}

/** Show a stream's state in a live indicator element (a dot and a label). */
export function showLiveState(element, state, t) {
  if (!element) return;
  element.dataset.state = state;
  element.querySelector('.label').textContent = t(`live.${state}`);
}
