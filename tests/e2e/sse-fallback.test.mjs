// SSE fallback: where WebSockets cannot be used, the demo still goes live,
// over server-sent events, and renders what is published.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import {
  closePage, TEST_TIMEOUT_MS, WAIT_MS, block, devTokens, launchChromium, localSlot, newPage, publish,
  recordDeliveries, stack, startProxy, unique, waitDelivered, waitDemoLive, waitTitle,
} from "./lib.mjs";

let browser;
let proxy;
before(async () => { browser = await launchChromium(); });
after(async () => {
  await browser?.close();
  await proxy?.close();
});

/** Loads the demo from `origin`, publishes a created and an updated event, and checks they render over SSE. */
async function demoWorksOverSse(page, origin) {
  const user = unique("e2e-user");
  const ns = unique("e2e-sse");
  await page.goto(`${origin}/demo?${new URLSearchParams({ user, ns })}`);
  await waitDemoLive(page, ns);
  assert.equal(await page.evaluate(() => window.heraldDemo.herald.transport), "sse");
  await recordDeliveries(page);

  const { service_token: serviceToken } = await devTokens(stack.edgeB, { user, ns });
  const audience = { namespaces: [ns] };
  const slot = await localSlot(page, { day: "tomorrow", hour: 16, minutes: 30 });
  await publish({ serviceToken, type: "calendar.event.created", audience, data: { event_id: "evt_sse", title: "Over SSE", starts_at: slot.starts_at, ends_at: slot.ends_at } });
  await block(page, "evt_sse").waitFor({ timeout: WAIT_MS });
  const renamed = await publish({
    serviceToken, type: "calendar.event.updated", audience,
    data: { event_id: "evt_sse", title: "Over SSE, renamed", starts_at: slot.starts_at, ends_at: slot.ends_at, changes: ["title"] },
  });
  await waitTitle(page, "evt_sse", "Over SSE, renamed");
  await waitDelivered(page, renamed.id);
  assert.equal(await page.evaluate(() => window.e2eDelivered.length), 2);
  assert.equal(await page.evaluate(() => window.heraldDemo.herald.transport), "sse");
  assert.equal(await page.getAttribute("#connection", "data-node"), "edge-b");
}

test("without a WebSocket API the demo runs over SSE", { timeout: TEST_TIMEOUT_MS }, async () => {
  const page = await newPage(browser);
  await page.addInitScript(() => { delete window.WebSocket; });
  const sockets = [];
  page.on("websocket", (ws) => sockets.push(ws.url()));
  await demoWorksOverSse(page, stack.edgeB);
  assert.equal(await page.evaluate(() => typeof window.WebSocket), "undefined");
  assert.deepEqual(sockets, [], "no WebSocket was opened");
  await closePage(page);
});

test("behind a proxy that refuses WebSocket upgrades the demo falls back to SSE", { timeout: TEST_TIMEOUT_MS }, async () => {
  proxy = await startProxy(stack.edgeB, { refuseWebSockets: true });
  const page = await newPage(browser, { expectedErrors: /WebSocket handshake: Unexpected response code: 403/ });
  await demoWorksOverSse(page, proxy.url);
  // The client gives WebSockets up after two refusals before the handshake.
  assert.equal(proxy.stats.refusedUpgrades, 2);
  await closePage(page);
});
