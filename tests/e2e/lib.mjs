// Shared helpers for the browser tests: the stack's addresses, Chromium,
// tokens, publishing, a tiny load balancer, and bounded waits.
//
// `cargo xtask e2e` starts NATS, the publisher and two edges on free ports and
// passes their addresses in HERALD_E2E_* variables; nothing here starts a
// service or downloads a browser.

import { createHmac, randomBytes, randomUUID } from "node:crypto";
import net from "node:net";
import { chromium } from "playwright-core";

function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run the browser tests with \`cargo xtask e2e\``);
  return value;
}

/** Where the stack is, read lazily so a missing variable fails the test that needs it, with a hint. */
export const stack = {
  get edgeA() { return required("HERALD_E2E_EDGE_A"); },
  get edgeB() { return required("HERALD_E2E_EDGE_B"); },
  get edgeAPid() { return Number(required("HERALD_E2E_EDGE_A_PID")); },
  get publisher() { return required("HERALD_E2E_PUBLISHER"); },
  get secret() { return required("HERALD_E2E_SECRET"); },
};

// Upper bounds for waits. Generous next to what they take on a laptop (tens
// to hundreds of ms), so that a slow CI box fails only when something is wrong.
export const WAIT_MS = 15_000;
export const TEST_TIMEOUT_MS = 90_000;

const LAUNCH_ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

/** The system's Chromium, headless; never a downloaded one. */
export function launchChromium() {
  return chromium.launch({
    executablePath: process.env.HERALD_E2E_CHROMIUM || "/usr/bin/chromium",
    args: LAUNCH_ARGS,
    headless: true,
    timeout: 30_000,
  });
}

/**
 * A fresh context (no localStorage from another test) with every Playwright
 * wait bounded, and browser-side errors copied to the test's output, but for
 * those matching `expectedErrors`.
 */
export async function newPage(browser, { expectedErrors = null, ...options } = {}) {
  const context = await browser.newContext({
    locale: "en-US",
    viewport: { width: 1280, height: 860 },
    ...options,
  });
  context.setDefaultTimeout(WAIT_MS);
  context.setDefaultNavigationTimeout(WAIT_MS);
  const page = await context.newPage();
  const uncaught = [];
  pageErrors.set(page, uncaught);
  page.on("pageerror", (err) => {
    uncaught.push(err.message);
    console.error(`[page error] ${err.message}`);
  });
  page.on("console", (msg) => {
    // The edges serve no favicon; every other browser-side error is worth seeing.
    if (msg.type() !== "error" || msg.location().url.endsWith("/favicon.ico")) return;
    if (expectedErrors?.test(msg.text())) return;
    console.error(`[console.error] ${msg.text()} (${msg.location().url})`);
  });
  return page;
}

/** Uncaught exceptions per page, which `closePage` turns into a failure. */
const pageErrors = new WeakMap();

/** Closes the page's context, failing the test if the page threw anything it did not catch. */
export async function closePage(page) {
  await page.context().close();
  const uncaught = pageErrors.get(page) ?? [];
  if (uncaught.length) throw new Error(`uncaught exceptions in the page: ${uncaught.join("; ")}`);
}

/** A name no other test (or earlier run) uses, so tests never see each other's events. */
export function unique(prefix) {
  return `${prefix}-${randomBytes(4).toString("hex")}`;
}

// === tokens ===

const b64url = (value) => Buffer.from(typeof value === "string" ? value : JSON.stringify(value)).toString("base64url");

/** An HS256 JWT signed with the stack's secret. */
export function signJwt(claims) {
  const body = `${b64url({ alg: "HS256", typ: "JWT" })}.${b64url(claims)}`;
  const signature = createHmac("sha256", stack.secret).update(body).digest("base64url");
  return `${body}.${signature}`;
}

/** A user token for the edges that lives `ttlSecs` seconds. */
export function userToken({ user, namespaces, ttlSecs }) {
  const now = Math.floor(Date.now() / 1000);
  const exp = now + ttlSecs;
  return { token: signJwt({ sub: user, aud: "herald", iat: now, exp, ns: namespaces }), exp };
}

/** `{token, service_token, exp}` from an edge's dev-mode `GET /dev/token`. */
export async function devTokens(edge, { user, ns }) {
  const response = await fetch(`${edge}/dev/token?${new URLSearchParams({ user, ns })}`, {
    signal: AbortSignal.timeout(WAIT_MS),
  });
  if (!response.ok) throw new Error(`GET /dev/token: ${response.status} ${await response.text()}`);
  return response.json();
}

// === publishing ===

/**
 * Publishes one event over HTTP, as a domain service would, and returns the
 * publisher's 202 body. `audience` is `{users?, namespaces?}`.
 */
export async function publish({ serviceToken, type, audience, data }) {
  const id = `e2e-${randomUUID()}`;
  const response = await fetch(`${stack.publisher}/v1/events`, {
    method: "POST",
    headers: { authorization: `Bearer ${serviceToken}`, "content-type": "application/json" },
    body: JSON.stringify({ id, type, source: "herald-e2e", audience, data: { calendar_id: "cal_e2e", ...data } }),
    signal: AbortSignal.timeout(WAIT_MS),
  });
  const body = await response.text();
  if (response.status !== 202) throw new Error(`POST /v1/events (${type}): ${response.status} ${body}`);
  return JSON.parse(body);
}

// === time, as the page sees it ===

/**
 * Start and end times in the browser's time zone, as RFC 3339 UTC strings.
 * `day` is "tomorrow" (today on a Sunday, so it stays in the demo's Monday to
 * Sunday week) or a weekday index of the current week (0 = Monday).
 * Returns `{starts_at, ends_at, dayIndex}`; `dayIndex` is the demo's column.
 */
export function localSlot(page, { day, hour, minute = 0, minutes = 60 }) {
  return page.evaluate(({ day, hour, minute, minutes }) => {
    const today = new Date();
    today.setHours(0, 0, 0, 0);
    const todayIndex = (today.getDay() + 6) % 7; // Monday = 0, as the demo draws it
    const dayIndex = day === "tomorrow" ? Math.min(todayIndex + 1, 6) : day;
    const start = new Date(today);
    start.setDate(start.getDate() + dayIndex - todayIndex);
    start.setHours(hour, minute);
    const end = new Date(start.getTime() + minutes * 60_000);
    const rfc3339 = (d) => d.toISOString().replace(/\.\d{3}Z$/, "Z");
    return { starts_at: rfc3339(start), ends_at: rfc3339(end), dayIndex };
  }, { day, hour, minute, minutes });
}

// === the demo page ===

/**
 * Waits until the demo page is live on `ns`: the indicator says open and the
 * namespace is joined. Over WebSocket, `open` comes with `welcome` and the
 * namespace is joined by a `subscribe` right after it; an event published in
 * between would be missed (a first join starts live), so wait for the
 * namespace's cursor, which the client sets from `subscribed`. Over SSE the
 * namespaces are joined before `welcome`.
 */
export async function waitDemoLive(page, ns) {
  await page.locator('#connection[data-state="open"]').waitFor({ timeout: WAIT_MS });
  await page.waitForFunction(
    (channel) => {
      const herald = window.heraldDemo?.herald;
      return herald?.state === "open" && (herald.transport === "sse" || channel in herald.cursors);
    },
    `ns:${ns}`,
    { timeout: WAIT_MS },
  );
}

/**
 * Records every `event` the page's Herald client hands the app, in
 * `window.e2eDelivered`, so tests can count deliveries per (channel, id).
 */
export function recordDeliveries(page) {
  return page.evaluate(() => {
    window.e2eDelivered = [];
    window.heraldDemo.herald.on("event", (e) => {
      window.e2eDelivered.push({ channel: e.channel, seq: e.seq, id: e.id, type: e.event_type, event_id: e.data?.event_id });
    });
  });
}

/** Waits until `id` (a publish id) has been delivered on `channels` channels. */
export function waitDelivered(page, id, channels = 1) {
  return page.waitForFunction(
    ({ id, channels }) => window.e2eDelivered.filter((d) => d.id === id).length >= channels,
    { id, channels },
    { timeout: WAIT_MS },
  );
}

/** The event block of a calendar event. */
export const block = (page, eventId) => page.locator(`.event[data-event-id="${eventId}"]`);

/** Waits until a block's title reads `title`. */
export function waitTitle(page, eventId, title) {
  return page.waitForFunction(
    ({ eventId, title }) =>
      document.querySelector(`.event[data-event-id="${CSS.escape(eventId)}"] .title`)?.textContent === title,
    { eventId, title },
    { timeout: WAIT_MS },
  );
}

// === a load balancer in a few lines ===

/**
 * A TCP proxy standing in for the load balancer in front of the edges, as in
 * production (the demo page, like any page, talks to one origin and
 * `herald.js` takes one URL). Each new connection goes to the current
 * upstream; `hold()` parks new connections (nothing is accepted upstream) until
 * `release(upstream)`, so a test can publish while the page is certainly
 * disconnected. With `refuseWebSockets`, it answers WebSocket upgrades with 403
 * like a proxy that blocks them, and passes everything else.
 */
export async function startProxy(upstream, { refuseWebSockets = false } = {}) {
  let target = new URL(upstream);
  let held = null; // connections waiting for release(), or null when not holding
  const sockets = new Set();
  const stats = { connections: 0, refusedUpgrades: 0 };

  const track = (socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => socket.destroy());
  };

  const forward = (client, first) => {
    const server = net.connect(Number(target.port), target.hostname);
    track(server);
    if (first) server.write(first);
    client.pipe(server);
    server.pipe(client);
    // Either side gone: the other goes too, as when a real edge dies.
    server.on("close", () => client.destroy());
    client.on("close", () => server.destroy());
    client.resume();
  };

  const route = (client, first) => {
    if (held) held.push([client, first]);
    else forward(client, first);
  };

  const server = net.createServer((client) => {
    stats.connections += 1;
    track(client);
    if (!refuseWebSockets) return route(client, null);
    // A browser opens a connection of its own for each WebSocket, so the
    // upgrade request is the first thing on it.
    let head = Buffer.alloc(0);
    const onData = (chunk) => {
      head = Buffer.concat([head, chunk]);
      if (!head.includes("\r\n\r\n") && head.length < 16_384) return;
      client.off("data", onData);
      client.pause();
      if (/^upgrade:\s*websocket\s*$/im.test(head.toString("latin1"))) {
        stats.refusedUpgrades += 1;
        client.end("HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        return;
      }
      route(client, head);
    };
    client.on("data", onData);
  });
  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });

  return {
    url: `http://127.0.0.1:${server.address().port}`,
    stats,
    hold() {
      held ??= [];
    },
    release(next) {
      target = new URL(next);
      const waiting = held ?? [];
      held = null;
      for (const [client, first] of waiting) if (!client.destroyed) forward(client, first);
    },
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

// === waiting ===

/**
 * Polls `condition` (sync or async) every 50 ms until it is truthy; fails
 * after `timeoutMs` with `what`. For conditions that live in the test process
 * (frames Playwright saw, the clock), where no selector can be awaited.
 */
export async function until(condition, what, timeoutMs = WAIT_MS) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await condition();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
