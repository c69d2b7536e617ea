/*
 * inhouse_wrap_crowd_source.js -- provider shim for the IN-HOUSE crowd provider.
 *
 * Served as GET /wrap_crowd_source.js. Defines the page globals of
 * docs/wire-protocol.md section 2.
 *
 * Identity comes from the participant's link: ?token=<payload>.<mac>, where the
 * payload (base64url) reads "1:<key id>:<expires>:<participant name>". The page
 * only reads the name from it; the server checks the signature and the expiry.
 * No token means preview. The assignment id is one per link ("inhouse-" and the
 * first 16 characters of the mac), so a reload or a second tab gets the same
 * agent back, and opening the link after submitting starts the next unit.
 *
 * Globals must stay top-level function declarations (classic script).
 */

function _inhouseToken() {
  var value = new URLSearchParams(window.location.search).get("token");
  return value === null || value === "" ? null : value;
}

// The participant's name in the token, or null when it cannot be read (the server
// then refuses the registration with a message the page shows).
function _inhouseParticipant(token) {
  try {
    var payload = token.split(".")[0].replace(/-/g, "+").replace(/_/g, "/");
    while (payload.length % 4) payload += "=";
    var parts = window.atob(payload).split(":");
    return parts.length >= 4 && parts[3] ? parts.slice(3).join(":") : null;
  } catch (e) {
    return null;
  }
}

// Participant name, or null when previewing (client tests `=== null`).
function getWorkerName() {
  var token = _inhouseToken();
  if (token === null) return null;
  return _inhouseParticipant(token) || "unreadable-link";
}

// One assignment id per link, or null when previewing.
function getAssignmentId() {
  var token = _inhouseToken();
  if (token === null) return null;
  return "inhouse-" + token.split(".").pop().slice(0, 16);
}

// Sent verbatim as `provider_data` of POST /request_agent; the server reads `token`.
function getAgentRegistration() {
  var worker = getWorkerName();
  var assignment = getAssignmentId();
  return {
    worker_name: worker,
    assignment_id: assignment,
    agent_registration_id: assignment + "-" + worker,
    provider_type: "inhouse",
    token: _inhouseToken(),
  };
}

// Called after POST /submit_task answered 2xx: no third party to notify, so the
// page becomes a thank-you (after the task's own script has finished with it).
function handleSubmitToProvider(task_data) {
  window.setTimeout(function () {
    var box = document.createElement("div");
    box.id = "mephisto-inhouse-thanks";
    box.setAttribute("role", "status");
    box.style.cssText = "font-family:system-ui,sans-serif;max-width:40em;margin:3em auto;" +
      "padding:1.5em;border-radius:8px;background:#eaf6ec;color:#1d4d27;text-align:center";
    var title = document.createElement("h2");
    title.textContent = "Thank you!";
    var text = document.createElement("p");
    text.textContent = "Your work was submitted. You can close this page. If the study " +
      "has more tasks for you, opening your link again starts the next one.";
    box.appendChild(title);
    box.appendChild(text);
    document.body.innerHTML = "";
    document.body.appendChild(box);
  }, 0);
  return true;
}

// Merged into the query string of every HTTP request the client makes, so the
// server can refuse a request naming another participant's agent.
function getProviderURLParams() {
  var token = _inhouseToken();
  return token === null ? null : { token: token };
}
