/*
 * static-task.js -- browser client for static HTML tasks (served as
 * GET /_mephisto/static-task.js). Plain JS, no dependencies.
 *
 * Speaks the same HTTP protocol as the mephisto-task 2.0.4 npm client
 * (docs/wire-protocol.md): GET /task_config.json, POST /request_agent,
 * /submit_onboarding, /submit_task, /log_error; uses the provider shim
 * globals getWorkerName, getAssignmentId, getAgentRegistration,
 * handleSubmitToProvider and optional getProviderURLParams.
 *
 * Page contract: <template id="mephisto-task-html"> (task HTML, `${field}`
 * placeholders filled from init_task_data), optional
 * <template id="mephisto-onboarding-html">, and <div id="mephisto-root">.
 * Custom HTML may call window.mephisto.submit(data) (returns a Promise).
 */
(function () {
  "use strict";
  var CLIENT_VERSION = "2.0.4";
  var root = document.getElementById("mephisto-root") || document.body;
  var state = { agentId: null, isOnboarding: false, submitting: false, done: false };
  var errorsReported = 0;

  function now() { return Date.now() / 1000; }
  function has(o, k) { return Object.prototype.hasOwnProperty.call(o, k); }
  // Root-relative URL plus the shim's optional getProviderURLParams (as the real client's axios
  // interceptor merges them into every request's query string).
  function buildUrl(path, params) {
    var url = new URL(path, window.location.origin);
    var extra = typeof getProviderURLParams === "function" ? getProviderURLParams()
      : typeof getProviderURLParams === "object" ? getProviderURLParams : null;
    var merged = Object.assign({}, params || {}, extra || {});
    Object.keys(merged).forEach(function (k) {
      if (merged[k] !== undefined && merged[k] !== null) url.searchParams.set(k, merged[k]);
    });
    return url.toString();
  }
  // fetch wrapper: JSON body unless FormData; rejects with Error(server's `error`) on non-2xx.
  function request(method, path, body, params) {
    var opts = { method: method, credentials: "same-origin", headers: { Accept: "application/json, text/plain, */*" } };
    if (body instanceof FormData) opts.body = body;
    else if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    // A 503 (the server's database or operator is out of reach for now; nothing was
    // done) is sent again after the server's Retry-After, up to 20 times.
    function attempt(url, tries) {
      return fetch(url, opts).catch(function () {
        throw new Error("Could not reach the server. Check your connection and try again.");
      }).then(function (res) {
        if (res.status !== 503 || tries >= 20) return res;
        var after = Number(res.headers.get("Retry-After"));
        var ms = Math.min(30000, (isFinite(after) && after >= 0 ? after * 1000 : 1000)
          * (0.9 + Math.random() * 0.2));
        return new Promise(function (resolve) { setTimeout(resolve, ms); })
          .then(function () { return attempt(url, tries + 1); });
      });
    }
    return Promise.resolve().then(function () { return buildUrl(path, params); }).then(function (url) {
      return attempt(url, 0);
    }).then(function (res) {
      return res.text().then(function (text) {
        var data = text;
        try { data = text ? JSON.parse(text) : null; } catch (e) { /* not JSON: keep text */ }
        if (res.ok) return data;
        var err = new Error(String(data && typeof data === "object" && data.error ? data.error
          : "The server answered with HTTP " + res.status + "."));
        err.status = res.status;
        throw err;
      });
    });
  }
  function postProvider(path, providerData) {
    return request("POST", path, { provider_data: providerData, client_timestamp: now() });
  }

  function logError(errorData) {
    if (errorsReported >= 20) return;
    errorsReported += 1;
    request("POST", "/log_error", {
      USED_AGENT_ID: state.agentId, error_data: errorData, client_timestamp: now(),
    }).catch(function () { /* never report failures of the reporter */ });
  }
  // Uncaught errors go to /log_error as {error, errorInfo} (the shape ErrorBoundary reports).
  window.addEventListener("error", function (ev) {
    logError({ error: ev.message, errorInfo: { filename: ev.filename, lineno: ev.lineno, colno: ev.colno,
      stack: ev.error && ev.error.stack ? String(ev.error.stack) : null } });
  });
  window.addEventListener("unhandledrejection", function (ev) {
    var r = ev.reason;
    logError({ error: r && r.message ? r.message : String(r),
      errorInfo: { stack: r && r.stack ? String(r.stack) : null, unhandledRejection: true } });
  });

  function escapeHtml(v) {
    if (v === null || v === undefined) return "";
    if (typeof v === "object") v = JSON.stringify(v);
    return String(v).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
      .replace(/"/g, "&quot;").replace(/'/g, "&#39;");
  }
  // Fill ${key} from data; unknown keys stay as written (as Mephisto does) unless blankUnknown.
  function interpolate(html, data, blankUnknown) {
    return html.replace(/\$\{([A-Za-z0-9_.\-]+)\}/g, function (whole, key) {
      if (has(data, key)) return escapeHtml(data[key]);
      return blankUnknown ? "" : whole;
    });
  }
  function templateHtml(id) { var t = document.getElementById(id); return t ? t.innerHTML : null; }
  function message(text, kind) {
    var box = document.createElement("div");
    box.className = "mephisto-message mephisto-" + (kind || "info");
    box.setAttribute("role", kind === "error" ? "alert" : "status");
    box.style.cssText = "margin:1em auto;padding:1em;max-width:50em;border-radius:4px;font:16px sans-serif;" +
      (kind === "error" ? "background:#fde8e8;color:#8a1c1c" : "background:#eef4fd;color:#123a6b");
    box.textContent = text;
    return box;
  }
  function showOnly(node) { root.innerHTML = ""; root.appendChild(node); }

  // innerHTML does not run <script>; re-create them one by one, in order.
  function runScripts(container) {
    var scripts = Array.prototype.slice.call(container.querySelectorAll("script"));
    (function next() {
      var old = scripts.shift();
      if (!old) return;
      var s = document.createElement("script");
      Array.prototype.forEach.call(old.attributes, function (a) { s.setAttribute(a.name, a.value); });
      var wait = old.src && (!old.type || /javascript|module/i.test(old.type));
      if (wait) { s.onload = s.onerror = next; s.async = false; } else if (!old.src) s.text = old.text;
      old.parentNode.replaceChild(s, old);
      if (!wait) next();
    })();
  }

  function collect(form, submitter) {
    var fd;
    try { fd = new FormData(form, submitter || undefined); } catch (e) { fd = new FormData(form); }
    var out = {};
    var files = [];
    fd.forEach(function (value, key) {
      if (typeof File !== "undefined" && value instanceof File) {
        if (value.size > 0 || value.name) files.push([key, value]);
        value = value.size > 0 || value.name
          ? { name: value.name, size: value.size, type: value.type, lastModified: value.lastModified } : {};
      }
      if (has(out, key)) out[key] = [].concat(out[key], [value]);
      else out[key] = value;
    });
    // Checkbox groups and <select multiple> are always arrays; a lone checkbox is a
    // boolean; an unanswered radio group is null.
    var boxes = Object.create(null);
    Array.prototype.forEach.call(form.elements, function (el) {
      if (!el.name || el.disabled) return;
      if (el.type === "checkbox") (boxes[el.name] = boxes[el.name] || []).push(el);
      else if (el.tagName === "SELECT" && el.multiple) out[el.name] = fd.getAll(el.name);
      else if (el.type === "radio" && !has(out, el.name)) out[el.name] = null;
    });
    Object.keys(boxes).forEach(function (name) {
      if (boxes[name].length > 1) out[name] = fd.getAll(name);
      else out[name] = boxes[name][0].checked;
    });
    return { data: out, files: files };
  }

  function submit(data, files) {
    var refuse = state.done ? "This task was already submitted."
      : !state.agentId ? "Preview: accept the task to start"
      : state.submitting ? "A submission is already in progress." : null;
    if (refuse) return Promise.reject(new Error(refuse));
    state.submitting = true;
    var p;
    if (state.isOnboarding) {
      p = postProvider("/submit_onboarding", { USED_AGENT_ID: state.agentId, onboarding_data: data })
        .then(function (packet) { state.submitting = false; afterRegistration(packet); return packet; });
    } else {
      var body = { USED_AGENT_ID: state.agentId, final_data: data, client_timestamp: now() };
      if (files && files.length) { // multipart variant, as Mephisto's static HTML task sends
        body = new FormData();
        body.append("USED_AGENT_ID", state.agentId);
        body.append("final_string_data", JSON.stringify(data));
        files.forEach(function (f) { body.append(f[0], f[1], f[1].name); });
      }
      p = request("POST", "/submit_task", body).then(function (res) { // 2xx = committed
        state.done = true;
        try { handleSubmitToProvider(data); } catch (e) { logError({ error: "handleSubmitToProvider: " + e.message, errorInfo: {} }); }
        showOnly(message("Thank you, your work was submitted."));
        return res;
      });
    }
    return p.catch(function (err) {
      state.submitting = false;
      showFormError(err.message);
      throw err;
    });
  }

  function showFormError(text) {
    root.querySelectorAll(".mephisto-submit-error").forEach(function (el) { el.remove(); });
    var box = message(text, "error");
    box.classList.add("mephisto-submit-error");
    root.insertBefore(box, root.firstChild);
    setButtons(true);
  }
  function setButtons(enabled) {
    root.querySelectorAll("form [type=submit], form button:not([type])").forEach(function (b) {
      b.disabled = !enabled;
    });
  }

  // Render task HTML; wrap it in a form if the author did not write one, and add a
  // Submit button only if the HTML has no submit control of its own.
  function render(html, preview) {
    var container = document.createElement("div");
    container.className = "mephisto-task";
    container.innerHTML = html;
    if (!container.querySelector("form")) {
      var form = document.createElement("form");
      while (container.firstChild) form.appendChild(container.firstChild);
      if (!form.querySelector('button:not([type]), button[type="submit"], input[type="submit"]')) {
        var bar = document.createElement("div");
        bar.style.cssText = "display:flex;justify-content:center;margin:1em";
        bar.innerHTML = '<button type="submit" id="html-task-submit-button">Submit</button>';
        form.appendChild(bar);
      }
      container.appendChild(form);
    }
    root.innerHTML = "";
    if (preview) root.appendChild(message("Preview: accept the task to start"));
    root.appendChild(container);
    container.querySelectorAll("form").forEach(function (form) {
      form.addEventListener("submit", function (ev) {
        ev.preventDefault();
        if (preview || state.submitting) return;
        var c = collect(form, ev.submitter);
        setButtons(false);
        submit(c.data, c.files).catch(function () { if (!state.done) setButtons(true); });
      });
    });
    if (preview) {
      container.querySelectorAll("input, textarea, select, button").forEach(function (el) { el.disabled = true; });
    }
    runScripts(container);
  }

  function afterRegistration(packet) {
    var d = (packet && packet.data) || {};
    if (d.agent_id === null || d.agent_id === undefined) {
      showOnly(message(d.failure_reason || "Sorry, you are not able to work on this task. (code: null_agent_id)", "error"));
      return;
    }
    state.agentId = String(d.agent_id);
    state.isOnboarding = state.agentId.indexOf("onboarding") === 0;
    var taskData = d.init_task_data && typeof d.init_task_data === "object" ? d.init_task_data : {};
    Object.assign(window.mephisto, { agentId: state.agentId, taskData: taskData, isOnboarding: state.isOnboarding });
    var html = state.isOnboarding ? templateHtml("mephisto-onboarding-html") : templateHtml("mephisto-task-html");
    if (html === null) {
      showOnly(message("This task page is missing its " + (state.isOnboarding ? "onboarding " : "") + "HTML.", "error"));
      logError({ error: "missing template", errorInfo: { onboarding: state.isOnboarding } });
      return;
    }
    var keys = Object.assign({}, taskData, { mephisto_agent_id: state.agentId, provider_worker_id: getWorkerName() });
    render(interpolate(html, keys, false), false);
  }

  window.mephisto = {
    agentId: null, taskData: null, isOnboarding: false,
    submit: function (data) { return submit(data || {}, []); },
  };

  function start() {
    var isPreview = getWorkerName() === null || getAssignmentId() === null; // same test as the client
    showOnly(message("Loading…"));
    request("GET", "/task_config.json", undefined, { mephisto_task_version: CLIENT_VERSION })
      .then(function (config) {
        window.mephisto.taskConfig = config;
        var mobile = /Android|webOS|iPhone|iPad|iPod|BlackBerry|IEMobile|Opera Mini/i.test(navigator.userAgent);
        if (config && config.block_mobile && mobile) {
          showOnly(message("Sorry, this task cannot be completed on mobile devices. Please use a computer.", "error"));
          return;
        }
        if (isPreview) {
          render(interpolate(templateHtml("mephisto-task-html") || "", {}, true), true);
          return;
        }
        return postProvider("/request_agent", getAgentRegistration()).then(afterRegistration);
      })
      .catch(function (err) {
        showOnly(message("Could not start the task: " + err.message, "error"));
      });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
