// herald.js `client.rpc()` in Chromium: rejections carry the edge's `code`
// and `errors`; a call made before the socket is open waits for it and is
// sent once; a call that finds no socket in time, or only SSE, rejects with
// NOT_CONNECTED and is never sent. Only edge-side answers are used, so the
// test does not depend on which domain services run (the demo's calendar
// service is driven by the calendar tests).

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import {
  closePage, TEST_TIMEOUT_MS, WAIT_MS, launchChromium, newPage, signJwt, stack, startProxy, unique,
} from "./lib.mjs";

let browser;
before(async () => { browser = await launchChromium(); });
after(async () => { await browser?.close(); });

/** A user token allowing the methods `rpc` (an hour to live). */
function token(user, rpc) {
  const now = Math.floor(Date.now() / 1000);
  return signJwt({ sub: user, aud: "herald", iat: now, exp: now + 3600, ns: [], rpc });
}

/** A page of edge-b's origin (any document of it will do for the module import), recording frames sent. */
async function page() {
  const page = await newPage(browser);
  const sent = [];
  page.on("websocket", (ws) => ws.on("framesent", ({ payload }) => sent.push(JSON.parse(payload))));
  await page.goto(`${stack.edgeB}/herald.js`);
  return { page, sent };
}

/** Runs `calls` (method, data pairs) in the page with a client of `options`; each settles to {ok, result} or {code, errors}. */
function callsIn(page, { url, tokenValue, rpcWaitMs, transports, calls, connectFirst = true }) {
  return page.evaluate(async ({ url, tokenValue, rpcWaitMs, transports, calls, connectFirst }) => {
    const { Herald } = await import("/herald.js");
    const herald = new Herald({ url, getToken: () => tokenValue, rpcWaitMs, transports });
    window.e2eHerald = herald;
    if (connectFirst) herald.connect();
    const settle = (p) => p.then((result) => ({ ok: true, result }),
      (err) => ({ ok: false, name: err.name, code: err.code, errors: err.errors, isError: err instanceof Error }));
    const settled = await Promise.all(calls.map(([method, data]) => settle(herald.rpc(method, data))));
    herald.close();
    return settled;
  }, { url, tokenValue, rpcWaitMs, transports, calls, connectFirst });
}

const wsUrl = (base) => `${base.replace(/^http/, "ws")}/v1/ws`;

test("rpc() rejections carry the edge's code and every failed rule's path", { timeout: TEST_TIMEOUT_MS }, async () => {
  const { page: p, sent } = await page();
  const tokenValue = token(unique("e2e-rpc"), ["calendar.event.create"]);
  const bad = { calendar_id: "", title: "x".repeat(201), starts_at: "2026-12-07T10:00:00Z", ends_at: "2026-12-07T09:00:00Z" };
  const results = await callsIn(p, {
    url: wsUrl(stack.edgeB), tokenValue, rpcWaitMs: WAIT_MS,
    calls: [
      ["calendar.event.create", bad],
      ["calendar.event.delete", { calendar_id: "c", event_id: "e" }],
      ["calendar.event.nope", {}],
    ],
  });

  const [invalid, forbidden, unknown] = results;
  assert.equal(invalid.ok, false);
  assert.equal(invalid.isError, true);
  assert.equal(invalid.name, "HeraldError");
  assert.equal(invalid.code, "VALIDATION_FAILED");
  assert.deepEqual(invalid.errors.map((e) => e.path), ["data.calendar_id", "data.ends_at", "data.title"]);
  assert.equal(forbidden.code, "FORBIDDEN_METHOD");
  assert.deepEqual(forbidden.errors, []);
  assert.equal(unknown.code, "UNKNOWN_METHOD");
  // One frame per call, each with its own ref.
  const rpcs = sent.filter((f) => f.type === "rpc");
  assert.equal(rpcs.length, 3);
  assert.equal(new Set(rpcs.map((f) => f.ref)).size, 3);
  await closePage(p);
});

test("a call made while connecting waits for the socket, then is sent once", { timeout: TEST_TIMEOUT_MS }, async () => {
  const proxy = await startProxy(stack.edgeB);
  proxy.hold(); // the client's socket stays unanswered until release()
  try {
    const { page: p, sent } = await page();
    const tokenValue = token(unique("e2e-rpc"), []);
    const settled = callsIn(p, {
      url: wsUrl(proxy.url), tokenValue, rpcWaitMs: WAIT_MS,
      calls: [["calendar.event.rsvp", { calendar_id: "c", event_id: "e", response: "accepted" }]],
    });
    // Connecting, with the call waiting: nothing has been sent.
    await p.waitForFunction(() => window.e2eHerald?.state === "connecting");
    await new Promise((resolve) => setTimeout(resolve, 500));
    assert.equal(sent.filter((f) => f.type === "rpc").length, 0);
    proxy.release(stack.edgeB);

    const [forbidden] = await settled;
    assert.equal(forbidden.code, "FORBIDDEN_METHOD", "the edge answered it: it was sent after the welcome");
    assert.equal(sent.filter((f) => f.type === "rpc").length, 1);
    await closePage(p);
  } finally {
    await proxy.close();
  }
});

test("a call that finds no socket in time, or only SSE, rejects with NOT_CONNECTED unsent", { timeout: TEST_TIMEOUT_MS }, async () => {
  const proxy = await startProxy(stack.edgeB);
  proxy.hold(); // never released
  try {
    const { page: p, sent } = await page();
    const tokenValue = token(unique("e2e-rpc"), ["calendar.*"]);
    const data = { calendar_id: "c", event_id: "e", response: "accepted" };
    const startedAt = Date.now();
    const [waited] = await callsIn(p, {
      url: wsUrl(proxy.url), tokenValue, rpcWaitMs: 800, calls: [["calendar.event.rsvp", data]],
    });
    assert.equal(waited.code, "NOT_CONNECTED");
    assert.ok(Date.now() - startedAt >= 800, "it waited rpcWaitMs first");

    const [overSse] = await callsIn(p, {
      url: wsUrl(stack.edgeB), tokenValue, rpcWaitMs: WAIT_MS, transports: ["sse"],
      calls: [["calendar.event.rsvp", data]],
    });
    assert.equal(overSse.code, "NOT_CONNECTED");

    const [closed] = await callsIn(p, {
      url: wsUrl(stack.edgeB), tokenValue, rpcWaitMs: WAIT_MS, connectFirst: false,
      calls: [["calendar.event.rsvp", data]],
    });
    assert.equal(closed.code, "NOT_CONNECTED", "before connect()");
    assert.equal(sent.filter((f) => f.type === "rpc").length, 0);
    await closePage(p);
  } finally {
    await proxy.close();
  }
});
