// Token refresh in place: a client whose tokens live 5 s stays on one
// WebSocket well past the first token's `exp`, refreshing with `auth` frames,
// and keeps receiving events. The edge closes a socket at `exp` exactly (4003)
// unless an `auth` frame came first, so surviving past it proves the refresh.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import {
  closePage, TEST_TIMEOUT_MS, WAIT_MS, devTokens, launchChromium, newPage, publish, stack, unique, until, userToken,
} from "./lib.mjs";

const TOKEN_TTL_SECS = 5;

let browser;
before(async () => { browser = await launchChromium(); });
after(async () => { await browser?.close(); });

test("a client with 5-second tokens refreshes them on the open socket, without reconnecting", { timeout: TEST_TIMEOUT_MS }, async () => {
  const user = unique("e2e-user");
  const ns = unique("e2e-refresh");
  const page = await newPage(browser);

  // Every token the page asks for, minted here with the stack's secret
  // (`/dev/token` mints 1-hour tokens).
  const minted = [];
  await page.exposeFunction("e2eMintToken", () => {
    const { token, exp } = userToken({ user, namespaces: [ns], ttlSecs: TOKEN_TTL_SECS });
    minted.push(exp);
    return token;
  });

  // What went over the wire, as Playwright sees it.
  const sockets = [];
  page.on("websocket", (ws) => {
    const socket = { url: ws.url(), received: [], sent: [], closed: false };
    sockets.push(socket);
    ws.on("framereceived", ({ payload }) => socket.received.push(JSON.parse(payload)));
    ws.on("framesent", ({ payload }) => socket.sent.push(JSON.parse(payload)));
    ws.on("close", () => { socket.closed = true; });
  });

  // Any document of edge-b's origin will do for the module import below (a
  // page fulfilled by `page.route` will not: Chromium's local network access
  // checks then refuse its WebSocket to 127.0.0.1). /herald.js is always served.
  await page.goto(`${stack.edgeB}/herald.js`);
  await page.evaluate(async (ns) => {
    const { Herald } = await import("/herald.js");
    const herald = new Herald({ getToken: () => window.e2eMintToken(), namespaces: [ns] });
    window.e2e = { herald, states: [], errors: [], events: [] };
    herald.on("state", (s) => window.e2e.states.push(s));
    herald.on("error", (f) => window.e2e.errors.push(f));
    herald.on("event", (e) => window.e2e.events.push(e.id));
    herald.connect();
  }, ns);
  await page.waitForFunction((channel) => window.e2e.herald.state === "open" && channel in window.e2e.herald.cursors,
    `ns:${ns}`, { timeout: WAIT_MS });

  const firstExp = minted[0];
  const welcome = sockets[0].received.find((f) => f.type === "welcome");
  assert.equal(welcome.token_exp, firstExp);

  // Two refreshes, and the clock past the first token's exp (plus a margin
  // for the edge's own expiry timer to have fired, had nothing refreshed it).
  const authenticated = () => sockets[0].received.filter((f) => f.type === "authenticated");
  await until(() => authenticated().length >= 2 && Date.now() > firstExp * 1000 + 1500,
    "two `authenticated` frames and the first token's exp + 1.5 s", 3 * TOKEN_TTL_SECS * 1000 + WAIT_MS);

  // Still delivering on the same socket.
  const { service_token: serviceToken } = await devTokens(stack.edgeB, { user, ns });
  const event = await publish({
    serviceToken, type: "calendar.event.created", audience: { namespaces: [ns] },
    data: { event_id: "evt_refresh", title: "After the refresh", starts_at: "2026-11-27T09:00:00Z", ends_at: "2026-11-27T10:00:00Z" },
  });
  await page.waitForFunction((id) => window.e2e.events.includes(id), event.id, { timeout: WAIT_MS });

  const seen = await page.evaluate(() => ({ states: window.e2e.states, errors: window.e2e.errors, transport: window.e2e.herald.transport }));
  assert.deepEqual(seen.states, ["connecting", "open"], "never reconnecting, never closed");
  assert.deepEqual(seen.errors, []);
  assert.equal(seen.transport, "websocket");
  assert.equal(sockets.length, 1, "one WebSocket for the whole test");
  assert.equal(sockets[0].closed, false);
  const auths = sockets[0].sent.filter((f) => f.type === "auth");
  assert.ok(auths.length >= 2, `the client sent ${auths.length} auth frames`);
  const exps = authenticated().map((f) => f.token_exp);
  assert.ok(exps.every((exp) => exp > firstExp), `each refresh extended exp: ${exps} > ${firstExp}`);
  assert.equal(sockets[0].received.filter((f) => f.type === "error").length, 0);
  assert.ok(minted.length >= 3, `getToken was called ${minted.length} times`);
  await closePage(page);
});
