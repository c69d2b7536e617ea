// The HTTP requests of the worker protocol, against a recording fetch (no DOM).

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { afterEach, beforeEach, describe, test } from "node:test";

import {
  MephistoError,
  MephistoRequestError,
  collectMetadata,
  getBlockedExplanation,
  getTaskConfig,
  isMobile,
  libVersion,
  normalizeFiles,
  postCompleteOnboarding,
  postCompleteTask,
  postData,
  postErrorLog,
  postMetadata,
  readProviderIdentity,
  requestAgent,
  retryDelayMs,
  retryPolicy,
} from "../src/core.js";
import { installFetch, installShim, jsonResponse, removeShim } from "./support/fakes.js";

let shim;
let server;

beforeEach(() => {
  globalThis.location = new URL("http://task.example:3000/some/page/?worker_id=w1");
  shim = installShim();
  server = installFetch({
    "GET /task_config.json": (call) => ({
      task_title: "T",
      mephisto_task_version: call.url.searchParams.get("mephisto_task_version"),
    }),
    "POST /request_agent": () => ({
      data: { agent_id: "agent-1", worker_id: "7", init_task_data: { a: 1 } },
    }),
    "POST /submit_onboarding": () => ({ data: { agent_id: "5", worker_id: "7", init_task_data: { b: 2 } } }),
    "POST /submit_task": () => ({ status: "Submitted!" }),
    "POST /submit_metadata": (call) => ({ stored: Object.keys(call.json.metadata) }),
    "POST /log_error": () => ({ status: "ok" }),
  });
});

afterEach(() => {
  removeShim();
  delete globalThis.location;
});

function approxNowSeconds(value) {
  assert.equal(typeof value, "number");
  assert.ok(!Number.isInteger(value) || value > 1e9, "seconds, not milliseconds");
  assert.ok(Math.abs(value - Date.now() / 1000) < 5, `client_timestamp ${value} is not now in seconds`);
}

describe("package metadata", () => {
  test("libVersion is the package.json version", () => {
    const pkg = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8"));
    assert.equal(libVersion, pkg.version);
    assert.equal(pkg.name, "mephisto-task");
  });
});

describe("provider identity", () => {
  test("worker and assignment present: not a preview", () => {
    assert.deepEqual(readProviderIdentity(), { providerWorkerId: "w1", assignmentId: "as1", isPreview: false });
  });

  test("no worker: preview", () => {
    shim.identity = { worker: null, assignment: "as1" };
    assert.equal(readProviderIdentity().isPreview, true);
  });

  test("no assignment: preview (either id missing is enough)", () => {
    shim.identity = { worker: "w1", assignment: null };
    assert.equal(readProviderIdentity().isPreview, true);
  });

  test("undefined is treated like null", () => {
    shim.identity = { worker: undefined, assignment: "as1" };
    const identity = readProviderIdentity();
    assert.equal(identity.providerWorkerId, null);
    assert.equal(identity.isPreview, true);
  });

  test("a page without the shim gets an error naming the missing script", () => {
    removeShim();
    assert.throws(() => readProviderIdentity(), (e) => e instanceof MephistoError && /wrap_crowd_source\.js/.test(e.message));
  });
});

describe("GET /task_config.json", () => {
  test("sends the library version and the provider URL params", async () => {
    const config = await getTaskConfig();
    assert.equal(config.task_title, "T");
    const [call] = server.calls;
    assert.equal(call.method, "GET");
    assert.equal(call.url.origin, "http://task.example:3000");
    assert.equal(call.path, "/task_config.json", "at the origin root, not under the page path");
    assert.equal(call.url.searchParams.get("mephisto_task_version"), libVersion);
    assert.equal(call.url.searchParams.get("worker_id"), "w1");
    assert.equal(call.url.searchParams.get("assignment_id"), "as1");
  });

  test("a version mismatch only warns", async (t) => {
    server.routes["GET /task_config.json"] = () => ({ mephisto_task_version: "1.0.0" });
    const warn = t.mock.method(console, "warn", () => {});
    await getTaskConfig();
    assert.equal(warn.mock.callCount(), 1);
    assert.match(warn.mock.calls[0].arguments[0], /1\.0\.0/);
  });

  test("a non-object answer is an error", async () => {
    server.routes["GET /task_config.json"] = () => new Response("<html>oops</html>", { status: 200 });
    await assert.rejects(getTaskConfig(), (e) => e instanceof MephistoRequestError && /JSON object/.test(e.message));
  });

  test("getProviderURLParams may be a plain object", async () => {
    globalThis.getProviderURLParams = { hitId: "H1" };
    await getTaskConfig();
    assert.equal(server.calls[0].url.searchParams.get("hitId"), "H1");
  });

  test("an exception inside getProviderURLParams fails the request", async () => {
    globalThis.getProviderURLParams = () => {
      throw new TypeError("shim broke");
    };
    await assert.rejects(getTaskConfig(), /shim broke/);
    assert.equal(server.calls.length, 0);
  });
});

describe("POST /request_agent", () => {
  test("body is {provider_data: <getAgentRegistration()>, client_timestamp}", async () => {
    const packet = await requestAgent();
    assert.deepEqual(packet.data, { agent_id: "agent-1", worker_id: "7", init_task_data: { a: 1 } });
    const [call] = server.calls;
    assert.equal(call.method, "POST");
    assert.equal(call.url.origin + call.path, "http://task.example:3000/request_agent");
    assert.equal(call.url.searchParams.get("worker_id"), "w1");
    assert.match(call.contentType, /^application\/json/);
    assert.deepEqual(Object.keys(call.json).sort(), ["client_timestamp", "provider_data"]);
    assert.deepEqual(call.json.provider_data, {
      worker_name: "w1",
      assignment_id: "as1",
      agent_registration_id: "as1-w1",
      provider_type: "mock",
    });
    approxNowSeconds(call.json.client_timestamp);
  });

  test("agent_id that is neither a string nor null is refused", async () => {
    server.routes["POST /request_agent"] = () => ({ data: { agent_id: 12 } });
    await assert.rejects(requestAgent(), /agent_id must be a string or null/);
  });

  test("an answer without data is refused", async () => {
    server.routes["POST /request_agent"] = () => ({ agent_id: "x" });
    await assert.rejects(requestAgent(), /expected \{"data"/);
  });

  test("a 4xx surfaces the server's error text", async () => {
    server.routes["POST /request_agent"] = () => jsonResponse(400, { error: "missing field 'provider_data'" });
    await assert.rejects(requestAgent(), (e) => {
      assert.ok(e instanceof MephistoRequestError);
      assert.equal(e.status, 400);
      assert.equal(e.serverMessage, "missing field 'provider_data'");
      assert.match(e.message, /POST \/request_agent failed \(HTTP 400\): missing field 'provider_data'/);
      return true;
    });
  });
});

describe("POST /submit_onboarding", () => {
  test("body nests USED_AGENT_ID and onboarding_data in provider_data", async () => {
    const packet = await postCompleteOnboarding("onboarding-1", { ans: 4 });
    assert.equal(packet.data.agent_id, "5");
    const [call] = server.calls;
    assert.equal(call.path, "/submit_onboarding");
    assert.deepEqual(call.json.provider_data, { USED_AGENT_ID: "onboarding-1", onboarding_data: { ans: 4 } });
    approxNowSeconds(call.json.client_timestamp);
    assert.deepEqual(shim.submittedToProvider, [], "onboarding is not submitted to the provider");
  });
});

describe("POST /submit_task", () => {
  test("JSON body, then handleSubmitToProvider, resolves to the server's answer", async () => {
    const answer = await postCompleteTask("5", { final: 1 });
    assert.deepEqual(answer, { status: "Submitted!" });
    const [call] = server.calls;
    assert.equal(call.path, "/submit_task");
    assert.match(call.contentType, /^application\/json/);
    assert.deepEqual(Object.keys(call.json).sort(), ["USED_AGENT_ID", "client_timestamp", "final_data"]);
    assert.equal(call.json.USED_AGENT_ID, "5");
    assert.deepEqual(call.json.final_data, { final: 1 });
    assert.deepEqual(shim.submittedToProvider, [{ final: 1 }]);
  });

  test("handleSubmitToProvider is called only after the server answered", async () => {
    let answered = false;
    server.routes["POST /submit_task"] = async () => {
      await new Promise((r) => setTimeout(r, 20));
      assert.deepEqual(shim.submittedToProvider, [], "provider told before the server answered");
      answered = true;
      return { status: "Submitted!" };
    };
    await postCompleteTask("5", { x: 1 });
    assert.ok(answered);
    assert.equal(shim.submittedToProvider.length, 1);
  });

  test("a server error rejects with its message and does not reach the provider", async () => {
    server.routes["POST /submit_task"] = () => jsonResponse(403, { error: "agent 5 is not yours" });
    await assert.rejects(postCompleteTask("5", { x: 1 }), (e) => {
      assert.ok(e instanceof MephistoRequestError);
      assert.equal(e.status, 403);
      assert.equal(e.serverMessage, "agent 5 is not yours");
      assert.deepEqual(e.body, { error: "agent 5 is not yours" });
      assert.match(e.message, /agent 5 is not yours/);
      return true;
    });
    assert.deepEqual(shim.submittedToProvider, []);
  });

  test("a non-JSON error page still gives a clear message", async () => {
    server.routes["POST /submit_task"] = () =>
      new Response("Bad Gateway", { status: 502, statusText: "Bad Gateway" });
    await assert.rejects(postCompleteTask("5", {}), (e) => e.status === 502 && /HTTP 502\): Bad Gateway/.test(e.message));
  });

  test("a 503 is retried after the server's Retry-After, the same submit each time", async () => {
    const waits = [];
    const realSleep = retryPolicy.sleep;
    retryPolicy.sleep = async (ms) => { waits.push(ms); };
    try {
      let n = 0;
      server.routes["POST /submit_task"] = () => (++n <= 2
        ? new Response(JSON.stringify({ error: "operator out of reach" }),
          { status: 503, headers: { "Retry-After": "2", "Content-Type": "application/json" } })
        : { status: "Submitted!" });
      assert.deepEqual(await postCompleteTask("5", { x: 1 }), { status: "Submitted!" });
      const sent = server.of("/submit_task");
      assert.equal(sent.length, 3);
      for (const call of sent) assert.deepEqual(call.json, sent[0].json);
      assert.deepEqual(sent[0].json.final_data, { x: 1 });
      assert.equal(waits.length, 2);
      for (const ms of waits) assert.ok(ms >= 1800 && ms <= 2200, `waited ${ms} ms`);
      assert.equal(shim.submittedToProvider.length, 1);
    } finally {
      retryPolicy.sleep = realSleep;
    }
  });

  test("a 503 that lasts past maxRetries rejects with status 503", async () => {
    const realSleep = retryPolicy.sleep;
    const realMax = retryPolicy.maxRetries;
    retryPolicy.sleep = async () => {};
    retryPolicy.maxRetries = 3;
    try {
      server.routes["POST /submit_task"] = () => jsonResponse(503, { error: "still down" });
      await assert.rejects(postCompleteTask("5", {}), (e) => e.status === 503 && e.serverMessage === "still down");
      assert.equal(server.of("/submit_task").length, 4);
      assert.deepEqual(shim.submittedToProvider, []);
    } finally {
      retryPolicy.sleep = realSleep;
      retryPolicy.maxRetries = realMax;
    }
  });

  test("retryDelayMs: Retry-After seconds, else doubling, capped", () => {
    assert.ok(Math.abs(retryDelayMs("5", 0) - 5000) <= 500);
    assert.ok(Math.abs(retryDelayMs(null, 0) - 1000) <= 100);
    assert.ok(Math.abs(retryDelayMs(null, 2) - 4000) <= 400);
    assert.equal(retryDelayMs("999", 0), 30000);
    assert.ok(Math.abs(retryDelayMs("soon", 1) - 2000) <= 200);
  });

  test("an unreachable server rejects with status 0", async () => {
    globalThis.fetch = async () => {
      throw new TypeError("fetch failed");
    };
    await assert.rejects(postCompleteTask("5", {}), (e) => e.status === 0 && /could not reach the server/.test(e.message));
  });

  test("with files: multipart USED_AGENT_ID, final_string_data and the file parts", async () => {
    const photo = new File(["PNGDATA"], "cat.png", { type: "image/png" });
    const notes = new File(["hello"], "notes.txt", { type: "text/plain" });
    const answer = await postCompleteTask("5", { caption: "a cat", photo: { name: "cat.png" } }, {
      photo,
      attachments: [notes],
    });
    assert.deepEqual(answer, { status: "Submitted!" });
    const [call] = server.calls;
    assert.match(call.contentType, /^multipart\/form-data; boundary=/);
    assert.equal(call.json, undefined);
    const form = call.form;
    assert.equal(form.get("USED_AGENT_ID"), "5");
    assert.deepEqual(JSON.parse(form.get("final_string_data")), { caption: "a cat", photo: { name: "cat.png" } });
    const sentPhoto = form.get("photo");
    assert.equal(sentPhoto.name, "cat.png");
    assert.equal(sentPhoto.type, "image/png");
    assert.equal(await sentPhoto.text(), "PNGDATA");
    assert.equal(await form.get("attachments").text(), "hello");
    assert.deepEqual(shim.submittedToProvider, [{ caption: "a cat", photo: { name: "cat.png" } }]);
  });

  test("an empty files argument keeps the JSON variant", async () => {
    await postCompleteTask("5", { a: 1 }, {});
    await postCompleteTask("5", { a: 1 }, []);
    assert.ok(server.calls.every((c) => c.json && c.json.final_data.a === 1));
  });

  test("postData sends a FormData as multipart (Mephisto's static_html_task does this)", async () => {
    const form = new FormData();
    form.append("USED_AGENT_ID", "5");
    form.append("final_string_data", "{}");
    await postData("/submit_task", form);
    assert.match(server.calls[0].contentType, /^multipart\/form-data/);
    assert.equal(server.calls[0].form.get("USED_AGENT_ID"), "5");
  });
});

describe("normalizeFiles", () => {
  const a = new Blob(["a"]);
  const b = new File(["b"], "b.txt");
  test("accepts objects, arrays, pairs and FormData", () => {
    assert.deepEqual(normalizeFiles({ x: a, y: [b] }), [["x", a], ["y", b]]);
    assert.deepEqual(normalizeFiles([b, ["z", a]]), [["file", b], ["z", a]]);
    const form = new FormData();
    form.append("text", "not a file");
    form.append("f", b);
    const pairs = normalizeFiles(form);
    assert.equal(pairs.length, 1);
    assert.equal(pairs[0][0], "f");
    assert.deepEqual(normalizeFiles(undefined), []);
  });

  test("refuses values that are not files", () => {
    assert.throws(() => normalizeFiles({ x: "text" }), /not a File or Blob/);
  });
});

describe("metadata and error log", () => {
  test("collectMetadata keys the arguments by their type", () => {
    assert.deepEqual(collectMetadata([{ type: "feedback", text: "ok" }, { no: "type" }, null, "x"]), {
      feedback: { type: "feedback", text: "ok" },
    });
  });

  test("POST /submit_metadata is flat and resolves to the server's body", async () => {
    const body = await postMetadata("5", { feedback: { type: "feedback", text: "ok" } });
    assert.deepEqual(body, { stored: ["feedback"] });
    const [call] = server.calls;
    assert.equal(call.json.USED_AGENT_ID, "5");
    assert.deepEqual(call.json.metadata, { feedback: { type: "feedback", text: "ok" } });
    approxNowSeconds(call.json.client_timestamp);
  });

  test("POST /log_error allows a null agent", async () => {
    await postErrorLog(undefined, { error: "boom", errorInfo: {} });
    const [call] = server.calls;
    assert.equal(call.path, "/log_error");
    assert.equal(call.json.USED_AGENT_ID, null);
    assert.deepEqual(call.json.error_data, { error: "boom", errorInfo: {} });
  });
});

describe("blocking helpers", () => {
  test("getBlockedExplanation: fixed texts and a fallback naming the code", () => {
    assert.match(getBlockedExplanation("no_mobile"), /computer/);
    assert.match(getBlockedExplanation("no_websockets"), /WebSocket/);
    assert.match(getBlockedExplanation("null_agent_id"), /code: null_agent_id/);
    assert.match(getBlockedExplanation("toString"), /code: toString/);
  });

  test("isMobile reads the user agent", (t) => {
    const desktop = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120 Safari/537.36";
    const phone = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148";
    const original = Object.getOwnPropertyDescriptor(globalThis, "navigator");
    t.after(() => {
      if (original) Object.defineProperty(globalThis, "navigator", original);
      else delete globalThis.navigator;
    });
    for (const [agent, expected] of [[desktop, false], [phone, true]]) {
      Object.defineProperty(globalThis, "navigator", { value: { userAgent: agent }, configurable: true });
      assert.equal(isMobile(), expected, agent);
    }
  });
});
