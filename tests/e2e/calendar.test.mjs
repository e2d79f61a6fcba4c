// The live calendar demo renders what Herald delivers: a created event
// appears, an update moves and renames it, a delete removes it. Also takes the
// README's screenshot (docs/demo.png) when HERALD_E2E_SCREENSHOT=1.

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { after, before, test } from "node:test";

import {
  closePage, TEST_TIMEOUT_MS, WAIT_MS, block, devTokens, launchChromium, localSlot, newPage, publish,
  recordDeliveries, stack, unique, waitDelivered, waitDemoLive, waitTitle,
} from "./lib.mjs";

let browser;
before(async () => { browser = await launchChromium(); });
after(async () => { await browser?.close(); });

test("the demo renders a created event, moves and renames it on an update, removes it on a delete", { timeout: TEST_TIMEOUT_MS }, async () => {
  const user = unique("e2e-user");
  const ns = unique("e2e-cal");
  const page = await newPage(browser);
  await page.goto(`${stack.edgeB}/demo?${new URLSearchParams({ user, ns })}`);
  await waitDemoLive(page, ns);
  assert.equal(await page.getAttribute("#connection", "data-node"), "edge-b");
  await recordDeliveries(page);

  const { service_token: serviceToken } = await devTokens(stack.edgeB, { user, ns });
  const audience = { namespaces: [ns] };
  const eventId = unique("evt");

  // Created: tomorrow 10:00–11:00 local time (today on a Sunday), inside the 07:00–20:00 grid.
  const slot = await localSlot(page, { day: "tomorrow", hour: 10, minutes: 60 });
  const created = await publish({
    serviceToken, type: "calendar.event.created", audience,
    data: { event_id: eventId, title: "E2E planning", starts_at: slot.starts_at, ends_at: slot.ends_at },
  });
  const inColumn = page.locator(`.day-col[data-day="${slot.dayIndex}"] .event[data-event-id="${eventId}"]`);
  await inColumn.waitFor({ timeout: WAIT_MS });
  assert.equal(await inColumn.locator(".title").textContent(), "E2E planning");
  assert.equal(await inColumn.locator(".time").textContent(), "10:00–11:00");
  const topBefore = await inColumn.evaluate((el) => el.style.top);

  // Updated: moved to 14:30–15:30 and renamed.
  const moved = await localSlot(page, { day: "tomorrow", hour: 14, minute: 30, minutes: 60 });
  const updated = await publish({
    serviceToken, type: "calendar.event.updated", audience,
    data: {
      event_id: eventId, title: "E2E planning (moved)", starts_at: moved.starts_at, ends_at: moved.ends_at,
      changes: ["title", "starts_at", "ends_at"],
    },
  });
  await waitTitle(page, eventId, "E2E planning (moved)");
  assert.equal(await inColumn.locator(".time").textContent(), "14:30–15:30");
  assert.notEqual(await inColumn.evaluate((el) => el.style.top), topBefore, "the block moved down the column");
  assert.equal(await block(page, eventId).count(), 1);

  // Deleted: the block goes.
  const deleted = await publish({ serviceToken, type: "calendar.event.deleted", audience, data: { event_id: eventId } });
  await block(page, eventId).waitFor({ state: "detached", timeout: WAIT_MS });
  await waitDelivered(page, deleted.id);

  // Each notification reached the app once, in publish order.
  const delivered = await page.evaluate(() => window.e2eDelivered);
  assert.deepEqual(
    delivered.map((d) => [d.channel, d.id, d.type]),
    [
      [`ns:${ns}`, created.id, "calendar.event.created"],
      [`ns:${ns}`, updated.id, "calendar.event.updated"],
      [`ns:${ns}`, deleted.id, "calendar.event.deleted"],
    ],
  );
  assert.deepEqual(delivered.map((d) => d.seq), [created, updated, deleted].map((p) => p.published[0].seq));
  await closePage(page);
});

test("screenshot of the demo for the README (docs/demo.png)", {
  timeout: TEST_TIMEOUT_MS,
  skip: process.env.HERALD_E2E_SCREENSHOT === "1" ? false : "set HERALD_E2E_SCREENSHOT=1 to take it",
}, async () => {
  // The README's picture: alice on team-42, as after `cargo xtask up`, with
  // bob on the other edge in "Here now". This run's JetStream store is its
  // own, so the calendar starts empty.
  const user = "alice";
  const ns = "team-42";
  const page = await newPage(browser);
  await page.goto(`${stack.edgeB}/demo?${new URLSearchParams({ user, ns })}`);
  await waitDemoLive(page, ns);
  const bobsPage = await newPage(browser);
  await bobsPage.goto(`${stack.edgeA}/demo?${new URLSearchParams({ user: "bob", ns })}`);
  await waitDemoLive(bobsPage, ns);
  await page.locator(`#presence li[data-user="bob"]`).waitFor({ timeout: WAIT_MS });
  await recordDeliveries(page);
  const { service_token: serviceToken } = await devTokens(stack.edgeB, { user, ns });
  const audience = { namespaces: [ns] };
  const send = (type, data) => publish({ serviceToken, type, audience, data });

  const review = await localSlot(page, { day: 2, hour: 13, minutes: 90 }); // Wednesday
  // 30 minutes: the demo draws anything shorter too thin for its text.
  const standup = await localSlot(page, { day: 4, hour: 9, minutes: 30 }); // Friday
  const standupMoved = await localSlot(page, { day: 4, hour: 11, minutes: 30 });
  const offsiteStart = await localSlot(page, { day: 5, hour: 0, minutes: 24 * 60 }); // Saturday, all day
  await send("calendar.event.created", { event_id: "evt_review", title: "Design review", ...pick(review) });
  await send("calendar.event.created", { event_id: "evt_standup", title: "Standup", ...pick(standup) });
  await send("calendar.event.created", { event_id: "evt_offsite", title: "Team offsite", all_day: true, ...pick(offsiteStart) });
  const last = await send("calendar.event.updated", {
    event_id: "evt_standup", title: "Standup (moved)", ...pick(standupMoved), changes: ["title", "starts_at", "ends_at"],
  });
  await waitDelivered(page, last.id);
  await waitTitle(page, "evt_standup", "Standup (moved)");
  for (const id of ["evt_review", "evt_offsite"]) await block(page, id).waitFor({ timeout: WAIT_MS });

  const path = fileURLToPath(new URL("../../docs/demo.png", import.meta.url));
  await page.screenshot({ path, animations: "disabled", timeout: WAIT_MS });
  console.log(`wrote ${path}`);
  await closePage(bobsPage);
  await closePage(page);
});

const pick = ({ starts_at, ends_at }) => ({ starts_at, ends_at });
