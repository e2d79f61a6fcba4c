// Presence in the demo: a page lists who else has the calendar open, across
// both edges, and drops a user whose page closed; herald.js's presence()
// answers the same list.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { closePage, TEST_TIMEOUT_MS, WAIT_MS, launchChromium, newPage, stack, unique, waitDemoLive } from "./lib.mjs";

let browser;
before(async () => { browser = await launchChromium(); });
after(async () => { await browser?.close(); });

const listed = (page) => page.locator("#presence li[data-user]").evaluateAll((items) => items.map((li) => li.dataset.user));

test("the demo shows who else has the calendar open, on either edge", { timeout: TEST_TIMEOUT_MS }, async () => {
  const ns = unique("e2e-presence");
  const [alice, bob] = [unique("alice"), unique("bob")];
  const onA = await newPage(browser);
  await onA.goto(`${stack.edgeA}/demo?${new URLSearchParams({ user: alice, ns })}`);
  await waitDemoLive(onA, ns);
  const onB = await newPage(browser);
  await onB.goto(`${stack.edgeB}/demo?${new URLSearchParams({ user: bob, ns })}`);
  await waitDemoLive(onB, ns);

  const both = [alice, bob].sort();
  await onA.locator(`#presence li[data-user="${bob}"]`).waitFor({ timeout: WAIT_MS });
  await onB.locator(`#presence li[data-user="${alice}"]`).waitFor({ timeout: WAIT_MS });
  assert.deepEqual(await listed(onA), both);
  assert.equal(await onA.locator(`#presence li[data-user="${alice}"]`).textContent(), `${alice} (you)`);

  const answer = await onA.evaluate((ns) => window.heraldDemo.herald.presence(ns), ns);
  assert.deepEqual(answer.members, both.map((user) => ({ user, connections: 1 })));
  assert.equal(answer.truncated, false);

  // Bob closes the calendar: he leaves alice's list (a closed socket leaves at once, not at the TTL).
  await closePage(onB);
  await onA.locator(`#presence li[data-user="${bob}"]`).waitFor({ state: "detached", timeout: WAIT_MS });
  assert.deepEqual(await listed(onA), [alice]);
  await closePage(onA);
});
