// The websocket half of the worker protocol (docs/wire-protocol.md section 4), no React.
//
// One MephistoSocket serves one agent of a live task. It sends `alive` on every (re)open,
// a `heartbeat` 500 ms after each open and then every 6 s, and the app's
// `mephisto_bound_live_update`s in order once the socket is open. It delivers
// `client_bound_live_update` (deduplicated on `update_id`) and `update_status` packets.
//
// Differences from mephisto-task 2.0.4, all in behaviour and none on the wire:
// - a closed socket is reopened by itself, after 0.5 s, 1 s, 2 s, ... (capped, with
//   jitter), instead of at the next heartbeat; a successful open resets the delay;
// - a close with code 4004 (unknown agent) or 4400-4499 (refused) is final: status
//   `failed`, no reconnect loop against a server that said no;
// - live updates without an `update_id` are never dropped as duplicates;
// - sendLiveUpdate's promise rejects once the socket is closed for good.
// Kept as in 2.0.4: 5 unanswered heartbeats force a reconnect (`reconnecting_router`),
// 10 close for good (`disconnected_router`), and a server ping older than 20 s closes
// for good with agent status `mephisto disconnect` (`disconnected_server`).

import { AGENT_STATUS, CONNECTION_STATUS, PACKET_TYPE } from "./constants.js";
import { MephistoError, providerQueryString, pythonTime } from "./http.js";

/** Timings and limits; any of them can be overridden through `config`. */
export const SOCKET_DEFAULTS = Object.freeze({
  heartbeatTime: 6000, // ms between heartbeats
  firstHeartbeatDelay: 500, // ms after each open
  refreshSocketMissedResponses: 5, // unanswered heartbeats before a forced reconnect
  routerDeadTimeout: 10, // unanswered heartbeats before giving up
  connectionDeadMephistoPing: 20000, // ms without a fresh server ping before giving up
  connectTimeout: 10000, // ms for a socket to open before it is abandoned (status `failed`)
  reconnectBaseDelay: 500, // first reconnect delay, doubled per failed attempt
  reconnectMaxDelay: 8000,
  reconnectJitter: 0.2, // +/- fraction of the delay, so that workers do not reconnect in step
  rememberedUpdateIds: 1000, // client-bound update ids kept for deduplication
});

/** Close codes after which reconnecting is pointless (the server refused this agent). */
export function isFinalCloseCode(code) {
  return code === 4004 || (code >= 4400 && code <= 4499);
}

/** A random RFC 4122 version 4 id (the protocol's `update_id`). */
export function uuidv4() {
  const c = globalThis.crypto;
  if (c && typeof c.randomUUID === "function") return c.randomUUID();
  const bytes = new Uint8Array(16);
  if (c && typeof c.getRandomValues === "function") c.getRandomValues(bytes);
  else for (let i = 0; i < 16; i++) bytes[i] = Math.floor(Math.random() * 256);
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/**
 * `ws(s)://host[:port]/` of the page: the socket shares the page's origin and path `/`.
 * The provider's URL params ride along in the query string, as on every HTTP request,
 * so the server can refuse a socket that claims another worker's agent.
 */
export function defaultSocketUrl() {
  const loc = globalThis.location;
  if (!loc || !loc.host) {
    throw new MephistoError("mephisto-task: no page location to derive the websocket URL from; pass config.url");
  }
  let query = "";
  try {
    query = providerQueryString();
  } catch (e) {
    query = ""; // a shim that throws here costs the socket its identity, not its life
  }
  return (loc.protocol === "https:" ? "wss://" : "ws://") + loc.host + "/" + (query ? "?" + query : "");
}

const OPEN = 1;
const CONNECTING = 0;

const defaultTimers = {
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (id) => clearTimeout(id),
  setInterval: (fn, ms) => setInterval(fn, ms),
  clearInterval: (id) => clearInterval(id),
};

function noop() {}

export class MephistoSocket {
  /**
   * @param {object} options
   * @param {(status: string) => void} [options.onConnectionStatusChange] CONNECTION_STATUS values
   * @param {(data: object) => void} [options.onLiveUpdate] data of client_bound_live_update
   * @param {(data: {status: string}) => void} [options.onStatusUpdate] data of update_status
   * @param {object} [options.config] SOCKET_DEFAULTS overrides, plus `url`, `WebSocket`
   *   (constructor), `timers` ({setTimeout, clearTimeout, setInterval, clearInterval}),
   *   `now` (ms clock) and `random` (for the jitter), mainly for tests.
   */
  constructor({ onConnectionStatusChange, onLiveUpdate, onStatusUpdate, config } = {}) {
    this.config = Object.assign({}, SOCKET_DEFAULTS, config);
    this._onConnectionStatusChange = onConnectionStatusChange || noop;
    this._onLiveUpdate = onLiveUpdate || noop;
    this._onStatusUpdate = onStatusUpdate || noop;
    this._timers = this.config.timers || defaultTimers;
    this._now = this.config.now || (() => Date.now());
    this._random = this.config.random || Math.random;

    this.agentId = null;
    this.connectionStatus = null;
    this.lastMephistoPing = null;
    this.heartbeatsWithoutResponse = 0;
    this.reconnectAttempts = 0;
    this.started = false;
    this.terminated = false;

    this._ws = null;
    this._queue = []; // {packetType, data, resolve, reject}
    this._seenIds = new Set();
    this._seenOrder = [];
    this._heartbeatInterval = null;
    this._firstHeartbeat = null;
    this._reconnectTimer = null;
    this._connectTimer = null;
  }

  /** Opens the socket for `agentId` (again: re-announces the socket for a new agent). */
  connect(agentId) {
    if (this.terminated) throw new MephistoError("this socket was closed for good; create a new one");
    if (typeof agentId !== "string" || !agentId) {
      throw new MephistoError("connect(agentId) needs the agent id (a non-empty string)");
    }
    const changed = this.agentId !== agentId;
    this.agentId = agentId;
    if (this.started) {
      if (changed && this._isOpen()) this._sendRaw(PACKET_TYPE.ALIVE, { update_id: uuidv4() });
      return;
    }
    this.started = true;
    this.lastMephistoPing = this._now();
    this._setStatus(CONNECTION_STATUS.INITIALIZING);
    this._heartbeatInterval = this._timers.setInterval(() => this._heartbeatTick(), this.config.heartbeatTime);
    this._open();
  }

  /**
   * Queues a `mephisto_bound_live_update`; resolves to the data actually sent (with its
   * `update_id`) once it went out on an open socket; rejects if the socket closes for good.
   */
  sendLiveUpdate(message) {
    return this.send(PACKET_TYPE.MEPHISTO_BOUND_LIVE_UPDATE, message);
  }

  /** Queues a packet of any type; see sendLiveUpdate. */
  send(packetType, message) {
    if (!message || typeof message !== "object" || Array.isArray(message)) {
      return Promise.reject(new MephistoError("a live update must be a plain object"));
    }
    if (this.terminated) {
      return Promise.reject(new MephistoError("the live connection is closed; the update was not sent"));
    }
    const data = Object.assign({}, message);
    if (data.update_id === undefined) data.update_id = uuidv4();
    return new Promise((resolve, reject) => {
      this._queue.push({ packetType, data, resolve, reject });
      this._flush();
    });
  }

  /** Closes the socket for good (pending updates reject). */
  destroy() {
    if (this.terminated) return;
    const wasStarted = this.started;
    this._terminate("the live connection was closed by the page");
    if (wasStarted) this._setStatus(CONNECTION_STATUS.DISCONNECTED);
  }

  /** Marks a client-bound `update_id` as delivered (e.g. one replayed from past_live_updates). */
  markSeen(updateId) {
    if (updateId === undefined || updateId === null || this._seenIds.has(updateId)) return false;
    this._seenIds.add(updateId);
    this._seenOrder.push(updateId);
    if (this._seenOrder.length > this.config.rememberedUpdateIds) {
      this._seenIds.delete(this._seenOrder.shift());
    }
    return true;
  }

  /* ------------------------------------------------------------------ internals */

  _setStatus(status) {
    if (status === this.connectionStatus) return;
    this.connectionStatus = status;
    this._onConnectionStatusChange(status);
  }

  _isOpen() {
    return this._ws !== null && this._ws.readyState === OPEN;
  }

  _open() {
    if (this.terminated || this._ws !== null) return;
    this._clearTimer("_reconnectTimer");
    const WebSocketImpl = this.config.WebSocket || globalThis.WebSocket;
    if (typeof WebSocketImpl !== "function") {
      this._setStatus(CONNECTION_STATUS.WEBSOCKETS_FAILURE);
      this._terminate("this browser has no WebSocket support");
      return;
    }
    let ws;
    try {
      ws = new WebSocketImpl(this.config.url || defaultSocketUrl());
    } catch (e) {
      this._setStatus(CONNECTION_STATUS.FAILED);
      this._scheduleReconnect();
      return;
    }
    this._ws = ws;
    ws.onopen = () => {
      if (ws !== this._ws) return;
      this._clearTimer("_connectTimer");
      this.reconnectAttempts = 0;
      if (this._sendRaw(PACKET_TYPE.ALIVE, { update_id: uuidv4() })) {
        this._setStatus(CONNECTION_STATUS.CONNECTED);
      }
      this._clearTimer("_firstHeartbeat");
      this._firstHeartbeat = this._timers.setTimeout(() => {
        this._firstHeartbeat = null;
        if (!this.terminated) this._sendHeartbeat();
      }, this.config.firstHeartbeatDelay);
      this._flush();
    };
    ws.onmessage = (event) => {
      if (ws === this._ws) this._onMessage(event.data);
    };
    ws.onerror = noop; // a close event always follows; handled there
    ws.onclose = (event) => {
      if (ws !== this._ws) return;
      this._ws = null;
      this._clearTimer("_connectTimer");
      if (this.terminated) return;
      const code = event && event.code;
      if (isFinalCloseCode(code)) {
        this._setStatus(CONNECTION_STATUS.FAILED);
        this._terminate(`the server refused the live connection (close code ${code})`);
        return;
      }
      this._setStatus(CONNECTION_STATUS.DISCONNECTED);
      this._scheduleReconnect();
    };
    this._connectTimer = this._timers.setTimeout(() => {
      this._connectTimer = null;
      if (ws === this._ws && ws.readyState === CONNECTING) {
        this._setStatus(CONNECTION_STATUS.FAILED);
        this._dropSocket();
        this._scheduleReconnect();
      }
    }, this.config.connectTimeout);
  }

  /** Forgets the current socket (its events are ignored from now on) and closes it. */
  _dropSocket() {
    const ws = this._ws;
    this._ws = null;
    this._clearTimer("_connectTimer");
    if (!ws) return;
    try {
      ws.close();
    } catch (e) {
      /* already closing */
    }
  }

  _scheduleReconnect() {
    if (this.terminated || this._ws !== null || this._reconnectTimer !== null) return;
    const { reconnectBaseDelay, reconnectMaxDelay, reconnectJitter } = this.config;
    const base = Math.min(reconnectMaxDelay, reconnectBaseDelay * Math.pow(2, this.reconnectAttempts));
    const delay = Math.max(0, Math.round(base * (1 + reconnectJitter * (2 * this._random() - 1))));
    this.reconnectAttempts += 1;
    this._reconnectTimer = this._timers.setTimeout(() => {
      this._reconnectTimer = null;
      this._open();
    }, delay);
  }

  _restart() {
    this._dropSocket();
    this._scheduleReconnect();
  }

  /** Sends one packet now if the socket is open; false (and a restart if it broke) if not. */
  _sendRaw(packetType, data) {
    if (!this._isOpen()) return false;
    const packet = { packet_type: packetType, subject_id: this.agentId, client_timestamp: pythonTime() };
    if (data !== undefined) packet.data = data;
    try {
      this._ws.send(JSON.stringify(packet));
      return true;
    } catch (e) {
      this._restart();
      return false;
    }
  }

  _flush() {
    while (this._queue.length > 0 && this._isOpen() && this.agentId !== null) {
      const item = this._queue[0];
      if (!this._sendRaw(item.packetType, item.data)) return;
      this._queue.shift();
      item.resolve(item.data);
    }
  }

  _sendHeartbeat() {
    if (this._isOpen()) this._sendRaw(PACKET_TYPE.HEARTBEAT);
    else if (this._ws === null) this._scheduleReconnect();
    this.heartbeatsWithoutResponse += 1;
  }

  _heartbeatTick() {
    if (this.terminated) return;
    const { refreshSocketMissedResponses, routerDeadTimeout, connectionDeadMephistoPing } = this.config;
    if (this.heartbeatsWithoutResponse === refreshSocketMissedResponses) {
      this._setStatus(CONNECTION_STATUS.RECONNECTING_ROUTER);
      this._restart();
    }
    if (this.heartbeatsWithoutResponse >= routerDeadTimeout) {
      this._setStatus(CONNECTION_STATUS.DISCONNECTED_ROUTER);
      this._terminate("the server stopped answering heartbeats");
      return;
    }
    if (this._now() - this.lastMephistoPing > connectionDeadMephistoPing) {
      this._terminate("the task server stopped answering");
      this._onStatusUpdate({ status: AGENT_STATUS.MEPHISTO_DISCONNECT });
      this._setStatus(CONNECTION_STATUS.DISCONNECTED_SERVER);
      return;
    }
    this._sendHeartbeat();
  }

  _onMessage(raw) {
    let packet;
    try {
      packet = JSON.parse(typeof raw === "string" ? raw : String(raw));
    } catch (e) {
      return; // not JSON: ignored, like any packet we do not understand
    }
    if (!packet || typeof packet !== "object") return;
    const data = packet.data;
    switch (packet.packet_type) {
      case PACKET_TYPE.HEARTBEAT: {
        this.heartbeatsWithoutResponse = 0;
        const ping = data && data.last_mephisto_ping;
        this.lastMephistoPing = typeof ping === "number" && isFinite(ping) ? ping : this._now();
        return;
      }
      case PACKET_TYPE.CLIENT_BOUND_LIVE_UPDATE: {
        if (!data || typeof data !== "object") return;
        const id = data.update_id;
        if (id !== undefined && id !== null && !this.markSeen(id)) return; // duplicate
        this._onLiveUpdate(data);
        return;
      }
      case PACKET_TYPE.UPDATE_STATUS:
        if (data && typeof data === "object") this._onStatusUpdate(data);
        return;
      default:
        return;
    }
  }

  _clearTimer(name) {
    if (this[name] === null) return;
    if (name === "_heartbeatInterval") this._timers.clearInterval(this[name]);
    else this._timers.clearTimeout(this[name]);
    this[name] = null;
  }

  _terminate(reason) {
    this.terminated = true;
    for (const name of ["_heartbeatInterval", "_firstHeartbeat", "_reconnectTimer", "_connectTimer"]) {
      this._clearTimer(name);
    }
    this._dropSocket();
    const pending = this._queue.splice(0);
    for (const item of pending) item.reject(new MephistoError(`live update not sent: ${reason}`));
  }
}
