// MephistoSocket over real sockets: a `ws` server that answers as our server does
// (docs/wire-protocol.md section 8), with real timers shortened through config.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { WebSocket, WebSocketServer } from "ws";

import { CONNECTION_STATUS as S, MephistoSocket } from "../src/core.js";

let server;
let url;
const received = []; // {connection: n, packet}
const connections = [];

before(async () => {
  server = new WebSocketServer({ port: 0, host: "127.0.0.1" });
  await new Promise((resolve) => server.once("listening", resolve));
  url = `ws://127.0.0.1:${server.address().port}/`;
  server.on("connection", (ws) => {
    const n = connections.push(ws);
    ws.on("message", (raw) => {
      const packet = JSON.parse(String(raw));
      received.push({ connection: n, packet });
      if (packet.packet_type === "heartbeat") {
        ws.send(JSON.stringify({
          packet_type: "heartbeat",
          data: { last_mephisto_ping: Math.round(packet.client_timestamp * 1000) },
        }));
      } else if (packet.packet_type === "alive" && packet.subject_id === "unknown") {
        ws.close(4004);
      }
    });
  });
});

after(async () => {
  for (const ws of connections) ws.terminate();
  await new Promise((resolve) => server.close(resolve));
});

async function until(predicate, what, timeoutMs = 3000) {
  const end = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

const fastConfig = () => ({
  url,
  WebSocket,
  heartbeatTime: 40,
  firstHeartbeatDelay: 5,
  reconnectBaseDelay: 20,
  reconnectJitter: 0,
});

test("alive, heartbeats answered, live updates both ways, reconnect after a dropped connection", async () => {
  const statuses = [];
  const updates = [];
  const socket = new MephistoSocket({
    onConnectionStatusChange: (s) => statuses.push(s),
    onLiveUpdate: (d) => updates.push(d),
    config: fastConfig(),
  });
  socket.connect("agent-1");
  await until(() => statuses.includes(S.CONNECTED), "CONNECTED");
  const mine = () => received.filter((r) => r.packet.subject_id === "agent-1");
  await until(() => mine().filter((r) => r.packet.packet_type === "heartbeat").length >= 3, "3 heartbeats");
  assert.equal(mine()[0].packet.packet_type, "alive");
  assert.equal(socket.heartbeatsWithoutResponse <= 1, true, "heartbeats are being answered");

  const sent = await socket.sendLiveUpdate({ text: "hello" });
  await until(() => mine().some((r) => r.packet.packet_type === "mephisto_bound_live_update"), "live update at server");
  const atServer = mine().find((r) => r.packet.packet_type === "mephisto_bound_live_update").packet;
  assert.deepEqual(atServer.data, sent);

  const first = connections[connections.length - 1];
  first.send(JSON.stringify({ packet_type: "client_bound_live_update", data: { text: "from server", update_id: "s1" } }));
  await until(() => updates.length === 1, "client-bound update");
  assert.equal(updates[0].text, "from server");

  const before = connections.length;
  first.terminate(); // the connection drops without a close frame
  await until(() => statuses[statuses.length - 1] === S.DISCONNECTED || connections.length > before, "disconnect");
  await until(() => connections.length > before && statuses[statuses.length - 1] === S.CONNECTED, "reconnect");
  const second = connections.length;
  await until(() => received.some((r) => r.connection === second && r.packet.packet_type === "alive"), "alive again");
  await socket.sendLiveUpdate({ text: "after reconnect" });
  await until(
    () => received.some((r) => r.connection === second && r.packet.data && r.packet.data.text === "after reconnect"),
    "update on the new connection"
  );
  socket.destroy();
  assert.equal(socket.terminated, true);
});

test("the server closing with 4004 (unknown agent) stops the client for good", async () => {
  const statuses = [];
  const socket = new MephistoSocket({ onConnectionStatusChange: (s) => statuses.push(s), config: fastConfig() });
  const before = connections.length;
  socket.connect("unknown");
  await until(() => socket.terminated, "termination");
  assert.equal(statuses[statuses.length - 1], S.FAILED);
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(connections.length, before + 1, "no reconnect attempts");
});
