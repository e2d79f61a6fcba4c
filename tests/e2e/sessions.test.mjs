// Session control as the browser client sees it: a service takes a namespace
// from the user (an `unsubscribed` frame with `REVOKED`: the client forgets
// the namespace and tells the app, the socket lives on), then disconnects the
// user (`REVOKED`, close 4010: the client tells the app and stops for good,
// without asking for a new token).

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import {
  closePage, TEST_TIMEOUT_MS, WAIT_MS, launchChromium, newPage, signJwt, stack, unique, userToken,
} from "./lib.mjs";

let browser;
before(async () => { browser = await launchChromium(); });
after(async () => { await browser?.close(); });

/** `POST /v1/users/{user}/{action}` with a `sessions:manage` service token; expects 202. */
async function sessionCall(user, action, body) {
  const exp = Math.floor(Date.now() / 1000) + 600;
  const token = signJwt({ sub: "e2e-admin", aud: "herald-publisher", exp, scope: "sessions:manage" });
  const response = await fetch(`${stack.publisher}/v1/users/${encodeURIComponent(user)}/${action}`, {
    method: "POST",
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(WAIT_MS),
  });
  assert.equal(response.status, 202, `${action}: ${await response.text()}`);
}

test("a revoked user's client forgets a taken namespace, then stops for good on REVOKED", { timeout: TEST_TIMEOUT_MS }, async () => {
  const user = unique("e2e-revoked");
  const ns = unique("e2e-team");
  const page = await newPage(browser);
  let tokensAsked = 0;
  await page.exposeFunction("e2eMintToken", () => {
    tokensAsked += 1;
    return userToken({ user, namespaces: [ns], ttlSecs: 3600 }).token;
  });
  let sockets = 0;
  page.on("websocket", () => { sockets += 1; });

  await page.goto(`${stack.edgeB}/herald.js`);
  await page.evaluate(async (ns) => {
    const { Herald } = await import("/herald.js");
    const herald = new Herald({ getToken: () => window.e2eMintToken(), namespaces: [ns] });
    window.e2e = { herald, states: [], errors: [], unsubscribed: [] };
    herald.on("state", (s) => window.e2e.states.push(s));
    herald.on("error", (f) => window.e2e.errors.push(f.code));
    herald.on("unsubscribed", (f) => window.e2e.unsubscribed.push(f));
    herald.connect();
  }, ns);
  await page.waitForFunction((channel) => window.e2e.herald.state === "open" && channel in window.e2e.herald.cursors,
    `ns:${ns}`, { timeout: WAIT_MS });

  await sessionCall(user, "unsubscribe", { namespace: ns });
  await page.waitForFunction(() => window.e2e.unsubscribed.length === 1, null, { timeout: WAIT_MS });
  const taken = await page.evaluate(() => ({
    frame: window.e2e.unsubscribed[0], cursors: window.e2e.herald.cursors, state: window.e2e.herald.state,
  }));
  assert.deepEqual(taken.frame, { type: "unsubscribed", channel: `ns:${ns}`, code: "REVOKED" });
  assert.ok(!(`ns:${ns}` in taken.cursors), "the namespace is forgotten");
  assert.equal(taken.state, "open", "the socket lives on");

  await sessionCall(user, "disconnect", {});
  await page.waitForFunction(() => window.e2e.herald.state === "closed", null, { timeout: WAIT_MS });
  // Nothing to await for "no reconnect": give a retry (500 ms initial
  // backoff, or at once for a token error) three times the time it needs.
  await new Promise((resolve) => setTimeout(resolve, 1500));
  const seen = await page.evaluate(() => ({ states: window.e2e.states, errors: window.e2e.errors }));
  assert.deepEqual(seen.states, ["connecting", "open", "closed"]);
  assert.deepEqual(seen.errors, ["REVOKED"]);
  assert.equal(tokensAsked, 1, "no new token was asked for");
  assert.equal(sockets, 1, "no reconnect");
  await closePage(page);
});
