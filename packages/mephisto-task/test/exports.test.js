// The public surface: every name mephisto-task 2.0.4 exports (except axiosInstance, which
// belongs to its axios transport), React-free core, and source syntax old bundlers parse.

import assert from "node:assert/strict";
import { readFileSync, readdirSync } from "node:fs";
import { test } from "node:test";
import { transform } from "esbuild";

import * as core from "../src/core.js";
import * as index from "../src/index.js";

// Exported by mephisto-task@2.0.4 (src/index.js, utils.js, live.js, RemoteTask.js,
// MephistoContext.js).
const PUBLIC_2_0_4 = [
  "AGENT_STATUS",
  "CONNECTION_STATUS",
  "ErrorBoundary",
  "MephistoContext",
  "STATUS_TO_TEXT_MAP",
  "doesSupportWebsockets",
  "getBlockedExplanation",
  "getTaskConfig",
  "isMobile",
  "libVersion",
  "postCompleteOnboarding",
  "postCompleteTask",
  "postData",
  "postErrorLog",
  "postMetadata",
  "postProviderRequest",
  "pythonTime",
  "requestAgent",
  "useMephistoLiveTask",
  "useMephistoRemoteProcedureTask",
  "useMephistoSocket",
  "useMephistoTask",
];

const OURS = [
  "BLOCKED_REASON",
  "MephistoError",
  "MephistoRequestError",
  "MephistoSocket",
  "PACKET_TYPE",
  "SOCKET_DEFAULTS",
  "collectMetadata",
  "defaultSocketUrl",
  "endpointUrl",
  "isFinalCloseCode",
  "normalizeFiles",
  "providerQueryString",
  "readAgentRegistration",
  "readProviderIdentity",
  "request",
  "resolveProviderURLParams",
  "retryDelayMs",
  "retryPolicy",
  "uuidv4",
];

const REACT_ONLY = [
  "ErrorBoundary",
  "MephistoContext",
  "useMephistoLiveTask",
  "useMephistoRemoteProcedureTask",
  "useMephistoSocket",
  "useMephistoTask",
];

test("the index exports exactly the 2.0.4 names plus ours", () => {
  assert.deepEqual(Object.keys(index).sort(), [...PUBLIC_2_0_4, ...OURS].sort());
});

test("the core exports everything but the React parts", () => {
  const expected = [...PUBLIC_2_0_4, ...OURS].filter((n) => !REACT_ONLY.includes(n)).sort();
  assert.deepEqual(Object.keys(core).sort(), expected);
});

test("status strings are the wire values", () => {
  assert.equal(index.AGENT_STATUS.IN_TASK, "in task");
  assert.equal(index.AGENT_STATUS.MEPHISTO_DISCONNECT, "mephisto disconnect");
  assert.equal(index.CONNECTION_STATUS.DISCONNECTED_SERVER, "disconnected_server");
  for (const status of ["expired", "timeout", "disconnect", "returned", "partner disconnect", "mephisto disconnect"]) {
    assert.equal(typeof index.STATUS_TO_TEXT_MAP[status], "string", status);
  }
});

test("the core does not import React", () => {
  const dir = new URL("../src/", import.meta.url);
  for (const file of ["core.js", "constants.js", "http.js", "socket.js"]) {
    const text = readFileSync(new URL(file, dir), "utf8");
    assert.doesNotMatch(text, /from "react"/, file);
  }
});

test("sources are plain ES2019 (no ?. ?? or class fields for webpack 4) without JSX", async () => {
  // esbuild lowers newer syntax for an older target: an ES2019 build that differs from an
  // esnext build means the source uses something newer. The "js" loader rejects JSX.
  const dir = new URL("../src/", import.meta.url);
  for (const file of readdirSync(dir).filter((f) => f.endsWith(".js"))) {
    const code = readFileSync(new URL(file, dir), "utf8");
    const options = { loader: "js", format: "esm", sourcefile: file };
    const latest = await transform(code, { ...options, target: "esnext" });
    const es2019 = await transform(code, { ...options, target: "es2019" });
    assert.equal(es2019.code, latest.code, `${file} uses syntax newer than ES2019`);
  }
});
