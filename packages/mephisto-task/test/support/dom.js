// A jsdom page plus react-dom's createRoot/act, for rendering the hooks in node.
// Only the DOM globals React needs are taken from jsdom; fetch, FormData, Blob and
// Response stay node's own, so the fake fetch can read multipart bodies.

import { JSDOM } from "jsdom";
import React from "react";
import ReactDOMClient from "react-dom/client";

export const act = React.act;

export function installDom(url) {
  const dom = new JSDOM("<!doctype html><html><body></body></html>", { url });
  globalThis.window = dom.window;
  globalThis.document = dom.window.document;
  globalThis.location = dom.window.location;
  setUserAgent(dom.window.navigator.userAgent);
  globalThis.IS_REACT_ACT_ENVIRONMENT = true;
  return dom;
}

export function setUserAgent(userAgent) {
  Object.defineProperty(globalThis, "navigator", { value: { userAgent }, configurable: true, writable: true });
}

/** Renders `element`; returns {root, container, unmount()}. */
export async function render(element) {
  const container = document.createElement("div");
  document.body.appendChild(container);
  const root = ReactDOMClient.createRoot(container);
  await act(async () => {
    root.render(element);
  });
  return {
    root,
    container,
    unmount: () =>
      act(async () => {
        root.unmount();
      }),
  };
}

/** Lets pending promises and timers run (inside act) until `predicate()` holds. */
export async function waitFor(predicate, what = "condition", timeoutMs = 2000) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    await act(async () => {
      await new Promise((resolve) => setTimeout(resolve, 0));
    });
    if (predicate()) return;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
  }
}

/** Runs `fn` inside act and waits for its promise. */
export async function inAct(fn) {
  let result;
  await act(async () => {
    result = await fn();
  });
  return result;
}
