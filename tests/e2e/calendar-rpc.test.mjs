// The demo through RPC: two windows of one team calendar, one on each edge,
// as two users. Every change is a `client.rpc(...)` call to the example
// calendar service (examples/calendar-service) on the page's own socket; the
// other window sees it arrive as a notification. A reload loads the week with
// `calendar.event.list`, and so does `history_truncated`.
//
// Runs before failover.test.mjs (which kills edge-a): files run in name order.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import {
  closePage, TEST_TIMEOUT_MS, WAIT_MS, block, launchChromium, localSlot, newPage, stack, unique,
  waitDemoLive, waitTitle,
} from "./lib.mjs";

let browser;
before(async () => { browser = await launchChromium(); });
after(async () => { await browser?.close(); });

/** Opens the demo for `user` on `edge` and waits until the week is loaded through rpc. */
async function openDemo(edge, { user, ns }) {
  const page = await newPage(browser);
  await page.goto(`${edge}/demo?${new URLSearchParams({ user, ns })}`);
  await waitDemoLive(page, ns);
  await waitLoads(page, 1);
  return page;
}

/** Waits until the page has loaded the week `n` times (`calendar.event.list`). */
function waitLoads(page, n) {
  return page.waitForFunction((n) => window.heraldDemo?.loads >= n, n, { timeout: WAIT_MS });
}

/** The `.time` text of an event's block. */
const timeText = (page, eventId) => block(page, eventId).first().locator(".time").textContent();

/** Selects an event in the page (its block toggles the selection). */
async function select(page, eventId) {
  await block(page, eventId).first().click();
  await page.locator("#rename").waitFor({ state: "visible" });
  assert.equal(await page.locator("#rename").isDisabled(), false, "an event is selected");
}

test("two windows on two edges change one calendar through rpc and each sees the other's changes", { timeout: TEST_TIMEOUT_MS }, async () => {
  const ns = unique("e2e-rpc");
  const alice = unique("alice");
  const bob = unique("bob");
  const pageA = await openDemo(stack.edgeA, { user: alice, ns });
  const pageB = await openDemo(stack.edgeB, { user: bob, ns });
  assert.equal(await pageA.getAttribute("#connection", "data-node"), "edge-a");
  assert.equal(await pageB.getAttribute("#connection", "data-node"), "edge-b");

  // Create in A with the form: tomorrow 10:00, one hour.
  const slot = await localSlot(pageA, { day: "tomorrow", hour: 10, minutes: 60 });
  await pageA.fill("#title", "RPC planning");
  await pageA.selectOption("#day", String(slot.dayIndex));
  await pageA.fill("#start", "10:00");
  await pageA.selectOption("#duration", "60");
  await pageA.click("#create");
  const created = pageA.locator(`.day-col[data-day="${slot.dayIndex}"] .event`, { hasText: "RPC planning" });
  await created.waitFor({ timeout: WAIT_MS });
  const eventId = await created.getAttribute("data-event-id");
  assert.match(eventId, /^evt_/, "the service picked the id");
  // B never called anything for it: the notification drew it.
  await block(pageB, eventId).first().waitFor({ timeout: WAIT_MS });
  assert.equal(await timeText(pageB, eventId), "10:00–11:00");

  // Move +1h in A.
  await select(pageA, eventId);
  await pageA.click("#move");
  await pageB.waitForFunction(
    (id) => document.querySelector(`.event[data-event-id="${CSS.escape(id)}"] .time`)?.textContent === "11:00–12:00",
    eventId, { timeout: WAIT_MS },
  );

  // Rename in A.
  await pageA.fill("#rename-title", "RPC planning (moved)");
  await pageA.click("#rename");
  await waitTitle(pageB, eventId, "RPC planning (moved)");

  // RSVP in B: A's block gets the badge, and B's answer is B's (the token's sub).
  await select(pageB, eventId);
  await pageB.click('[data-rsvp="accepted"]');
  await pageA.waitForFunction(
    (id) => document.querySelector(`.event[data-event-id="${CSS.escape(id)}"] .rsvp`)?.textContent === "✓1",
    eventId, { timeout: WAIT_MS },
  );
  const rsvps = await pageA.evaluate((id) => window.heraldDemo.events.get(id).rsvps, eventId);
  assert.deepEqual(rsvps, { [bob]: "accepted" });

  // A reload shows the calendar as it is, loaded through rpc.
  await pageB.reload();
  await waitDemoLive(pageB, ns);
  await waitLoads(pageB, 1);
  await waitTitle(pageB, eventId, "RPC planning (moved)");
  assert.equal(await timeText(pageB, eventId), "11:00–12:00");

  // Delete in B: gone in both.
  await select(pageB, eventId);
  await pageB.click("#delete");
  await block(pageA, eventId).waitFor({ state: "detached", timeout: WAIT_MS });
  await block(pageB, eventId).waitFor({ state: "detached", timeout: WAIT_MS });
  assert.doesNotMatch(await pageA.textContent("#status"), /failed/);
  assert.doesNotMatch(await pageB.textContent("#status"), /failed/);

  await closePage(pageA);
  await closePage(pageB);
});

test("a refused call says why, and history_truncated loads the week again", { timeout: TEST_TIMEOUT_MS }, async () => {
  const ns = unique("e2e-rpc");
  const user = unique("carol");
  const page = await openDemo(stack.edgeB, { user, ns });

  // A room booked twice is the service's own code.
  const calendarId = await page.evaluate(() => window.heraldDemo.calendarId);
  const slot = await localSlot(page, { day: "tomorrow", hour: 9, minutes: 60 });
  const booking = { calendar_id: calendarId, title: "Room 1", location: "Room 1", starts_at: slot.starts_at, ends_at: slot.ends_at };
  const first = await page.evaluate((data) => window.heraldDemo.herald.rpc("calendar.event.create", data), booking);
  const refused = await page.evaluate(async (data) => {
    try {
      await window.heraldDemo.herald.rpc("calendar.event.create", data);
      return null;
    } catch (err) {
      return { code: err.code, message: err.message };
    }
  }, booking);
  assert.equal(refused?.code, "SLOT_TAKEN", JSON.stringify(refused));
  await block(page, first.event_id).first().waitFor({ timeout: WAIT_MS });

  // A cursor of another stream epoch: the edge answers history_truncated, and
  // the page forgets what it holds and loads the week again.
  await page.evaluate(({ user, ns }) => {
    localStorage.setItem(`herald:demo:${user}`, JSON.stringify({
      epoch: "an-older-stream", user, cursors: { [`user:${user}`]: 1, [`ns:${ns}`]: 1 },
    }));
  }, { user, ns });
  await page.reload();
  await waitDemoLive(page, ns);
  await page.locator("#notice:not([hidden])").waitFor({ timeout: WAIT_MS });
  await waitLoads(page, 2);
  await block(page, first.event_id).first().waitFor({ timeout: WAIT_MS });
  assert.equal(await block(page, first.event_id).count(), 1);
  await closePage(page);
});
