// The React hooks rendered with react-dom in a jsdom page, against a recording fetch.

import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, test } from "node:test";
import React from "react";

import {
  CONNECTION_STATUS,
  ErrorBoundary,
  MephistoError,
  MephistoRequestError,
  useMephistoLiveTask,
  useMephistoRemoteProcedureTask,
  useMephistoTask,
} from "../src/index.js";
import { act, inAct, installDom, render, setUserAgent, waitFor } from "./support/dom.js";
import { FakeClock, FakeWebSocket, installFetch, installShim, jsonResponse, removeShim } from "./support/fakes.js";

const h = React.createElement;
let shim;
let server;
let mounted;

/** Renders a component calling `useHook(props)`; `box.current` is the latest result. */
async function renderHook(useHook, props, { strict = false } = {}) {
  const box = { current: null, history: [] };
  function Probe() {
    const value = useHook(props);
    box.current = value;
    box.history.push(value);
    return null;
  }
  const element = strict ? h(React.StrictMode, null, h(Probe)) : h(Probe);
  mounted = await render(element);
  return box;
}

beforeEach(() => {
  installDom("http://localhost:3000/?worker_id=w1&assignment_id=as1");
  shim = installShim();
  server = installFetch({
    "GET /task_config.json": () => ({ block_mobile: false, task_title: "Label the cat" }),
    "POST /request_agent": () => ({ data: { agent_id: "agent-1", worker_id: "7", init_task_data: { image: "cat.png" } } }),
    "POST /submit_task": () => ({ status: "Submitted!" }),
    "POST /submit_metadata": (call) => ({ ok: Object.keys(call.json.metadata) }),
    "POST /log_error": () => ({ status: "ok" }),
  });
  FakeWebSocket.reset();
});

afterEach(async () => {
  if (mounted) await mounted.unmount();
  mounted = null;
  removeShim();
});

describe("useMephistoTask", () => {
  test("loading, then config and agent: the full state", async () => {
    const box = await renderHook(useMephistoTask);
    const first = box.history[0];
    assert.equal(first.isLoading, true);
    assert.equal(first.loaded, false);
    assert.equal(first.taskConfig, null);
    assert.equal(first.agentId, null);
    assert.equal(first.isOnboarding, null);
    assert.equal(first.isPreview, false);
    assert.equal(first.providerWorkerId, "w1");
    assert.equal(first.assignmentId, "as1");

    await waitFor(() => !box.current.isLoading, "loaded");
    const s = box.current;
    assert.deepEqual(s.taskConfig, { block_mobile: false, task_title: "Label the cat" });
    assert.equal(s.agentId, "agent-1");
    assert.equal(s.mephistoAgentId, "agent-1");
    assert.equal(s.mephistoWorkerId, "7");
    assert.deepEqual(s.initialTaskData, { image: "cat.png" });
    assert.equal(s.isOnboarding, false);
    assert.equal(s.blockedReason, null);
    assert.equal(s.blockedExplanation, null);
    assert.equal(s.previewHtml, null);
    assert.equal(s.loadError, null);
    for (const name of ["handleSubmit", "handleMetadataSubmit", "handleFatalError"]) {
      assert.equal(typeof s[name], "function", name);
    }
    assert.deepEqual(server.calls.map((c) => `${c.method} ${c.path}`), ["GET /task_config.json", "POST /request_agent"]);
    assert.equal(server.calls[1].json.provider_data.agent_registration_id, "as1-w1");
  });

  test("handleSubmit posts /submit_task for the current agent and resolves after the provider was told", async () => {
    const box = await renderHook(useMephistoTask);
    await waitFor(() => box.current.agentId !== null, "agent");
    const answer = await inAct(() => box.current.handleSubmit({ label: "cat" }));
    assert.deepEqual(answer, { status: "Submitted!" });
    const submit = server.of("/submit_task")[0];
    assert.equal(submit.json.USED_AGENT_ID, "agent-1");
    assert.deepEqual(submit.json.final_data, { label: "cat" });
    assert.deepEqual(shim.submittedToProvider, [{ label: "cat" }]);
  });

  test("handleSubmit rejects with the server's error, and the page state is unchanged", async () => {
    server.routes["POST /submit_task"] = () => jsonResponse(409, { error: "this task was already submitted" });
    const box = await renderHook(useMephistoTask);
    await waitFor(() => box.current.agentId !== null, "agent");
    const before = box.current;
    await assert.rejects(
      inAct(() => box.current.handleSubmit({ label: "cat" })),
      (e) => e instanceof MephistoRequestError && e.status === 409 && /already submitted/.test(e.message)
    );
    assert.deepEqual(shim.submittedToProvider, []);
    assert.equal(box.current.agentId, before.agentId);
    assert.equal(box.current.isLoading, false);
  });

  test("handleSubmit(data, {files}) sends the multipart variant", async () => {
    const box = await renderHook(useMephistoTask);
    await waitFor(() => box.current.agentId !== null, "agent");
    const file = new File(["meow"], "cat.wav", { type: "audio/wav" });
    await inAct(() => box.current.handleSubmit({ label: "cat" }, { files: { recording: file } }));
    const form = server.of("/submit_task")[0].form;
    assert.equal(form.get("USED_AGENT_ID"), "agent-1");
    assert.deepEqual(JSON.parse(form.get("final_string_data")), { label: "cat" });
    assert.equal(form.get("recording").name, "cat.wav");
  });

  test("handleMetadataSubmit keys its arguments by type and resolves to the server's body", async () => {
    const box = await renderHook(useMephistoTask);
    await waitFor(() => box.current.agentId !== null, "agent");
    const body = await inAct(() => box.current.handleMetadataSubmit({ type: "feedback", text: "fun" }, { no: "type" }));
    assert.deepEqual(body, { ok: ["feedback"] });
    const call = server.of("/submit_metadata")[0];
    assert.deepEqual(call.json.metadata, { feedback: { type: "feedback", text: "fun" } });
    assert.equal(call.json.USED_AGENT_ID, "agent-1");
  });

  test("handleFatalError posts /log_error", async () => {
    const box = await renderHook(useMephistoTask);
    await waitFor(() => box.current.agentId !== null, "agent");
    await inAct(() => box.current.handleFatalError({ error: "boom" }));
    assert.deepEqual(server.of("/log_error")[0].json.error_data, { error: "boom" });
  });

  test("preview: config only, no agent requested, loaded at once; submitting is refused", async () => {
    shim.identity = { worker: null, assignment: null };
    const box = await renderHook(useMephistoTask);
    assert.equal(box.current.isPreview, true);
    await waitFor(() => box.current.taskConfig !== null, "config");
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(box.current.isLoading, false);
    assert.equal(box.current.agentId, null);
    assert.deepEqual(server.calls.map((c) => c.path), ["/task_config.json"]);
    await assert.rejects(box.current.handleSubmit({}), (e) => e instanceof MephistoError && /no agent/.test(e.message));
    assert.equal(server.of("/submit_task").length, 0);
  });

  test("a worker without an assignment is a preview too", async () => {
    shim.identity = { worker: "w1", assignment: null };
    const box = await renderHook(useMephistoTask);
    assert.equal(box.current.isPreview, true);
  });

  test("onboarding: detected by the agent id, submitted nested, then the real task", async () => {
    server.routes["POST /request_agent"] = () => ({
      data: { agent_id: "onboarding-3", worker_id: "7", init_task_data: { quiz: true } },
    });
    server.routes["POST /submit_onboarding"] = () => ({
      data: { agent_id: "agent-9", worker_id: "7", init_task_data: { image: "dog.png" } },
    });
    const box = await renderHook(useMephistoTask);
    await waitFor(() => box.current.agentId !== null, "agent");
    assert.equal(box.current.isOnboarding, true);
    assert.equal(box.current.isLoading, false);
    assert.deepEqual(box.current.initialTaskData, { quiz: true });

    const packet = await inAct(() => box.current.handleSubmit({ answer: 4 }));
    assert.equal(packet.data.agent_id, "agent-9");
    const onboarding = server.of("/submit_onboarding")[0];
    assert.deepEqual(onboarding.json.provider_data, { USED_AGENT_ID: "onboarding-3", onboarding_data: { answer: 4 } });
    assert.equal(server.of("/submit_task").length, 0);
    assert.deepEqual(shim.submittedToProvider, []);

    await waitFor(() => box.current.agentId === "agent-9", "task agent");
    assert.equal(box.current.isOnboarding, false);
    assert.deepEqual(box.current.initialTaskData, { image: "dog.png" });
    await inAct(() => box.current.handleSubmit({ label: "dog" }));
    assert.equal(server.of("/submit_task")[0].json.USED_AGENT_ID, "agent-9");
  });

  test("an agent id that merely contains 'onboarding' is not onboarding", async () => {
    server.routes["POST /request_agent"] = () => ({ data: { agent_id: "agent-onboarding", worker_id: "7" } });
    const box = await renderHook(useMephistoTask);
    await waitFor(() => box.current.agentId !== null, "agent");
    assert.equal(box.current.isOnboarding, false);
    assert.equal(box.current.initialTaskData, null);
  });

  test("failed onboarding: null agent with the server's reason", async () => {
    server.routes["POST /request_agent"] = () => ({ data: { agent_id: "onboarding-3", worker_id: "7" } });
    server.routes["POST /submit_onboarding"] = () => ({
      data: { agent_id: null, worker_id: "7", failure_reason: "You did not pass the qualification quiz." },
    });
    const box = await renderHook(useMephistoTask);
    await waitFor(() => box.current.isOnboarding === true, "onboarding");
    await inAct(() => box.current.handleSubmit({ answer: 5 }));
    await waitFor(() => box.current.blockedReason !== null, "blocked");
    assert.equal(box.current.blockedReason, "null_agent_id");
    assert.equal(box.current.blockedExplanation, "You did not pass the qualification quiz.");
    assert.equal(box.current.agentId, null);
    assert.equal(box.current.isOnboarding, false);
  });

  test("blocked by the server without a reason: the generic explanation; still loading", async () => {
    server.routes["POST /request_agent"] = () => ({ data: { agent_id: null, worker_id: "7" } });
    const box = await renderHook(useMephistoTask);
    await waitFor(() => box.current.blockedReason !== null, "blocked");
    assert.equal(box.current.blockedReason, "null_agent_id");
    assert.match(box.current.blockedExplanation, /code: null_agent_id/);
    assert.equal(box.current.mephistoWorkerId, "7");
    assert.equal(box.current.isLoading, true);
  });

  test("block_mobile on a phone: blocked before requesting an agent", async () => {
    setUserAgent("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 Mobile Safari/537.36");
    server.routes["GET /task_config.json"] = () => ({ block_mobile: true });
    const box = await renderHook(useMephistoTask);
    await waitFor(() => box.current.blockedReason !== null, "blocked");
    assert.equal(box.current.blockedReason, "no_mobile");
    assert.match(box.current.blockedExplanation, /computer/);
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(server.of("/request_agent").length, 0);
  });

  test("a failing /request_agent is reported in loadError instead of hanging silently", async () => {
    server.routes["POST /request_agent"] = () => jsonResponse(500, { error: "internal server error" });
    const box = await renderHook(useMephistoTask);
    await waitFor(() => box.current.loadError !== null, "loadError");
    assert.ok(box.current.loadError instanceof MephistoRequestError);
    assert.match(box.current.loadError.message, /request_agent failed \(HTTP 500\): internal server error/);
    assert.equal(box.current.isLoading, true);
    assert.equal(box.current.taskConfig.task_title, "Label the cat");
  });

  test("StrictMode's double effects do not register twice", async () => {
    const box = await renderHook(useMephistoTask, undefined, { strict: true });
    await waitFor(() => box.current.agentId !== null, "agent");
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(server.of("/task_config.json").length, 1);
    assert.equal(server.of("/request_agent").length, 1);
  });

  test("callbacks are stable across renders", async () => {
    const box = await renderHook(useMephistoTask);
    await waitFor(() => box.current.agentId !== null, "agent");
    assert.equal(box.history[0].handleSubmit, box.current.handleSubmit);
  });
});

describe("useMephistoLiveTask", () => {
  function liveProps(extra = {}) {
    const clock = new FakeClock();
    const log = { live: [], status: [] };
    const props = {
      onLiveUpdate: (u) => log.live.push(u),
      onStatusUpdate: (s) => log.status.push(s),
      socketConfig: { WebSocket: FakeWebSocket, timers: clock.timerApi, now: clock.now },
      ...extra,
    };
    return { props, log, clock };
  }

  test("connect, status and live updates, past updates replayed once, unmount closes", async () => {
    server.routes["POST /request_agent"] = () => ({
      data: {
        agent_id: "agent-1",
        worker_id: "7",
        init_task_data: { past_live_updates: [{ text: "earlier", update_id: "p1" }] },
      },
    });
    const { props, log } = liveProps();
    const box = await renderHook(useMephistoLiveTask, props);
    assert.equal(box.current.connectionStatus, "");
    assert.equal(box.current.agentStatus, null);
    await waitFor(() => box.current.agentId !== null, "agent");
    assert.deepEqual(log.live.map((u) => u.text), ["earlier"]);

    await act(async () => box.current.connect(box.current.agentId));
    const ws = FakeWebSocket.last;
    assert.equal(ws.url, "ws://localhost:3000/?worker_id=w1&assignment_id=as1");
    assert.equal(box.current.connectionStatus, CONNECTION_STATUS.INITIALIZING);
    await act(async () => ws.serverOpen());
    assert.equal(box.current.connectionStatus, CONNECTION_STATUS.CONNECTED);
    assert.deepEqual(ws.packets[0], { ...ws.packets[0], packet_type: "alive", subject_id: "agent-1" });

    await act(async () => {
      ws.serverSend({ packet_type: "client_bound_live_update", data: { text: "earlier", update_id: "p1" } });
      ws.serverSend({ packet_type: "client_bound_live_update", data: { text: "new", update_id: "n1" } });
      ws.serverSend({ packet_type: "update_status", data: { status: "in task" } });
    });
    assert.deepEqual(log.live.map((u) => u.text), ["earlier", "new"], "replayed update not delivered twice");
    assert.deepEqual(log.status, [{ status: "in task" }]);
    assert.equal(box.current.agentStatus, "in task");

    const sent = await inAct(() => box.current.sendLiveUpdate({ text: "my turn" }));
    assert.equal(sent.text, "my turn");
    assert.equal(ws.packets[ws.packets.length - 1].packet_type, "mephisto_bound_live_update");

    await mounted.unmount();
    mounted = null;
    assert.equal(ws.readyState, 3, "socket closed on unmount");
  });

  test("no WebSocket in the browser: blocked with the no_websockets explanation", async () => {
    const box = await renderHook(useMephistoLiveTask, {});
    assert.equal(typeof globalThis.WebSocket, "undefined");
    assert.equal(box.current.blockedReason, "no_websockets");
    assert.match(box.current.blockedExplanation, /WebSocket/);
  });

  test("useMephistoRemoteProcedureTask: connects by itself, calls and answers", async () => {
    const { props } = liveProps();
    const box = await renderHook(useMephistoRemoteProcedureTask, props);
    await waitFor(() => FakeWebSocket.instances.length === 1, "auto connect");
    const ws = FakeWebSocket.last;
    await act(async () => ws.serverOpen());
    assert.equal(box.current.connectionStatus, CONNECTION_STATUS.CONNECTED);
    assert.equal(typeof box.current._fullSocketProps.sendLiveUpdate, "function");
    assert.equal(box.current.sendLiveUpdate, undefined);

    const add = box.current.remoteProcedure("add");
    const result = add({ a: 2, b: 3 });
    await waitFor(() => ws.packets.some((p) => p.packet_type === "mephisto_bound_live_update"), "request sent");
    const request = ws.packets.find((p) => p.packet_type === "mephisto_bound_live_update").data;
    assert.equal(request.target, "add");
    assert.deepEqual(JSON.parse(request.args), { a: 2, b: 3 });
    await act(async () =>
      ws.serverSend({
        packet_type: "client_bound_live_update",
        data: { handles: request.request_id, response: JSON.stringify({ sum: 5 }), update_id: "r1" },
      })
    );
    assert.deepEqual(await result, { sum: 5 });

    const pending = assert.rejects(add.invoke({ a: 1, b: 1 }), (e) => e.disconnected === true && typeof e.reason === "string");
    await act(async () => ws.serverSend({ packet_type: "update_status", data: { status: "expired" } }));
    await pending;
    assert.match(box.current.disconnectIssueText, /expired/);
    await assert.rejects(add({}), (e) => e.disconnected === true);
  });
});

describe("ErrorBoundary", () => {
  test("shows the error and calls handleError with the message and component stack", async (t) => {
    t.mock.method(console, "error", () => {}); // React logs caught errors
    const reports = [];
    function Broken() {
      throw new Error("render exploded");
    }
    mounted = await render(h(ErrorBoundary, { handleError: (d) => reports.push(d) }, h(Broken)));
    assert.equal(reports.length, 1);
    assert.equal(reports[0].error, "render exploded");
    assert.match(reports[0].errorInfo.componentStack, /Broken/);
    assert.match(mounted.container.textContent, /render exploded/);
  });

  test("renders its children when nothing fails", async () => {
    mounted = await render(h(ErrorBoundary, null, h("p", null, "fine")));
    assert.equal(mounted.container.textContent, "fine");
  });
});
