// The MTurk provider's page shim (mephisto/abstractions/providers/mturk/wrap_crowd_source.js)
// run as a classic script in a jsdom page opened the way MTurk opens a HIT.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, test } from "node:test";

import { JSDOM } from "jsdom";

const SHIM = readFileSync(
  new URL("../../../mephisto/abstractions/providers/mturk/wrap_crowd_source.js", import.meta.url),
  "utf8",
);

const TASK_URL = "https://tasks.example.org/";

/** A page at `query` (MTurk's parameters) with the shim loaded; forms record their submit. */
function page(query) {
  const dom = new JSDOM("<!doctype html><html><body></body></html>", {
    url: TASK_URL + query,
    runScripts: "outside-only",
  });
  const { window } = dom;
  const submitted = [];
  window.HTMLFormElement.prototype.submit = function submit() {
    submitted.push(this);
  };
  window.console.warn = () => {};
  window.eval(SHIM);
  return { window, submitted };
}

const WORKING =
  "?assignmentId=3ASSIGN&hitId=3HIT&turkSubmitTo=https%3A%2F%2Fworkersandbox.mturk.com" +
  "&workerId=A1WORKER";

describe("MTurk shim: who is working", () => {
  test("an accepted HIT names the worker, the assignment and the HIT", () => {
    const { window } = page(WORKING);
    assert.equal(window.getWorkerName(), "A1WORKER");
    assert.equal(window.getAssignmentId(), "3ASSIGN");
    assert.deepEqual({ ...window.getAgentRegistration() }, {
      worker_name: "A1WORKER",
      assignment_id: "3ASSIGN",
      hit_id: "3HIT",
      agent_registration_id: "3ASSIGN-A1WORKER",
      provider_type: "mturk",
    });
    assert.deepEqual({ ...window.getProviderURLParams() }, {
      workerId: "A1WORKER",
      assignmentId: "3ASSIGN",
    });
  });

  test("a preview has no worker and no assignment (exactly null)", () => {
    for (const query of [
      "?assignmentId=ASSIGNMENT_ID_NOT_AVAILABLE&hitId=3HIT",
      "?assignmentId=ASSIGNMENT_ID_NOT_AVAILABLE&hitId=3HIT&workerId=A1WORKER",
      "",
    ]) {
      const { window } = page(query);
      assert.equal(window.getWorkerName(), null, query);
      assert.equal(window.getAssignmentId(), null, query);
      assert.equal(window.getProviderURLParams(), null, query);
    }
  });
});

describe("MTurk shim: submitting to MTurk", () => {
  test("posts the assignment to <turkSubmitTo>/mturk/externalSubmit", () => {
    const { window, submitted } = page(WORKING);
    assert.equal(window.handleSubmitToProvider({ rating: "good" }), true);
    assert.equal(submitted.length, 1);
    const [form] = submitted;
    assert.equal(form.method, "post");
    assert.equal(form.action, "https://workersandbox.mturk.com/mturk/externalSubmit");
    const fields = Object.fromEntries(new window.FormData(form));
    assert.deepEqual(fields, {
      assignmentId: "3ASSIGN",
      workerId: "A1WORKER",
      mephisto_submitted: "true",
    });
    assert.ok(!("rating" in fields), "the task's data stays on the task server");
  });

  test("the live site, with a trailing slash", () => {
    const query = WORKING.replace(
      "https%3A%2F%2Fworkersandbox.mturk.com",
      "https%3A%2F%2Fwww.mturk.com%2F",
    );
    const { window, submitted } = page(query);
    window.handleSubmitToProvider({});
    assert.equal(submitted[0].action, "https://www.mturk.com/mturk/externalSubmit");
  });

  test("posts nowhere but an https MTurk site, and not from a preview", () => {
    for (const target of [
      "https%3A%2F%2Fevil.example.com",
      "http%3A%2F%2Fwww.mturk.com",
      "https%3A%2F%2Fmturk.com.evil.example",
      "not%20a%20url",
    ]) {
      const { window, submitted } = page(
        WORKING.replace("https%3A%2F%2Fworkersandbox.mturk.com", target),
      );
      assert.equal(window.handleSubmitToProvider({}), false, target);
      assert.equal(submitted.length, 0, target);
    }
    const { window, submitted } = page("?assignmentId=ASSIGNMENT_ID_NOT_AVAILABLE&hitId=3HIT");
    assert.equal(window.handleSubmitToProvider({}), false);
    assert.equal(submitted.length, 0);
  });
});
