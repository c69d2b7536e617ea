// MephistoSocket against a hand-driven WebSocket double and a manual clock.

import assert from "node:assert/strict";
import { beforeEach, describe, test } from "node:test";

import { CONNECTION_STATUS as S, MephistoSocket, isFinalCloseCode } from "../src/core.js";
import { FakeClock, FakeWebSocket } from "./support/fakes.js";

let clock;
let statuses;
let liveUpdates;
let agentStatuses;

function makeSocket(config = {}) {
  return new MephistoSocket({
    onConnectionStatusChange: (s) => statuses.push(s),
    onLiveUpdate: (d) => liveUpdates.push(d),
    onStatusUpdate: (d) => agentStatuses.push(d),
    config: {
      url: "ws://task.example:3000/",
      WebSocket: FakeWebSocket,
      timers: clock.timerApi,
      now: clock.now,
      random: () => 0.5, // no jitter
      ...config,
    },
  });
}

function types(ws) {
  return ws.packets.map((p) => p.packet_type);
}

beforeEach(() => {
  clock = new FakeClock();
  statuses = [];
  liveUpdates = [];
  agentStatuses = [];
  FakeWebSocket.reset();
});

describe("opening", () => {
  test("alive first, with the agent id and an update_id; then CONNECTED", () => {
    const socket = makeSocket();
    socket.connect("agent-7");
    assert.deepEqual(statuses, [S.INITIALIZING]);
    const ws = FakeWebSocket.last;
    assert.equal(ws.url, "ws://task.example:3000/");
    ws.serverOpen();
    const [alive] = ws.packets;
    assert.equal(alive.packet_type, "alive");
    assert.equal(alive.subject_id, "agent-7");
    assert.match(alive.data.update_id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.ok(Math.abs(alive.client_timestamp - Date.now() / 1000) < 5);
    assert.deepEqual(statuses, [S.INITIALIZING, S.CONNECTED]);
  });

  test("the default URL is the page's host with path / and the page's scheme", (t) => {
    t.after(() => delete globalThis.location);
    globalThis.location = new URL("https://tasks.example.org:8443/task/?worker_id=1");
    const socket = makeSocket({ url: undefined });
    socket.connect("a");
    assert.equal(FakeWebSocket.last.url, "wss://tasks.example.org:8443/");
  });

  test("the default URL carries the provider's URL params, as HTTP requests do", (t) => {
    t.after(() => {
      delete globalThis.location;
      delete globalThis.getProviderURLParams;
    });
    globalThis.location = new URL("http://tasks.example.org/?worker_id=w1");
    globalThis.getProviderURLParams = () => ({ worker_id: "w 1", assignment_id: "a1" });
    makeSocket({ url: undefined }).connect("a");
    assert.equal(FakeWebSocket.last.url, "ws://tasks.example.org/?worker_id=w+1&assignment_id=a1");
    globalThis.getProviderURLParams = () => {
      throw new Error("shim broke");
    };
    makeSocket({ url: undefined }).connect("b");
    assert.equal(FakeWebSocket.last.url, "ws://tasks.example.org/");
  });

  test("connect needs an agent id", () => {
    assert.throws(() => makeSocket().connect(null), /agent id/);
  });
});

describe("heartbeats", () => {
  test("first 500 ms after open, then every 6 s, without data", () => {
    const socket = makeSocket();
    socket.connect("a");
    const ws = FakeWebSocket.last;
    ws.serverOpen();
    clock.advance(499);
    assert.deepEqual(types(ws), ["alive"]);
    clock.advance(1);
    assert.deepEqual(types(ws), ["alive", "heartbeat"]);
    const hb = ws.packets[1];
    assert.equal(hb.subject_id, "a");
    assert.equal("data" in hb, false);
    ws.serverSend({ packet_type: "heartbeat", data: { last_mephisto_ping: clock.now() } });
    clock.advance(5500); // t = 6000 since connect
    assert.deepEqual(types(ws), ["alive", "heartbeat", "heartbeat"]);
    ws.serverSend({ packet_type: "heartbeat", data: { last_mephisto_ping: clock.now() } });
    clock.advance(6000);
    assert.equal(types(ws).filter((x) => x === "heartbeat").length, 3);
    assert.equal(socket.heartbeatsWithoutResponse, 1);
  });

  test("a server heartbeat resets the missed count and records the ping", () => {
    const socket = makeSocket();
    socket.connect("a");
    FakeWebSocket.last.serverOpen();
    clock.advance(6000);
    assert.equal(socket.heartbeatsWithoutResponse, 2);
    FakeWebSocket.last.serverSend({ packet_type: "heartbeat", data: { last_mephisto_ping: 123456 } });
    assert.equal(socket.heartbeatsWithoutResponse, 0);
    assert.equal(socket.lastMephistoPing, 123456);
  });

  test("5 unanswered heartbeats force a reconnect, 10 give up", () => {
    const socket = makeSocket({ connectionDeadMephistoPing: 1e9 });
    socket.connect("a");
    const first = FakeWebSocket.last;
    first.serverOpen();
    clock.advance(500 + 4 * 6000); // 5 heartbeats sent, none answered
    assert.equal(socket.heartbeatsWithoutResponse, 5);
    assert.equal(FakeWebSocket.instances.length, 1);
    clock.advance(5500); // the tick at t = 30 s sees 5 missed
    assert.ok(statuses.includes(S.RECONNECTING_ROUTER));
    assert.equal(first.closeCalls, 1, "stale socket closed");
    clock.advance(500); // reconnect delay
    assert.equal(FakeWebSocket.instances.length, 2);
    FakeWebSocket.last.serverOpen();
    assert.equal(types(FakeWebSocket.last)[0], "alive");
    clock.advance(5 * 6000); // still no answers: 10 missed
    assert.equal(statuses[statuses.length - 1], S.DISCONNECTED_ROUTER);
    assert.equal(socket.terminated, true);
    const sockets = FakeWebSocket.instances.length;
    clock.advance(60000);
    assert.equal(FakeWebSocket.instances.length, sockets, "no reconnect after giving up");
    assert.equal(clock.pending, 0, "no timers left");
  });

  test("a server ping older than 20 s: mephisto disconnect, closed for good", () => {
    const socket = makeSocket();
    socket.connect("a");
    const ws = FakeWebSocket.last;
    ws.serverOpen();
    // the router answers, but with the time it last heard from the backend: t0
    const t0 = clock.now();
    const answer = () => ws.serverSend({ packet_type: "heartbeat", data: { last_mephisto_ping: t0 } });
    for (let i = 0; i < 3; i++) {
      clock.advance(6000);
      answer();
    }
    assert.deepEqual(agentStatuses, []);
    clock.advance(6000); // 24 s after t0
    assert.deepEqual(agentStatuses, [{ status: "mephisto disconnect" }]);
    assert.equal(statuses[statuses.length - 1], S.DISCONNECTED_SERVER);
    assert.ok(ws.closeCalls >= 1);
    assert.equal(socket.terminated, true);
    assert.equal(clock.pending, 0);
  });
});

describe("reconnect with backoff", () => {
  test("0.5 s, 1 s, 2 s, ... capped; an open resets the delay; alive again on reopen", () => {
    const socket = makeSocket({ connectionDeadMephistoPing: 1e9, routerDeadTimeout: 1e9, reconnectMaxDelay: 2000 });
    socket.connect("a");
    FakeWebSocket.last.serverOpen();
    FakeWebSocket.last.serverClose(1006);
    assert.equal(statuses[statuses.length - 1], S.DISCONNECTED);

    const delays = [];
    for (let attempt = 0; attempt < 4; attempt++) {
      const before = FakeWebSocket.instances.length;
      let waited = 0;
      while (FakeWebSocket.instances.length === before) {
        clock.advance(10);
        waited += 10;
        assert.ok(waited < 10000, "no reconnect attempt");
      }
      delays.push(waited);
      FakeWebSocket.last.serverClose(1006); // the server is still down
    }
    assert.deepEqual(delays, [500, 1000, 2000, 2000]);

    const before = FakeWebSocket.instances.length;
    clock.advance(2000);
    assert.equal(FakeWebSocket.instances.length, before + 1);
    const ws = FakeWebSocket.last;
    ws.serverOpen(); // back up
    assert.equal(socket.reconnectAttempts, 0);
    assert.deepEqual(types(ws)[0], "alive");
    assert.equal(ws.packets[0].subject_id, "a");
    assert.equal(statuses[statuses.length - 1], S.CONNECTED);
    ws.serverClose(1006);
    const n = FakeWebSocket.instances.length;
    clock.advance(499);
    assert.equal(FakeWebSocket.instances.length, n);
    clock.advance(1);
    assert.equal(FakeWebSocket.instances.length, n + 1, "delay back to 500 ms after a good open");
  });

  test("jitter spreads the delay by +/- reconnectJitter", () => {
    const low = makeSocket({ random: () => 0 });
    low.connect("a");
    FakeWebSocket.last.serverClose(1006);
    const n = FakeWebSocket.instances.length;
    clock.advance(399);
    assert.equal(FakeWebSocket.instances.length, n);
    clock.advance(1);
    assert.equal(FakeWebSocket.instances.length, n + 1, "500 ms - 20%");
  });

  test("a socket that does not open within 10 s is abandoned and retried", () => {
    const socket = makeSocket();
    socket.connect("a");
    const stuck = FakeWebSocket.last;
    clock.advance(10000);
    assert.ok(statuses.includes(S.FAILED));
    assert.equal(stuck.closeCalls, 1);
    clock.advance(500);
    assert.equal(FakeWebSocket.instances.length, 2);
    FakeWebSocket.last.serverOpen();
    assert.equal(statuses[statuses.length - 1], S.CONNECTED);
    assert.equal(socket.terminated, false);
  });

  test("close code 4004 (unknown agent) is final", async () => {
    assert.ok(isFinalCloseCode(4004) && isFinalCloseCode(4403) && !isFinalCloseCode(1006) && !isFinalCloseCode(4503));
    const socket = makeSocket();
    socket.connect("a");
    const pending = socket.sendLiveUpdate({ text: "queued" }); // socket still connecting
    FakeWebSocket.last.serverClose(4004);
    await assert.rejects(pending, /refused the live connection \(close code 4004\)/);
    await assert.rejects(socket.sendLiveUpdate({ text: "after" }), /closed/);
    assert.equal(statuses[statuses.length - 1], S.FAILED);
    assert.equal(socket.terminated, true);
    clock.advance(60000);
    assert.equal(FakeWebSocket.instances.length, 1);
  });
});

describe("live updates", () => {
  test("queued before open, sent in order after alive, resolved with the sent data", async () => {
    const socket = makeSocket();
    const first = socket.sendLiveUpdate({ text: "one" });
    const second = socket.sendLiveUpdate({ text: "two", update_id: "fixed-id" });
    socket.connect("a");
    const ws = FakeWebSocket.last;
    assert.equal(ws.sent.length, 0);
    ws.serverOpen();
    assert.deepEqual(types(ws), ["alive", "mephisto_bound_live_update", "mephisto_bound_live_update"]);
    const [, p1, p2] = ws.packets;
    assert.equal(p1.subject_id, "a");
    assert.equal(p1.data.text, "one");
    assert.equal(typeof p1.data.update_id, "string");
    assert.equal(p2.data.update_id, "fixed-id");
    assert.deepEqual(await first, p1.data);
    assert.deepEqual(await second, { text: "two", update_id: "fixed-id" });
  });

  test("updates sent while disconnected go out after the reconnect", async () => {
    const socket = makeSocket();
    socket.connect("a");
    FakeWebSocket.last.serverOpen();
    FakeWebSocket.last.serverClose(1006);
    const sent = socket.sendLiveUpdate({ text: "while down" });
    clock.advance(500);
    const ws = FakeWebSocket.last;
    ws.serverOpen();
    assert.deepEqual(types(ws), ["alive", "mephisto_bound_live_update"]);
    assert.equal((await sent).text, "while down");
  });

  test("client-bound updates are deduplicated on update_id; ones without an id always pass", () => {
    const socket = makeSocket();
    socket.connect("a");
    const ws = FakeWebSocket.last;
    ws.serverOpen();
    ws.serverSend({ packet_type: "client_bound_live_update", data: { text: "hi", update_id: "u1" } });
    ws.serverSend({ packet_type: "client_bound_live_update", data: { text: "hi again", update_id: "u1" } });
    ws.serverSend({ packet_type: "client_bound_live_update", data: { text: "no id 1" } });
    ws.serverSend({ packet_type: "client_bound_live_update", data: { text: "no id 2" } });
    assert.deepEqual(liveUpdates.map((u) => u.text), ["hi", "no id 1", "no id 2"]);
  });

  test("update_status goes to onStatusUpdate; junk and unknown packets are ignored", () => {
    const socket = makeSocket();
    socket.connect("a");
    const ws = FakeWebSocket.last;
    ws.serverOpen();
    ws.onmessage({ data: "not json" });
    ws.serverSend({ packet_type: "something_new", data: {} });
    ws.serverSend({ packet_type: "update_status", data: { status: "in task" } });
    assert.deepEqual(agentStatuses, [{ status: "in task" }]);
    assert.deepEqual(liveUpdates, []);
  });

  test("non-object updates are refused", async () => {
    await assert.rejects(makeSocket().sendLiveUpdate("text"), /plain object/);
  });

  test("destroy closes the socket, rejects pending updates and stops every timer", async () => {
    const socket = makeSocket();
    socket.connect("a");
    const ws = FakeWebSocket.last; // never opens
    const pending = socket.sendLiveUpdate({ text: "x" });
    socket.destroy();
    await assert.rejects(pending, /not sent/);
    assert.equal(ws.closeCalls, 1);
    assert.equal(statuses[statuses.length - 1], S.DISCONNECTED);
    assert.equal(clock.pending, 0);
    await assert.rejects(socket.sendLiveUpdate({ text: "y" }), /closed/);
  });
});
