/*
 * wrap_crowd_source.js -- provider shim for the MTURK and MTURK_SANDBOX crowd providers.
 *
 * Served as GET /wrap_crowd_source.js. Defines the page globals that the
 * mephisto-task 2.x client (and our /_mephisto/static-task.js) call; see
 * docs/wire-protocol.md section 2 for the contract.
 *
 * MTurk opens the task page (the HIT's ExternalQuestion URL) in a frame and adds
 * ?assignmentId=...&hitId=...&turkSubmitTo=...&workerId=... to it. While a worker
 * previews the HIT, assignmentId is ASSIGNMENT_ID_NOT_AVAILABLE: no worker, no
 * assignment, the page shows its preview. Once the task is submitted to the task
 * server, the page posts the assignment to MTurk's external submit form, which
 * ends the assignment on MTurk's side. The same page serves mturk and
 * mturk_sandbox: turkSubmitTo names the site.
 *
 * Globals must stay top-level function declarations (classic script) so the
 * client can call them as bare names.
 */

var MTURK_PREVIEW_ASSIGNMENT = "ASSIGNMENT_ID_NOT_AVAILABLE";

function _mturkUrlParam(name) {
  var value = new URLSearchParams(window.location.search).get(name);
  return value === null || value === "" ? null : value;
}

function _mturkIsPreview() {
  var assignment = _mturkUrlParam("assignmentId");
  return assignment === null || assignment === MTURK_PREVIEW_ASSIGNMENT;
}

// MTurk's worker id, or null while previewing (the client tests `=== null`).
function getWorkerName() {
  if (_mturkIsPreview()) return null;
  return _mturkUrlParam("workerId");
}

// MTurk's assignment id, or null while previewing.
function getAssignmentId() {
  if (_mturkIsPreview()) return null;
  return _mturkUrlParam("assignmentId");
}

function getHITId() {
  return _mturkUrlParam("hitId");
}

// Sent verbatim as `provider_data` of POST /request_agent.
function getAgentRegistration() {
  var worker = getWorkerName();
  var assignment = getAssignmentId();
  return {
    worker_name: worker,
    assignment_id: assignment,
    hit_id: getHITId(),
    agent_registration_id: assignment + "-" + worker,
    provider_type: "mturk",
  };
}

// Merged into the query of every request the client makes: the server checks that a
// request acting on an agent comes from that agent's worker.
function getProviderURLParams() {
  var worker = getWorkerName();
  if (worker === null) return null;
  return { workerId: worker, assignmentId: getAssignmentId() };
}

// Where the assignment is submitted: <turkSubmitTo>/mturk/externalSubmit, for an
// https MTurk site only (null when the page was not opened by MTurk).
function getMTurkSubmitURL() {
  var base = _mturkUrlParam("turkSubmitTo");
  if (base === null) return null;
  var url;
  try {
    url = new URL(base);
  } catch (e) {
    return null;
  }
  var host = url.hostname;
  if (url.protocol !== "https:" || !(host === "mturk.com" || /\.mturk\.com$/.test(host))) {
    return null;
  }
  return url.origin + "/mturk/externalSubmit";
}

// Called by the client only after POST /submit_task answered 2xx: the data is saved on
// the task server, so MTurk is sent the assignment and a marker, not the data.
function handleSubmitToProvider(task_data) {
  var action = getMTurkSubmitURL();
  var assignment = getAssignmentId();
  if (action === null || assignment === null) {
    if (window.console) console.warn("[mturk] not opened by MTurk: nothing to submit there");
    return false;
  }
  var fields = { assignmentId: assignment, workerId: getWorkerName(), mephisto_submitted: "true" };
  var form = document.createElement("form");
  form.method = "POST";
  form.action = action;
  for (var name in fields) {
    var input = document.createElement("input");
    input.type = "hidden";
    input.name = name;
    input.value = fields[name];
    form.appendChild(input);
  }
  document.body.appendChild(form);
  // the prototype's submit: a field named "submit" cannot shadow it
  HTMLFormElement.prototype.submit.call(form);
  return true;
}
