// The HTTP half of the worker protocol (docs/wire-protocol.md sections 1 and 2).
//
// No React and no dependencies: `fetch`, `FormData` and the provider shim's page globals
// (`wrap_crowd_source.js`), all looked up when called, never when imported.
// Every request function returns a Promise that rejects with a MephistoError on failure
// (for a server answer outside 2xx: a MephistoRequestError carrying the server's `error`).

import { BLOCKED_REASON, libVersion } from "./constants.js";

/* global getWorkerName, getAssignmentId, getAgentRegistration,
   handleSubmitToProvider, getProviderURLParams */

/** Base class of the errors this package raises or rejects with. */
export class MephistoError extends Error {
  constructor(message, options) {
    super(message, options);
    this.name = "MephistoError";
  }
}

/**
 * A request that failed: the server answered outside 2xx, could not be reached, or
 * answered something that is not what the protocol promises.
 * `status` is the HTTP status (0 when there was no answer); `serverMessage` is the
 * `error` field of the server's JSON body, when it had one; `body` is the parsed body.
 */
export class MephistoRequestError extends MephistoError {
  constructor(message, { method, path, status = 0, body = null, serverMessage = null, cause } = {}) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = "MephistoRequestError";
    this.method = method;
    this.path = path;
    this.status = status;
    this.body = body;
    this.serverMessage = serverMessage;
  }
}

/* ============================ provider shim globals ============================ */

// The shim defines classic-script globals; they are read as bare names (which also
// finds top-level `let`/`const` of classic scripts) and only through `typeof`, so a
// missing one is detected instead of throwing a ReferenceError.
function shimFunction(name) {
  let fn;
  switch (name) {
    case "getWorkerName":
      fn = typeof getWorkerName === "undefined" ? undefined : getWorkerName;
      break;
    case "getAssignmentId":
      fn = typeof getAssignmentId === "undefined" ? undefined : getAssignmentId;
      break;
    case "getAgentRegistration":
      fn = typeof getAgentRegistration === "undefined" ? undefined : getAgentRegistration;
      break;
    case "handleSubmitToProvider":
      fn = typeof handleSubmitToProvider === "undefined" ? undefined : handleSubmitToProvider;
      break;
    default:
      throw new MephistoError(`unknown provider global ${name}`);
  }
  if (typeof fn !== "function") {
    throw new MephistoError(
      `mephisto-task: the page defines no ${name}() function. Load the provider script ` +
        `(<script src="/wrap_crowd_source.js"></script>) before the task bundle.`
    );
  }
  return fn;
}

/**
 * Who is looking at the page, from the provider shim: `{providerWorkerId, assignmentId,
 * isPreview}`. Preview when either id is missing (null; undefined is treated the same).
 */
export function readProviderIdentity() {
  const worker = shimFunction("getWorkerName")();
  const assignment = shimFunction("getAssignmentId")();
  const providerWorkerId = worker === undefined ? null : worker;
  const assignmentId = assignment === undefined ? null : assignment;
  return {
    providerWorkerId,
    assignmentId,
    isPreview: providerWorkerId === null || assignmentId === null,
  };
}

/** The shim's `getAgentRegistration()`: sent verbatim as `provider_data` of /request_agent. */
export function readAgentRegistration() {
  return shimFunction("getAgentRegistration")();
}

/**
 * The shim's optional `getProviderURLParams` (a function or a plain object), merged into
 * the query string of every HTTP request. Absent means none; if the function throws, the
 * request fails with that error.
 */
export function resolveProviderURLParams() {
  if (typeof getProviderURLParams === "undefined" || !getProviderURLParams) return null;
  const value =
    typeof getProviderURLParams === "function" ? getProviderURLParams() : getProviderURLParams;
  return value && typeof value === "object" ? value : null;
}

/* ================================ small helpers ================================ */

/** Seconds since the epoch as a float, the protocol's `client_timestamp`. */
export function pythonTime() {
  return Date.now() / 1000;
}

/** True for phone and tablet browsers (by user agent), as `block_mobile` needs. */
export function isMobile() {
  const nav = globalThis.navigator;
  const agent = nav && typeof nav.userAgent === "string" ? nav.userAgent : "";
  return /Android|iPhone|iPad|iPod|Mobile|BlackBerry|IEMobile|Opera Mini|webOS/i.test(agent);
}

/** True when the browser has a WebSocket implementation. */
export function doesSupportWebsockets() {
  const ws = globalThis.WebSocket;
  return typeof ws === "function" || (typeof ws === "object" && ws !== null);
}

const BLOCKED_EXPLANATIONS = {
  [BLOCKED_REASON.NO_MOBILE]:
    "This task does not work on phones or tablets. Please open it on a computer.",
  [BLOCKED_REASON.NO_WEBSOCKETS]:
    "This task needs a browser with WebSocket support. Please use an up-to-date browser.",
};

/** Worker-facing sentence for a `blockedReason` code. */
export function getBlockedExplanation(reason) {
  if (Object.prototype.hasOwnProperty.call(BLOCKED_EXPLANATIONS, reason)) {
    return BLOCKED_EXPLANATIONS[reason];
  }
  return `You cannot work on this task at the moment (code: ${reason}).`;
}

/* =================================== requests =================================== */

function pageHref() {
  const loc = globalThis.location;
  return loc && typeof loc.href === "string" && loc.href ? loc.href : null;
}

function appendParam(search, key, value) {
  if (value === null || value === undefined) return;
  if (Array.isArray(value)) {
    for (const item of value) appendParam(search, `${key}[]`, item);
  } else if (value instanceof Date) {
    search.append(key, value.toISOString());
  } else if (typeof value === "object") {
    search.append(key, JSON.stringify(value));
  } else {
    search.append(key, String(value));
  }
}

/** The provider's URL params as a query string without "?" ("" when there are none). */
export function providerQueryString() {
  const params = resolveProviderURLParams();
  if (!params) return "";
  const search = new URLSearchParams();
  for (const key of Object.keys(params)) appendParam(search, key, params[key]);
  return search.toString();
}

/**
 * Absolute URL of an endpoint (`/submit_task` resolves against the origin root, not the
 * page's path), with `params` and the provider's URL params in the query string.
 */
export function endpointUrl(path, params) {
  const merged = Object.assign({}, params, resolveProviderURLParams());
  const search = new URLSearchParams();
  for (const key of Object.keys(merged)) appendParam(search, key, merged[key]);
  const query = search.toString();
  const href = pageHref();
  if (href === null) return path + (query ? (path.includes("?") ? "&" : "?") + query : "");
  const url = new URL(path, href);
  for (const [key, value] of search) url.searchParams.append(key, value);
  return url.toString();
}

function isFormData(value) {
  return typeof FormData !== "undefined" && value instanceof FormData;
}

function isBlob(value) {
  return typeof Blob !== "undefined" && value instanceof Blob;
}

async function readBody(response) {
  const text = await response.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch (e) {
    return text;
  }
}

/**
 * How requests answered 503 are retried: at most `maxRetries` times, each after the
 * server's `Retry-After` (seconds; else `defaultDelayMs`, doubling), at most
 * `maxDelayMs`. Tests may replace `sleep`.
 */
export const retryPolicy = {
  maxRetries: 20,
  defaultDelayMs: 1000,
  maxDelayMs: 30000,
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
};

/** Milliseconds to wait before retry number `attempt` (0-based) after a 503. */
export function retryDelayMs(retryAfter, attempt) {
  const seconds = retryAfter === null || retryAfter === undefined ? NaN : Number(retryAfter);
  const base = Number.isFinite(seconds) && seconds >= 0
    ? seconds * 1000
    : retryPolicy.defaultDelayMs * 2 ** Math.min(attempt, 10);
  const jitter = 0.9 + Math.random() * 0.2;
  return Math.min(retryPolicy.maxDelayMs, Math.round(base * jitter));
}

/**
 * One request to the task server. `body` is sent as JSON, or as multipart when it is a
 * FormData. Resolves to the parsed JSON body (or the raw text, or null when empty).
 */
export async function request(method, path, { body, params } = {}) {
  const fetchImpl = globalThis.fetch;
  if (typeof fetchImpl !== "function") {
    throw new MephistoError("mephisto-task needs fetch(), which this browser does not have.");
  }
  const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (isFormData(body)) {
    init.body = body; // the browser sets multipart/form-data with its boundary
  } else if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const url = endpointUrl(path, params);
  let response;
  for (let attempt = 0; ; attempt++) {
    try {
      response = await fetchImpl(url, init);
    } catch (cause) {
      const why = cause && cause.message ? cause.message : String(cause);
      throw new MephistoRequestError(
        `${method} ${path} failed: could not reach the server (${why})`,
        { method, path, cause }
      );
    }
    if (response.status !== 503 || attempt >= retryPolicy.maxRetries) break;
    // 503: the server cannot take it right now (its database or, behind a router, its
    // operator is out of reach); nothing was done, so the same request is sent again
    // (submits are idempotent) after the wait the server asks for.
    await readBody(response);
    await retryPolicy.sleep(retryDelayMs(response.headers.get("Retry-After"), attempt));
  }
  const data = await readBody(response);
  if (!response.ok) {
    const serverMessage =
      data && typeof data === "object" && typeof data.error === "string" ? data.error : null;
    const what = serverMessage || `${response.statusText || "no error message"}`;
    throw new MephistoRequestError(
      `${method} ${path} failed (HTTP ${response.status}): ${what}`,
      { method, path, status: response.status, body: data, serverMessage }
    );
  }
  return data;
}

function invalidAnswer(method, path, body, what) {
  return new MephistoRequestError(`${method} ${path}: unexpected answer from the server, ${what}`, {
    method,
    path,
    status: 200,
    body,
  });
}

/** Checks the `{"data": {"agent_id": string|null, ...}}` shape of an agent answer. */
function checkAgentPacket(packet, path) {
  if (!packet || typeof packet !== "object" || !packet.data || typeof packet.data !== "object") {
    throw invalidAnswer("POST", path, packet, 'expected {"data": {...}}');
  }
  const agentId = packet.data.agent_id;
  if (agentId !== null && typeof agentId !== "string") {
    throw invalidAnswer("POST", path, packet, "data.agent_id must be a string or null");
  }
  return packet;
}

/** POST (JSON, or multipart for a FormData) to `url`; resolves to the answer's body. */
export function postData(url = "", data = {}) {
  return request("POST", url, { body: data });
}

/**
 * GET /task_config.json?mephisto_task_version=... ; resolves to the task config object.
 * A server expecting another client version only causes a console warning.
 */
export async function getTaskConfig() {
  const path = "/task_config.json";
  const config = await request("GET", path, { params: { mephisto_task_version: libVersion } });
  if (!config || typeof config !== "object" || Array.isArray(config)) {
    throw invalidAnswer("GET", path, config, "expected a JSON object");
  }
  if (config.mephisto_task_version !== undefined && config.mephisto_task_version !== libVersion) {
    console.warn(
      `mephisto-task ${libVersion}: the server expects client version ` +
        `${config.mephisto_task_version}.`
    );
  }
  return config;
}

/** POST `{provider_data: data, client_timestamp}` to `endpoint`; resolves to the agent packet. */
export async function postProviderRequest(endpoint, data) {
  const packet = await request("POST", endpoint, {
    body: { provider_data: data, client_timestamp: pythonTime() },
  });
  return checkAgentPacket(packet, endpoint);
}

/**
 * POST /request_agent with the shim's registration (or `registration` if given).
 * Resolves to `{data: {agent_id, worker_id, init_task_data, failure_reason}}`.
 */
export function requestAgent(registration) {
  return Promise.resolve()
    .then(() => (registration === undefined ? readAgentRegistration() : registration))
    .then((providerData) => postProviderRequest("/request_agent", providerData));
}

/** POST /submit_onboarding; resolves to the next agent packet (same shape as requestAgent). */
export function postCompleteOnboarding(agentId, onboardingData) {
  return postProviderRequest("/submit_onboarding", {
    USED_AGENT_ID: agentId,
    onboarding_data: onboardingData,
  });
}

/**
 * Normalizes the `files` argument of postCompleteTask to `[fieldName, Blob]` pairs.
 * Accepts a FormData (its file entries), an array of Files or of `[name, Blob]` pairs,
 * or an object mapping field names to a Blob, a FileList or an array of Blobs.
 */
export function normalizeFiles(files) {
  if (files === null || files === undefined) return [];
  const pairs = [];
  const add = (name, value) => {
    if (isBlob(value)) {
      pairs.push([String(name), value]);
    } else if (value && typeof value === "object" && typeof value.length === "number") {
      for (let i = 0; i < value.length; i++) add(name, value[i]);
    } else if (value !== null && value !== undefined) {
      throw new MephistoError(`files: the value for '${name}' is not a File or Blob`);
    }
  };
  if (isFormData(files)) {
    for (const [name, value] of files.entries()) if (isBlob(value)) pairs.push([name, value]);
  } else if (Array.isArray(files)) {
    for (const item of files) {
      if (Array.isArray(item) && item.length === 2) add(item[0], item[1]);
      else add("file", item);
    }
  } else if (typeof files === "object") {
    for (const name of Object.keys(files)) add(name, files[name]);
  } else {
    throw new MephistoError("files must be a FormData, an array or an object");
  }
  return pairs;
}

/**
 * POST /submit_task, then tell the provider (`handleSubmitToProvider(data)`) once the
 * server answered 2xx (our server answers only after the data is committed).
 * Without files: JSON `{USED_AGENT_ID, final_data, client_timestamp}`. With files:
 * multipart `USED_AGENT_ID`, `final_string_data` (JSON of `data`) and one part per file.
 * Resolves to the server's answer (`{"status": "Submitted!"}` from our server).
 */
export async function postCompleteTask(agentId, data, files) {
  const pairs = normalizeFiles(files);
  let body;
  if (pairs.length > 0) {
    body = new FormData();
    body.append("USED_AGENT_ID", agentId);
    body.append("final_string_data", JSON.stringify(data === undefined ? null : data));
    for (const [name, blob] of pairs) {
      body.append(name, blob, typeof blob.name === "string" && blob.name ? blob.name : name);
    }
  } else {
    body = { USED_AGENT_ID: agentId, final_data: data, client_timestamp: pythonTime() };
  }
  const answer = await request("POST", "/submit_task", { body });
  shimFunction("handleSubmitToProvider")(data);
  return answer;
}

/** Keys each argument having a `type` by that type, as /submit_metadata expects. */
export function collectMetadata(items) {
  const metadata = {};
  for (const item of items) {
    if (item && typeof item === "object" && Object.prototype.hasOwnProperty.call(item, "type")) {
      metadata[item.type] = item;
    }
  }
  return metadata;
}

/** POST /submit_metadata `{USED_AGENT_ID, metadata, client_timestamp}`; resolves to the body. */
export function postMetadata(agentId, metadata) {
  return request("POST", "/submit_metadata", {
    body: { USED_AGENT_ID: agentId, metadata, client_timestamp: pythonTime() },
  });
}

/** POST /log_error `{USED_AGENT_ID (may be null), error_data, client_timestamp}`. */
export function postErrorLog(agentId, errorData) {
  return request("POST", "/log_error", {
    body: {
      USED_AGENT_ID: agentId === undefined ? null : agentId,
      error_data: errorData,
      client_timestamp: pythonTime(),
    },
  });
}
