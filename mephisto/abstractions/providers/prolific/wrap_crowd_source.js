/*
 * wrap_crowd_source.js -- provider shim for the PROLIFIC crowd provider.
 *
 * Served as GET /wrap_crowd_source.js. Defines the page globals that the
 * mephisto-task 2.x client (and our /_mephisto/static-task.js) call; see
 * docs/wire-protocol.md section 2 for the contract.
 *
 * Prolific opens the study's URL with these parameters (the provider puts them
 * in the study's external_study_url):
 *   PROLIFIC_PID  the participant: our worker
 *   SESSION_ID    their submission: our assignment
 *   STUDY_ID      the study
 *   cc            the study's completion code
 * No PROLIFIC_PID or no SESSION_ID means the page was not opened by Prolific
 * for a participant: preview.
 *
 * Globals must stay top-level function declarations (classic script) so the
 * client can call them as bare names.
 */

var PROLIFIC_COMPLETION_URL = "https://app.prolific.com/submissions/complete?cc=";

function _prolificUrlParam(name) {
  var value = new URLSearchParams(window.location.search).get(name);
  return value === null || value === "" ? null : value;
}

// The participant's Prolific id, or null when previewing (client tests `=== null`).
function getWorkerName() {
  return _prolificUrlParam("PROLIFIC_PID");
}

// The participant's Prolific submission id, or null when previewing.
function getAssignmentId() {
  if (getWorkerName() === null) return null;
  return _prolificUrlParam("SESSION_ID");
}

function getProlificStudyId() {
  return _prolificUrlParam("STUDY_ID");
}

// Sent verbatim as `provider_data` of POST /request_agent.
function getAgentRegistration() {
  var worker = getWorkerName();
  var submission = getAssignmentId();
  return {
    worker_name: worker,
    assignment_id: submission,
    agent_registration_id: submission + "-" + worker,
    study_id: getProlificStudyId(),
    provider_type: "prolific",
  };
}

// Called by the client only after POST /submit_task answered 2xx: back to
// Prolific, which records the submission as completed with the study's code.
function handleSubmitToProvider(task_data) {
  var code = _prolificUrlParam("cc");
  if (code === null) {
    if (window.console) console.error("[prolific] no completion code in the page URL");
    return false;
  }
  window.location.href = PROLIFIC_COMPLETION_URL + encodeURIComponent(code);
  return true;
}

// Merged into the query string of every HTTP request the client makes, so the
// server can check that a request comes from the worker owning the agent.
function getProviderURLParams() {
  var worker = getWorkerName();
  if (worker === null) return null;
  return {
    PROLIFIC_PID: worker,
    SESSION_ID: getAssignmentId(),
    STUDY_ID: getProlificStudyId(),
  };
}
