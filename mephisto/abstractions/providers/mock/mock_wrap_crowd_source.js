/*
 * mock_wrap_crowd_source.js -- provider shim for the MOCK crowd provider.
 *
 * Served as GET /wrap_crowd_source.js. Defines the page globals that the
 * mephisto-task 2.x client (and our /_mephisto/static-task.js) call; see
 * docs/wire-protocol.md section 2 for the contract.
 *
 * Identity comes from the page URL: ?worker_id=<name>&assignment_id=<id>.
 * No worker_id (or an empty one) means preview. If worker_id is given but
 * assignment_id is not, a per-tab assignment id is generated and kept in
 * sessionStorage so that reloading the tab registers the same way.
 *
 * Globals must stay top-level function declarations (classic script) so the
 * client can call them as bare names.
 */

function _mockUrlParam(name) {
  var value = new URLSearchParams(window.location.search).get(name);
  return value === null || value === "" ? null : value;
}

// Provider-side worker id, or null when previewing (client tests `=== null`).
function getWorkerName() {
  return _mockUrlParam("worker_id");
}

// Provider-side assignment id, or null when previewing.
function getAssignmentId() {
  if (getWorkerName() === null) return null;
  var fromUrl = _mockUrlParam("assignment_id");
  if (fromUrl !== null) return fromUrl;
  var key = "mephisto_mock_assignment_id";
  var stored = null;
  try {
    stored = window.sessionStorage.getItem(key);
  } catch (e) {
    stored = null; // storage disabled: fall through to a fresh id
  }
  if (!stored) {
    stored = "mock-" + Math.random().toString(36).slice(2, 12);
    try {
      window.sessionStorage.setItem(key, stored);
    } catch (e) {
      /* ignore */
    }
  }
  return stored;
}

// Sent verbatim as `provider_data` of POST /request_agent (the client adds
// nothing inside it; it only adds a top-level `client_timestamp`).
function getAgentRegistration() {
  var worker = getWorkerName();
  var assignment = getAssignmentId();
  return {
    worker_name: worker,
    assignment_id: assignment,
    agent_registration_id: assignment + "-" + worker,
    provider_type: "mock",
  };
}

// Called by the client only after POST /submit_task answered 2xx.
// The mock provider has nothing to notify; it must not block (no alert()).
function handleSubmitToProvider(task_data) {
  if (window.console) console.info("[mock provider] task submitted", task_data);
  return true;
}

// Optional hook: merged into the query string of every HTTP request the
// client makes, so the server can cross-check who is calling.
function getProviderURLParams() {
  var worker = getWorkerName();
  if (worker === null) return null;
  return { worker_id: worker, assignment_id: getAssignmentId() };
}
