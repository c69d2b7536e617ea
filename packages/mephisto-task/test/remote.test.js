// useMephistoRemoteProcedureTask answers: a `response` resolves the call, an `error`
// rejects it with a MephistoError carrying the server's message (issue 14).

import assert from "node:assert/strict";
import { afterEach, beforeEach, test } from "node:test";
import React from "react";

import { MephistoError, useMephistoRemoteProcedureTask } from "../src/index.js";
import { act, installDom, render, waitFor } from "./support/dom.js";
import { FakeClock, FakeWebSocket, installFetch, installShim, removeShim } from "./support/fakes.js";

let mounted;

async function renderRemoteTask() {
  const clock = new FakeClock();
  const box = { current: null };
  function Probe() {
    box.current = useMephistoRemoteProcedureTask({
      socketConfig: { WebSocket: FakeWebSocket, timers: clock.timerApi, now: clock.now },
    });
    return null;
  }
  mounted = await render(React.createElement(Probe));
  await waitFor(() => FakeWebSocket.instances.length === 1, "auto connect");
  const ws = FakeWebSocket.last;
  await act(async () => ws.serverOpen());
  return { box, ws };
}

/** Calls `name(args)`; returns the promise and the request the page sent. */
async function call(box, ws, name, args) {
  const before = ws.packets.length;
  const promise = box.current.remoteProcedure(name)(args);
  promise.catch(() => {}); // examined by the test; keep node from reporting it early
  await waitFor(
    () => ws.packets.slice(before).some((p) => p.packet_type === "mephisto_bound_live_update"),
    "request sent"
  );
  const request = ws.packets.slice(before).find((p) => p.packet_type === "mephisto_bound_live_update").data;
  return { promise, request };
}

function answer(ws, data) {
  return act(async () => ws.serverSend({ packet_type: "client_bound_live_update", data }));
}

beforeEach(() => {
  installDom("http://localhost:3000/?worker_id=w1&assignment_id=as1");
  installShim();
  installFetch({
    "GET /task_config.json": () => ({ block_mobile: false }),
    "POST /request_agent": () => ({ data: { agent_id: "agent-1", worker_id: "7", init_task_data: {} } }),
  });
  FakeWebSocket.reset();
});

afterEach(async () => {
  if (mounted) await mounted.unmount();
  mounted = null;
  removeShim();
});

test("an error answer rejects the call with a MephistoError carrying the server's message", async () => {
  const { box, ws } = await renderRemoteTask();
  const { promise, request } = await call(box, ws, "spell_check", { text: "hello" });
  await answer(ws, { handles: request.request_id, error: "spell_check failed: ValueError: too long", update_id: "u1" });
  await assert.rejects(promise, (e) => {
    assert.ok(e instanceof MephistoError, "a MephistoError");
    assert.equal(e.message, "spell_check failed: ValueError: too long");
    assert.equal(e.remote, true);
    assert.notEqual(e.disconnected, true, "not a disconnection");
    return true;
  });
});

test("after an error the task goes on: the next call is answered", async () => {
  const { box, ws } = await renderRemoteTask();
  const first = await call(box, ws, "nope", {});
  await answer(ws, { handles: first.request.request_id, error: "no remote procedure named 'nope'", update_id: "u1" });
  await assert.rejects(first.promise, /no remote procedure named 'nope'/);

  const second = await call(box, ws, "count", { text: "a b c" });
  await answer(ws, { handles: second.request.request_id, response: JSON.stringify({ words: 3 }), update_id: "u2" });
  assert.deepEqual(await second.promise, { words: 3 });
  assert.equal(box.current.disconnectIssueText, undefined);
});

test("an error answer settles only its own call", async () => {
  const { box, ws } = await renderRemoteTask();
  const a = await call(box, ws, "count", { text: "one" });
  const b = await call(box, ws, "count", { text: "two" });
  await answer(ws, { handles: b.request.request_id, error: "b failed", update_id: "u1" });
  await assert.rejects(b.promise, /b failed/);
  let settled = false;
  a.promise.then(() => (settled = true), () => (settled = true));
  await waitFor(() => true, "a turn");
  assert.equal(settled, false, "the other call still waits for its own answer");
  await answer(ws, { handles: a.request.request_id, response: JSON.stringify({ words: 1 }), update_id: "u2" });
  assert.deepEqual(await a.promise, { words: 1 });
});

test("an answer with neither error nor valid JSON still rejects, as before", async () => {
  const { box, ws } = await renderRemoteTask();
  const { promise, request } = await call(box, ws, "count", {});
  await answer(ws, { handles: request.request_id, response: "{oops", update_id: "u1" });
  await assert.rejects(promise, (e) => e instanceof MephistoError && /not valid JSON/.test(e.message));
});
