// Failover: the demo page is on edge-a behind a load balancer; edge-a is
// SIGKILLed; the page reconnects through the same URL to edge-b and resumes
// from its cursors: what was published while it was disconnected appears,
// once.
//
// This test kills edge-a for the rest of the run: `cargo xtask e2e` runs the
// files one at a time and this one last.

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

test("after edge-a is killed the page resumes on edge-b and gets what it missed exactly once", { timeout: TEST_TIMEOUT_MS }, async () => {
  const user = unique("e2e-user");
  const ns = unique("e2e-failover");
  // `herald.js` takes one URL, as a page behind a load balancer has; the
  // proxy is that balancer, sending new connections to edge-a, then edge-b.
  proxy = await startProxy(stack.edgeA);
  const page = await newPage(browser);
  await page.goto(`${proxy.url}/demo?${new URLSearchParams({ user, ns })}`);
  await waitDemoLive(page, ns);
  assert.equal(await page.getAttribute("#connection", "data-node"), "edge-a");
  await recordDeliveries(page);

  const { service_token: serviceToken } = await devTokens(stack.edgeB, { user, ns });
  // Both of the page's channels: the user's own and the namespace's, each
  // with its own cursor to resume from.
  const audience = { users: [user], namespaces: [ns] };
  const channels = [`user:${user}`, `ns:${ns}`];
  const send = (type, data) => publish({ serviceToken, type, audience, data });
  const slot = async (hour) => {
    const { starts_at, ends_at } = await localSlot(page, { day: "tomorrow", hour, minutes: 45 });
    return { starts_at, ends_at };
  };

  // Before the failure: one event, seen on both channels.
  const first = await send("calendar.event.created", { event_id: "evt_before", title: "Before", ...(await slot(8)) });
  await waitDelivered(page, first.id, 2);
  await block(page, "evt_before").waitFor({ timeout: WAIT_MS });

  // Edge-a dies; the balancer parks new connections so the page stays
  // disconnected while events are published.
  proxy.hold();
  process.kill(stack.edgeAPid, "SIGKILL");
  await page.locator('#connection[data-state="reconnecting"]').waitFor({ timeout: WAIT_MS });

  const missed = [
    await send("calendar.event.created", { event_id: "evt_gap_1", title: "While down 1", ...(await slot(10)) }),
    await send("calendar.event.created", { event_id: "evt_gap_2", title: "While down 2", ...(await slot(12)) }),
    await send("calendar.event.updated", {
      event_id: "evt_before", title: "Before (renamed while down)", ...(await slot(8)), changes: ["title"],
    }),
  ];
  assert.equal(await block(page, "evt_gap_1").count(), 0, "nothing can arrive while disconnected");
  assert.equal(await page.getAttribute("#connection", "data-state"), "reconnecting");

  // The balancer now knows edge-a is gone.
  proxy.release(stack.edgeB);
  await page.locator('#connection[data-state="open"][data-node="edge-b"]').waitFor({ timeout: WAIT_MS });
  await block(page, "evt_gap_1").waitFor({ timeout: WAIT_MS });
  await block(page, "evt_gap_2").waitFor({ timeout: WAIT_MS });
  await waitTitle(page, "evt_before", "Before (renamed while down)");
  assert.match(await page.textContent("#connection-node"), /edge-b/);

  // A barrier: each channel replays before it goes live, in seq order, so
  // once this live event is in on both channels every replayed one is too,
  // and any duplicate would already have been handed to the app.
  const barrier = await send("calendar.event.created", { event_id: "evt_after", title: "After", ...(await slot(15)) });
  await waitDelivered(page, barrier.id, 2);

  const delivered = await page.evaluate(() => window.e2eDelivered);
  const published = [first, ...missed, barrier];
  for (const channel of channels) {
    const got = delivered.filter((d) => d.channel === channel);
    assert.deepEqual(got.map((d) => d.id), published.map((p) => p.id), `${channel}: every event once, in order`);
    const seqs = got.map((d) => d.seq);
    const expected = published.map((p) => p.published.find((c) => c.channel === channel).seq);
    assert.deepEqual(seqs, expected, `${channel}: the seqs the publisher stored`);
  }
  assert.equal(delivered.length, published.length * channels.length);
  for (const id of ["evt_before", "evt_gap_1", "evt_gap_2", "evt_after"]) {
    assert.equal(await block(page, id).count(), 1, `one block for ${id}`);
  }
  // Both channels had cursors, so nothing had to be reported as unrecoverable.
  assert.equal(await page.isHidden("#notice"), true, "no truncation notice");
  assert.equal(await page.evaluate(() => window.heraldDemo.herald.transport), "websocket");
  await closePage(page);
});
