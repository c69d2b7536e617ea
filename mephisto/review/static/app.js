// The review page: plain JS over the review app's JSON API (mephisto/review/app.py).
// Data is put in the page as text (textContent), never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);

const state = {
  scope: { task: null, run: null },
  cursors: [null],        // cursor of each page shown so far (keyset paging)
  page: null,             // the current page: {units, next, total, total_capped}
  current: -1,            // index of the unit shown, in page.units
  selected: new Set(),    // unit ids selected for a bulk decision
  unit: null,             // the unit shown (detail)
  pendingReject: false,
  session: { task_name: null, run_id: null },
  busy: false,            // a decision is on its way: no second one (a double click)
};

// -- the API -------------------------------------------------------------------------

async function api(path, body) {
  const init = body === undefined ? {} : {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  };
  const response = await fetch(path, { credentials: "same-origin", ...init });
  let data = null;
  try { data = await response.json(); } catch (e) { data = null; }
  if (!response.ok) {
    const message = (data && data.error) || `${response.status} ${response.statusText}`;
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return data;
}

function say(text, kind = "ok") {
  const p = document.createElement("p");
  p.className = kind;
  p.textContent = text;
  $("messages").prepend(p);
  while ($("messages").children.length > 8) $("messages").lastChild.remove();
}

function fail(error) { say(error.message, "error"); }

// -- rendering -------------------------------------------------------------------------

function jsonView(value, key) {
  const wrap = document.createElement("div");
  const label = () => {
    if (key === undefined) return null;
    const k = document.createElement("span");
    k.className = "key";
    k.textContent = `${key}: `;
    return k;
  };
  if (value !== null && typeof value === "object") {
    const details = document.createElement("details");
    details.open = true;
    const summary = document.createElement("summary");
    const l = label();
    if (l) summary.append(l);
    const n = Array.isArray(value) ? value.length : Object.keys(value).length;
    summary.append(Array.isArray(value) ? `[${n}]` : `{${n}}`);
    details.append(summary);
    for (const [k, v] of Object.entries(value)) details.append(jsonView(v, k));
    wrap.append(details);
    return wrap;
  }
  const l = label();
  if (l) wrap.append(l);
  const v = document.createElement("span");
  v.className = typeof value === "string" ? "str" : typeof value === "number" ? "num" : "lit";
  v.textContent = typeof value === "string" ? JSON.stringify(value) : String(value);
  wrap.append(v);
  return wrap;
}

function when(seconds) {
  if (seconds === null || seconds === undefined) return "";
  return new Date(seconds * 1000).toLocaleString();
}

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "" : String(text);
  row.append(td);
  return td;
}

function workerLink(id, name) {
  const a = document.createElement("a");
  a.href = "#";
  a.className = "worker";
  a.textContent = name || id || "";
  a.addEventListener("click", (e) => { e.preventDefault(); e.stopPropagation(); showWorker(id); });
  return a;
}

// -- the task / run chooser ------------------------------------------------------------

async function loadScopes() {
  const { tasks } = await api("/api/tasks");
  const select = $("scope");
  select.textContent = "";
  if (!state.session.task_name && !state.session.run_id) {
    select.append(new Option("all tasks", JSON.stringify({ task: null, run: null })));
  }
  for (const task of tasks) {
    if (!state.session.run_id) {
      select.append(new Option(`${task.task_name} (${task.awaiting} awaiting)`,
        JSON.stringify({ task: task.task_name, run: null })));
    }
    for (const run of task.runs) {
      select.append(new Option(`  run ${run.run_id} (${run.awaiting} awaiting)`,
        JSON.stringify({ task: task.task_name, run: run.run_id })));
    }
  }
  // the option of the scope shown (a session for one run knows its run, not its task)
  const index = [...select.options].findIndex((o) => {
    const s = JSON.parse(o.value);
    return s.run === state.scope.run && (state.scope.task === null || s.task === state.scope.task);
  });
  select.selectedIndex = Math.max(index, 0);
}

async function loadStats() {
  const { task, run } = state.scope;
  if (!task && !run) { $("task-stats").textContent = ""; return; }
  const q = run ? `run=${encodeURIComponent(run)}` : `task=${encodeURIComponent(task)}`;
  const s = await api(`/api/stats?${q}`);
  const rate = s.approval_rate === null ? "–" : `${Math.round(s.approval_rate * 100)}%`;
  const median = s.time_median_s === null ? "–" : `${s.time_median_s} s`;
  $("task-stats").textContent = `${s.units_total} units, ${s.workers} workers, ` +
    `approved ${rate}, median time ${median}, paid $${s.total_paid.toFixed(2)}`;
}

// -- the list of units -----------------------------------------------------------------

function filterQuery(after) {
  const q = new URLSearchParams();
  const form = $("filters");
  q.set("status", form.status.value);
  if (form.worker.value.trim()) q.set("worker", form.worker.value.trim());
  if (form.since.value) q.set("since", String(new Date(`${form.since.value}T00:00:00`) / 1000));
  if (form.until.value) q.set("until", String(new Date(`${form.until.value}T23:59:59`) / 1000));
  if (state.scope.task) q.set("task", state.scope.task);
  if (state.scope.run) q.set("run", state.scope.run);
  if (after) q.set("after", after);
  return q.toString();
}

async function loadPage(keepIndex = 0) {
  const after = state.cursors[state.cursors.length - 1];
  state.page = await api(`/api/units?${filterQuery(after)}`);
  if (state.page.units.length === 0 && state.cursors.length > 1) {
    state.cursors = [null];  // this page was emptied by decisions: back to the first
    state.page = await api(`/api/units?${filterQuery(null)}`);
  }
  renderPage();
  const n = state.page.units.length;
  if (n === 0) { showUnit(-1); return; }
  await showUnit(Math.min(Math.max(keepIndex, 0), n - 1));
}

function renderPage() {
  const tbody = $("units").tBodies[0];
  tbody.textContent = "";
  state.page.units.forEach((u, i) => {
    const tr = document.createElement("tr");
    tr.dataset.unitId = u.unit_id;
    const box = document.createElement("input");
    box.type = "checkbox";
    box.className = "select";
    box.checked = state.selected.has(u.unit_id);
    box.setAttribute("aria-label", `select unit ${u.unit_id}`);
    box.addEventListener("click", (e) => { e.stopPropagation(); toggle(u.unit_id, box.checked); });
    cell(tr, "").append(box);
    cell(tr, u.unit_id);
    cell(tr, "").append(workerLink(u.worker_id, u.worker_name));
    cell(tr, u.run_id);
    cell(tr, u.status);
    cell(tr, when(u.taken));
    tr.addEventListener("click", () => showUnit(i));
    tbody.append(tr);
  });
  const total = `${state.page.total}${state.page.total_capped ? "+" : ""}`;
  $("page-info").textContent = `page ${state.cursors.length} · ${total} matching`;
  $("next-page").disabled = !state.page.next;
  $("prev-page").disabled = state.cursors.length <= 1;
  $("first-page").disabled = state.cursors.length <= 1;
  syncSelection();
}

function toggle(unitId, on) {
  if (on) state.selected.add(unitId); else state.selected.delete(unitId);
  syncSelection();
}

function syncSelection() {
  for (const tr of $("units").tBodies[0].rows) {
    const on = state.selected.has(tr.dataset.unitId);
    tr.classList.toggle("selected", on);
    tr.querySelector("input.select").checked = on;
  }
  const ids = state.page ? state.page.units.map((u) => u.unit_id) : [];
  $("select-page").checked = ids.length > 0 && ids.every((id) => state.selected.has(id));
  $("selected-count").textContent = `${state.selected.size} selected`;
  for (const id of ["bulk-approve", "bulk-soft-reject", "bulk-reject"]) {
    $(id).disabled = state.selected.size === 0;
  }
}

// -- one unit --------------------------------------------------------------------------

async function showUnit(index) {
  state.current = index;
  state.pendingReject = false;
  for (const [i, tr] of [...$("units").tBodies[0].rows].entries()) {
    tr.classList.toggle("current", i === index);
  }
  if (index < 0 || !state.page || !state.page.units[index]) {
    state.unit = null;
    $("unit").hidden = true;
    $("no-unit").hidden = false;
    return;
  }
  const unit = await api(`/api/units/${state.page.units[index].unit_id}`);
  if (state.current !== index) return;  // the reviewer moved on meanwhile
  state.unit = unit;
  $("no-unit").hidden = true;
  $("unit").hidden = false;
  $("unit-title").textContent = `Unit ${unit.unit_id} · ${unit.status}`;
  const meta = $("unit-meta");
  meta.textContent = `${unit.task_name} · run ${unit.run_id} · $${unit.pay_amount} · worker `;
  meta.append(workerLink(unit.worker_id, unit.worker_name));
  if (unit.worker_blocked) meta.append(" (blocked)");
  for (const [id, value] of [["unit-inputs", unit.inputs], ["unit-outputs", unit.outputs],
    ["unit-times", unit.times]]) {
    $(id).textContent = "";
    $(id).append(jsonView(value));
  }
  renderLive(unit.live_updates || []);
  renderReviews(unit.reviews);
  await renderTemplate(unit);
}

// A live task's session as it happened: each packet with its sender and time.
function renderLive(updates) {
  $("live-section").hidden = updates.length === 0;
  const list = $("unit-live");
  list.textContent = "";
  const start = updates.length ? updates[0].time : 0;
  for (const u of updates) {
    const li = document.createElement("li");
    li.className = u.sender === "worker" ? "from-worker" : "from-task";
    const when = document.createElement("span");
    when.className = "muted";
    when.textContent = `+${(u.time - start).toFixed(1)} s ${u.sender === "worker" ? "worker" : "task"}: `;
    li.append(when, jsonView(u.data));
    list.append(li);
  }
}

function renderReviews(reviews) {
  const box = $("reviews");
  box.textContent = "";
  if (!reviews.length) return;
  const h = document.createElement("h3");
  h.textContent = "Earlier reviews";
  const ul = document.createElement("ul");
  for (const r of reviews) {
    const parts = [when(r.creation_date), r.status || "no status change"];
    if (r.review_note) parts.push(`“${r.review_note}”`);
    if (r.bonus) parts.push(`bonus $${Number(r.bonus).toFixed(2)}`);
    if (r.blocked_worker) parts.push("blocked");
    if (r.unblocked_worker) parts.push("unblocked");
    if (r.updated_qualification_id) parts.push(`qualification set to ${r.updated_qualification_value}`);
    if (r.revoked_qualification_id) parts.push("qualification revoked");
    const li = document.createElement("li");
    li.textContent = parts.join(" · ");
    ul.append(li);
  }
  box.append(h, ul);
}

async function renderTemplate(unit) {
  const frame = $("review-frame");
  if (!unit.has_review_template) { frame.hidden = true; frame.removeAttribute("srcdoc"); return; }
  const response = await fetch(`/api/units/${unit.unit_id}/template`, { credentials: "same-origin" });
  if (!response.ok) { frame.hidden = true; return; }
  const html = await response.text();
  const payload = { type: "mephisto-review-unit", unit: {
    unit_id: unit.unit_id, status: unit.status, worker_name: unit.worker_name,
    inputs: unit.inputs, outputs: unit.outputs, times: unit.times } };
  // The frame is sandboxed without same-origin: its origin is opaque, hence "*".
  frame.onload = () => frame.contentWindow.postMessage(payload, "*");
  frame.srcdoc = html;
  frame.hidden = false;
}

// -- decisions -------------------------------------------------------------------------

function reason() { return $("reason").value.trim(); }

// The note goes to the worker as a message too when asked (and there is a note).
function withFeedback(decision) {
  return $("send-feedback").checked && decision.note ? { ...decision, send_feedback: true } : decision;
}

async function decide(decision, what) {
  if (!state.unit) { say("choose a unit first", "error"); return; }
  if (state.busy) return;
  state.busy = true;
  const unitId = state.unit.unit_id;
  try {
    const outcome = await api(`/api/units/${unitId}/review`, withFeedback(decision));
    say(`unit ${unitId}: ${what}` + (outcome.warnings.length ? ` (${outcome.warnings.join("; ")})` : ""));
    $("reason").value = "";
    $("bonus-amount").value = "";
    $("bonus-reason").value = "";
    state.selected.delete(unitId);
    await refresh(false);
  } catch (error) { fail(error); } finally { state.busy = false; }
}

async function decideMany(decision, what) {
  const ids = [...state.selected];
  if (!ids.length || state.busy) return;
  state.busy = true;
  try {
    const { outcomes } = await api("/api/review", { unit_ids: ids, ...withFeedback(decision) });
    const failed = outcomes.filter((o) => !o.ok);
    say(`${what}: ${outcomes.length - failed.length} of ${outcomes.length} units`);
    for (const o of failed) say(`unit ${o.unit_id}: ${o.error}`, "error");
    state.selected = new Set(failed.map((o) => o.unit_id));
    await refresh(true);
  } catch (error) { fail(error); } finally { state.busy = false; }
}

// After a decision: the page again (a reviewed unit leaves the "awaiting" list and the
// next one takes its place) and the counts; the task's figures after bulk decisions
// only (they read every unit's times).
async function refresh(withStats) {
  await loadPage(state.current);
  loadScopes().catch(fail);
  if (withStats) loadStats().catch(fail);
}

const actions = {
  approve: () => decide({ action: "approve", note: reason() || null }, "approved"),
  reject: () => {
    if (!reason()) {
      state.pendingReject = true;
      $("reason").focus();
      say("type the reason for the rejection, then Enter", "error");
      return;
    }
    decide({ action: "reject", note: reason() }, "rejected");
  },
  softReject: () => decide({ action: "soft_reject", note: reason() || null }, "soft-rejected"),
  bonus: () => {
    const amount = parseFloat($("bonus-amount").value);
    if (!(amount > 0)) { $("bonus-amount").focus(); say("type the bonus amount, then Enter", "error"); return; }
    decide({ bonus: amount, bonus_reason: $("bonus-reason").value.trim() || null,
      note: reason() || null }, `bonus of $${amount.toFixed(2)}`);
  },
  block: () => decide({ block: true, block_reason: $("block-reason").value.trim() || reason() || null },
    "worker blocked"),
  unblock: () => decide({ unblock: true }, "worker unblocked"),
  grant: () => decide({ grant: { name: $("qual-name").value.trim(),
    value: parseInt($("qual-value").value, 10) } }, `qualification ${$("qual-name").value.trim()} granted`),
  revoke: () => decide({ revoke: $("qual-name").value.trim() || null },
    `qualification ${$("qual-name").value.trim()} revoked`),
};

// -- the worker page -------------------------------------------------------------------

async function showWorker(workerId) {
  if (!workerId) return;
  try {
    const w = await api(`/api/workers/${workerId}`);
    $("worker-pane").hidden = false;
    $("worker-title").textContent = `Worker ${w.worker_name} (${w.provider_type}, id ${w.worker_id})`;
    const dl = $("worker-stats");
    dl.textContent = "";
    const rate = w.approval_rate === null ? "–" : `${Math.round(w.approval_rate * 100)}%`;
    const rows = [
      ["units", `${w.units_total} (${Object.entries(w.units_by_status).map(([k, v]) => `${k} ${v}`).join(", ")})`],
      ["approval rate", rate],
      ["time spent", `${w.time_total_s} s over ${w.timed_units} units, median ${w.time_median_s ?? "–"} s`],
      ["paid", `$${w.total_paid.toFixed(2)} (rewards $${w.rewards_paid.toFixed(2)}, bonuses $${w.bonuses_paid.toFixed(2)}` +
        (w.bonuses_pending ? `, $${w.bonuses_pending.toFixed(2)} pending)` : ")")],
      ["blocked by", w.blocks.map((b) => `${b.requester_name}: ${b.reason}`).join("; ") || "nobody"],
      ["qualifications", Object.entries(w.qualifications).map(([k, v]) => `${k}=${v}`).join(", ") || "none"],
    ];
    for (const [k, v] of rows) {
      const dt = document.createElement("dt");
      dt.textContent = k;
      const dd = document.createElement("dd");
      dd.textContent = v;
      dl.append(dt, dd);
    }
    const tbody = $("worker-units").tBodies[0];
    tbody.textContent = "";
    for (const u of w.units) {
      const tr = document.createElement("tr");
      for (const v of [u.unit_id, u.task_name, u.run_id, u.status, `$${u.pay_amount}`]) cell(tr, v);
      tbody.append(tr);
    }
    $("worker-pane").scrollIntoView();
  } catch (error) { fail(error); }
}

// -- keyboard --------------------------------------------------------------------------

function typing(target) {
  if (!target) return false;
  if (target.tagName === "INPUT") return !["checkbox", "radio", "button", "submit"].includes(target.type);
  return target.tagName === "TEXTAREA" || target.tagName === "SELECT";
}

function onKey(event) {
  if (event.key === "Escape") { $("help").hidden = true; document.activeElement.blur(); return; }
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  if (typing(event.target)) {
    if (event.key === "Enter" && !event.shiftKey) {
      if (event.target.id === "reason" && state.pendingReject) { event.preventDefault(); actions.reject(); }
      else if (event.target.id === "bonus-amount") { event.preventDefault(); actions.bonus(); }
    }
    return;
  }
  const n = state.page ? state.page.units.length : 0;
  switch (event.key) {
    case "j": if (state.current + 1 < n) showUnit(state.current + 1).catch(fail); break;
    case "k": if (state.current > 0) showUnit(state.current - 1).catch(fail); break;
    case "a": actions.approve(); break;
    case "r": event.preventDefault(); actions.reject(); break;
    case "s": actions.softReject(); break;
    case "b": event.preventDefault(); actions.bonus(); break;
    case "x": if (state.unit) toggle(state.unit.unit_id, !state.selected.has(state.unit.unit_id)); break;
    case "?": $("help").hidden = !$("help").hidden; break;
    default: return;
  }
}

// -- start -----------------------------------------------------------------------------

function wire() {
  $("filters").addEventListener("submit", (e) => {
    e.preventDefault();
    state.cursors = [null];
    loadPage().catch(fail);
  });
  $("scope").addEventListener("change", () => {
    state.scope = JSON.parse($("scope").value);
    state.cursors = [null];
    state.selected.clear();
    loadPage().catch(fail);
    loadStats().catch(fail);
  });
  $("next-page").addEventListener("click", () => {
    if (!state.page.next) return;
    state.cursors.push(state.page.next);
    loadPage().catch(fail);
  });
  $("prev-page").addEventListener("click", () => {
    if (state.cursors.length > 1) state.cursors.pop();
    loadPage().catch(fail);
  });
  $("first-page").addEventListener("click", () => { state.cursors = [null]; loadPage().catch(fail); });
  $("select-page").addEventListener("change", () => {
    const on = $("select-page").checked;
    for (const u of state.page.units) {
      if (on) state.selected.add(u.unit_id); else state.selected.delete(u.unit_id);
    }
    syncSelection();
  });
  $("bulk-approve").addEventListener("click", () => decideMany({ action: "approve" }, "approved"));
  $("bulk-soft-reject").addEventListener("click", () => decideMany({ action: "soft_reject" }, "soft-rejected"));
  $("bulk-reject").addEventListener("click", () => {
    if (!reason()) { $("reason").focus(); say("type the reason for the rejection first", "error"); return; }
    decideMany({ action: "reject", note: reason() }, "rejected");
  });
  $("approve").addEventListener("click", actions.approve);
  $("reject").addEventListener("click", actions.reject);
  $("soft-reject").addEventListener("click", actions.softReject);
  $("bonus").addEventListener("click", actions.bonus);
  $("block").addEventListener("click", actions.block);
  $("unblock").addEventListener("click", actions.unblock);
  $("grant").addEventListener("click", actions.grant);
  $("revoke").addEventListener("click", actions.revoke);
  $("close-worker").addEventListener("click", () => { $("worker-pane").hidden = true; });
  $("help-button").addEventListener("click", () => { $("help").hidden = !$("help").hidden; });
  document.addEventListener("keydown", onKey);
}

async function start() {
  wire();
  try {
    const session = await api("/api/session");
    state.session = session;
    state.scope = { task: session.task_name, run: session.run_id };
    if (session.settled) say(`${session.settled} pending bonus payment(s) settled at start`);
    await loadScopes();
    await loadPage();
    await loadStats();
    document.body.dataset.ready = "true";
  } catch (error) {
    fail(error);
    document.body.dataset.ready = "error";
  }
}

document.addEventListener("DOMContentLoaded", start);
