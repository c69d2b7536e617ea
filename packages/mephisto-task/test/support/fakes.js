// Small fakes for the tests: a recording fetch, a provider shim, a manual clock and a
// WebSocket whose server side the test drives by hand.

/** Installs the five provider-shim globals; `identity` can be changed between calls. */
export function installShim(identity = { worker: "w1", assignment: "as1" }) {
  const shim = {
    identity,
    submittedToProvider: [],
  };
  globalThis.getWorkerName = () => shim.identity.worker;
  globalThis.getAssignmentId = () => shim.identity.assignment;
  globalThis.getAgentRegistration = () => ({
    worker_name: shim.identity.worker,
    assignment_id: shim.identity.assignment,
    agent_registration_id: `${shim.identity.assignment}-${shim.identity.worker}`,
    provider_type: "mock",
  });
  globalThis.handleSubmitToProvider = (data) => {
    shim.submittedToProvider.push(data);
    return true;
  };
  globalThis.getProviderURLParams = () =>
    shim.identity.worker === null
      ? null
      : { worker_id: shim.identity.worker, assignment_id: shim.identity.assignment };
  return shim;
}

export function removeShim() {
  for (const name of [
    "getWorkerName",
    "getAssignmentId",
    "getAgentRegistration",
    "handleSubmitToProvider",
    "getProviderURLParams",
  ]) {
    delete globalThis[name];
  }
}

function json(status, body) {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "Content-Type": "application/json" },
  });
}

/**
 * A fetch that records every call and answers from `routes`: an object mapping
 * "METHOD /path" to a function (call) => Response | body object | Promise of either.
 * Each recorded call has: method, url (URL), path, headers, contentType, json (parsed JSON
 * body or undefined), form (FormData for multipart bodies, after `await call.parsed`).
 */
export function installFetch(routes = {}) {
  const calls = [];
  const fake = async (input, init = {}) => {
    const url = new URL(String(input));
    const method = (init.method || "GET").toUpperCase();
    const request = new Request(url, init);
    const call = {
      method,
      url,
      path: url.pathname,
      headers: init.headers || {},
      contentType: request.headers.get("content-type"),
      rawBody: init.body,
      json: undefined,
      form: undefined,
    };
    if (typeof init.body === "string") call.json = JSON.parse(init.body);
    else if (init.body instanceof FormData) call.form = await request.formData();
    calls.push(call);
    const handler = routes[`${method} ${url.pathname}`];
    if (!handler) return json(404, { error: `no route ${method} ${url.pathname}` });
    const answer = await handler(call);
    return answer instanceof Response ? answer : json(200, answer);
  };
  globalThis.fetch = fake;
  return { calls, routes, json, of: (path) => calls.filter((c) => c.path === path) };
}

export { json as jsonResponse };

/** A manual clock: timers run only inside advance(ms), in time order. */
export class FakeClock {
  constructor(start = 1_700_000_000_000) {
    this.time = start;
    this.nextId = 1;
    this.timers = new Map(); // id -> {at, fn, interval}
    this.timerApi = {
      setTimeout: (fn, ms) => this._add(fn, ms, null),
      clearTimeout: (id) => this.timers.delete(id),
      setInterval: (fn, ms) => this._add(fn, ms, ms),
      clearInterval: (id) => this.timers.delete(id),
    };
    this.now = () => this.time;
  }

  _add(fn, ms, interval) {
    const id = this.nextId++;
    this.timers.set(id, { at: this.time + Math.max(0, ms), fn, interval });
    return id;
  }

  get pending() {
    return this.timers.size;
  }

  /** Moves time forward by `ms`, running each due timer at its own time. */
  advance(ms) {
    const end = this.time + ms;
    for (;;) {
      let nextId = null;
      let next = null;
      for (const [id, timer] of this.timers) {
        if (timer.at <= end && (next === null || timer.at < next.at)) {
          nextId = id;
          next = timer;
        }
      }
      if (next === null) break;
      this.time = next.at;
      if (next.interval === null) this.timers.delete(nextId);
      else next.at += next.interval;
      next.fn();
    }
    this.time = end;
  }
}

/** A WebSocket double. `FakeWebSocket.instances` lists every socket created. */
export class FakeWebSocket {
  static instances = [];

  static reset() {
    FakeWebSocket.instances = [];
  }

  static get last() {
    return FakeWebSocket.instances[FakeWebSocket.instances.length - 1];
  }

  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    this.closeCalls = 0;
    this.onopen = null;
    this.onmessage = null;
    this.onclose = null;
    this.onerror = null;
    FakeWebSocket.instances.push(this);
  }

  /** Packets the client sent, parsed. */
  get packets() {
    return this.sent.map((text) => JSON.parse(text));
  }

  send(text) {
    if (this.readyState !== 1) throw new Error("not open");
    this.sent.push(text);
  }

  close(code = 1000) {
    this.closeCalls += 1;
    if (this.readyState >= 2) return;
    this.readyState = 3;
    if (this.onclose) this.onclose({ code });
  }

  // server side
  serverOpen() {
    this.readyState = 1;
    if (this.onopen) this.onopen({});
  }

  serverSend(packet) {
    if (this.onmessage) this.onmessage({ data: JSON.stringify(packet) });
  }

  serverClose(code = 1006) {
    this.readyState = 3;
    if (this.onclose) this.onclose({ code });
  }
}
