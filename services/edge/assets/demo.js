// Herald live calendar demo: a week view of the namespace's calendar, kept
// by the example calendar service (examples/calendar-service). The page
// loads the week with `calendar.event.list`, and creates, moves, renames,
// deletes and RSVPs with `client.rpc(...)` on its socket; every change comes
// back as a `calendar.event.*` notification to every member's windows, on
// every edge. `history_truncated` (or a reload) loads the week again.
//
// Dev mode only: tokens come from the edge's GET /dev/token. Query
// parameters: ?user=<id>&ns=<namespace>; the calendar's id is the namespace.

const DAY_START_HOUR = 7;
const DAY_END_HOUR = 20;
const VISIBLE_MINUTES = (DAY_END_HOUR - DAY_START_HOUR) * 60;
const MIN_BLOCK_MINUTES = 30; // one text line: shorter events get this much room, as calendars do
const MAX_ACTIVITY = 30;
const DAY_NAMES = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const HOUR_MS = 3_600_000;
const DAY_MS = 24 * HOUR_MS;

const $ = (id) => document.getElementById(id);

// === Who and where ===

const params = new URLSearchParams(location.search);
const namespace = params.get("ns") || "team-42";
const user = params.get("user") || rememberedUser();
/** One calendar per namespace; the service makes every caller a member in demo mode. */
const calendarId = namespace;

function rememberedUser() {
  const key = "herald:demo-user";
  let id = safeStorage(() => localStorage.getItem(key));
  if (!id) {
    id = `guest-${randomHex(3)}`;
    safeStorage(() => localStorage.setItem(key, id));
  }
  return id;
}

function safeStorage(action) {
  try {
    return action();
  } catch {
    return null; // private mode, storage disabled: the demo still runs
  }
}

function randomHex(bytes) {
  const values = crypto.getRandomValues(new Uint8Array(bytes));
  return Array.from(values, (b) => b.toString(16).padStart(2, "0")).join("");
}

// === The week ===

function startOfDay(date) {
  return new Date(date.getFullYear(), date.getMonth(), date.getDate());
}

function addDays(date, n) {
  const next = new Date(date);
  next.setDate(next.getDate() + n);
  return next;
}

const today = startOfDay(new Date());
const weekStart = addDays(today, -((today.getDay() + 6) % 7)); // Monday
const days = DAY_NAMES.map((_, i) => addDays(weekStart, i));
const todayIndex = days.findIndex((d) => d.getTime() === today.getTime());

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
const dayFormat = new Intl.DateTimeFormat(undefined, { weekday: "short", day: "numeric", month: "short" });
const rangeFormat = new Intl.DateTimeFormat(undefined, { day: "numeric", month: "long", year: "numeric" });

const fmtTime = (date) => timeFormat.format(date);

// === State: the calendar as the notifications built it ===

/** event_id -> {event_id, title, starts_at, ends_at, all_day, location, attendees, rsvps: {user_id: response}} */
const events = new Map();
let selectedId = null;
/** Notification ids already applied: one event published to several channels arrives once per channel. */
const seen = new Set();
/** event_id -> when this page asked for a change to it, to show the round trip. */
const pending = new Map();

/** An event as the service returns it (`calendar.event.list`, a call's result). */
function upsert(event) {
  events.set(event.event_id, {
    event_id: event.event_id,
    title: event.title,
    starts_at: event.starts_at,
    ends_at: event.ends_at,
    all_day: Boolean(event.all_day),
    location: event.location ?? null,
    attendees: event.attendees ?? [],
    rsvps: event.rsvps ?? {},
  });
}

function apply(notification) {
  if (seen.has(notification.id)) return;
  seen.add(notification.id);
  if (seen.size > 1000) seen.delete(seen.values().next().value);

  const data = notification.data || {};
  const id = data.event_id;
  const existing = events.get(id);
  let line;
  switch (notification.event_type) {
    case "calendar.event.created":
    case "calendar.event.updated":
      events.set(id, {
        event_id: id,
        title: data.title,
        starts_at: data.starts_at,
        ends_at: data.ends_at,
        all_day: Boolean(data.all_day),
        location: data.location ?? null,
        attendees: data.attendees ?? [],
        rsvps: existing?.rsvps ?? {},
      });
      line = notification.event_type.endsWith("created")
        ? `Created “${data.title}”`
        : `Updated “${data.title}” (${(data.changes || []).join(", ").replaceAll("_", " ")})`;
      break;
    case "calendar.event.deleted":
      events.delete(id);
      if (selectedId === id) selectedId = null;
      line = `Deleted “${existing?.title ?? id}”`;
      break;
    case "calendar.event.rsvp":
      if (existing) existing.rsvps = { ...existing.rsvps, [data.user_id]: data.response };
      line = `${data.user_id} ${data.response} “${existing?.title ?? id}”`;
      break;
    default:
      line = `${notification.event_type}`;
  }
  render(id);
  logActivity(line, notification);
}

// === Rendering ===

function buildGrid() {
  const head = $("week-head");
  const columns = $("days");
  const hours = $("hours");
  days.forEach((date, i) => {
    const cell = document.createElement("div");
    cell.className = `day-head${i === todayIndex ? " today" : ""}`;
    cell.innerHTML = `<span class="dow">${DAY_NAMES[i]}</span><span class="date">${date.getDate()}</span>`;
    head.append(cell);

    const column = document.createElement("div");
    column.className = `day-col${i === todayIndex ? " today" : ""}`;
    column.dataset.day = String(i);
    column.addEventListener("click", (e) => {
      if (e.target === column) pickSlot(i, e.offsetY / column.clientHeight);
    });
    columns.append(column);

    const option = document.createElement("option");
    option.value = String(i);
    option.textContent = dayFormat.format(date);
    $("day").append(option);
  });
  for (let h = DAY_START_HOUR; h < DAY_END_HOUR; h++) {
    const label = document.createElement("span");
    label.style.top = `${((h - DAY_START_HOUR) / (DAY_END_HOUR - DAY_START_HOUR)) * 100}%`;
    label.textContent = `${String(h).padStart(2, "0")}:00`;
    hours.append(label);
  }
  $("week-label").textContent = `${rangeFormat.format(days[0])} – ${rangeFormat.format(days[6])}`;
  $("namespace-label").textContent = namespace;
  $("user-label").textContent = user;
}

/** Redraws every block; `flashId` is the one that just changed. */
function render(flashId) {
  const columns = $("days").children;
  for (const column of columns) column.replaceChildren();
  const allDay = $("all-day");
  allDay.replaceChildren();

  const perDay = days.map(() => []);
  for (const event of events.values()) {
    const start = new Date(event.starts_at);
    const end = new Date(event.ends_at);
    if (Number.isNaN(start.getTime()) || Number.isNaN(end.getTime())) continue;
    if (event.all_day) {
      renderAllDay(allDay, event, start, end, flashId);
      continue;
    }
    // A timed event is drawn in each day of this week it touches.
    days.forEach((day, i) => {
      const dayStart = day.getTime();
      const next = addDays(day, 1).getTime();
      if (start.getTime() < next && end.getTime() > dayStart) perDay[i].push({ event, start, end });
    });
  }
  perDay.forEach((items, i) => layoutDay(columns[i], days[i], items, flashId));
  drawNowLine();
  renderSelection();
}

function renderAllDay(lane, event, start, end, flashId) {
  const first = days.findIndex((d) => addDays(d, 1) > start);
  const last = days.findLastIndex((d) => d < end);
  if (first < 0 || last < 0 || first > last) return;
  const block = eventBlock(event, flashId);
  block.classList.add("all-day");
  block.style.gridColumn = `${first + 1} / ${last + 2}`;
  lane.append(block);
}

/** Overlapping events share the column side by side, as calendars do. */
function layoutDay(column, day, items, flashId) {
  const origin = new Date(day).setHours(DAY_START_HOUR);
  const placed = items
    .map(({ event, start, end }) => {
      let top = (start - origin) / 60_000;
      let bottom = (end - origin) / 60_000;
      const clipped = top < 0 || bottom > VISIBLE_MINUTES;
      top = Math.min(Math.max(top, 0), VISIBLE_MINUTES - MIN_BLOCK_MINUTES);
      bottom = Math.min(Math.max(bottom, top + MIN_BLOCK_MINUTES), VISIBLE_MINUTES);
      return { event, start, end, top, bottom, clipped };
    })
    .sort((a, b) => a.top - b.top || b.bottom - a.bottom);

  let cluster = [];
  let clusterEnd = -1;
  const flush = () => {
    const lanes = [];
    for (const item of cluster) {
      let lane = lanes.findIndex((laneEnd) => laneEnd <= item.top);
      if (lane < 0) lane = lanes.length;
      lanes[lane] = item.bottom;
      item.lane = lane;
    }
    for (const item of cluster) item.lanes = lanes.length;
    cluster = [];
  };
  for (const item of placed) {
    if (item.top >= clusterEnd && cluster.length) flush();
    cluster.push(item);
    clusterEnd = Math.max(clusterEnd, item.bottom);
  }
  flush();

  for (const item of placed) {
    const block = eventBlock(item.event, flashId);
    const width = 100 / item.lanes;
    block.style.top = `${(item.top / VISIBLE_MINUTES) * 100}%`;
    block.style.height = `calc(${((item.bottom - item.top) / VISIBLE_MINUTES) * 100}% - 2px)`;
    block.style.left = `calc(${item.lane * width}% + 2px)`;
    block.style.width = `calc(${width}% - 4px)`;
    // A one-line block has room for the title and the start time only.
    const short = item.bottom - item.top < 45;
    if (short) block.classList.add("short");
    if (item.clipped) block.classList.add("clipped");
    block.querySelector(".time").textContent = short ? fmtTime(item.start) : `${fmtTime(item.start)}–${fmtTime(item.end)}`;
    column.append(block);
  }
}

function eventBlock(event, flashId) {
  const block = document.createElement("div");
  block.className = "event";
  block.dataset.eventId = event.event_id;
  block.tabIndex = 0;
  block.setAttribute("role", "button");
  block.setAttribute("aria-pressed", String(event.event_id === selectedId));
  block.style.setProperty("--hue", String(hue(event.event_id)));
  if (event.event_id === selectedId) block.classList.add("selected");
  if (event.event_id === flashId) block.classList.add("flash");

  const title = document.createElement("span");
  title.className = "title";
  title.textContent = event.title;
  const time = document.createElement("span");
  time.className = "time";
  block.append(title, time);

  const badge = rsvpBadge(event.rsvps);
  if (badge) block.append(badge);
  block.title = describe(event);
  block.addEventListener("click", () => select(event.event_id));
  block.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      select(event.event_id);
    }
  });
  return block;
}

function rsvpBadge(rsvps) {
  const answers = Object.values(rsvps || {});
  if (!answers.length) return null;
  const count = (r) => answers.filter((a) => a === r).length;
  const parts = [
    ["✓", count("accepted")],
    ["?", count("tentative")],
    ["✗", count("declined")],
  ].filter(([, n]) => n > 0);
  const badge = document.createElement("span");
  badge.className = "rsvp";
  badge.dataset.rsvp = rsvps[user] ?? "";
  badge.textContent = parts.map(([mark, n]) => `${mark}${n}`).join(" ");
  badge.title = Object.entries(rsvps)
    .map(([who, answer]) => `${who}: ${answer}`)
    .join("\n");
  return badge;
}

function hue(id) {
  const hues = [215, 170, 265, 30, 340, 135];
  let h = 0;
  for (const ch of id) h = (h * 31 + ch.codePointAt(0)) >>> 0;
  return hues[h % hues.length];
}

function describe(event) {
  const start = new Date(event.starts_at);
  const end = new Date(event.ends_at);
  const when = event.all_day
    ? `${dayFormat.format(start)}, all day`
    : `${dayFormat.format(start)}, ${fmtTime(start)}–${fmtTime(end)}`;
  return [event.title, when, event.location].filter(Boolean).join("\n");
}

function drawNowLine() {
  if (todayIndex < 0) return;
  const now = new Date();
  const minutes = (now.getHours() - DAY_START_HOUR) * 60 + now.getMinutes();
  if (minutes < 0 || minutes > VISIBLE_MINUTES) return;
  const column = $("days").children[todayIndex];
  column.querySelector(".now-line")?.remove();
  const line = document.createElement("div");
  line.className = "now-line";
  line.style.top = `${(minutes / VISIBLE_MINUTES) * 100}%`;
  column.append(line);
}

// === Selection ===

function select(id) {
  selectedId = selectedId === id ? null : id;
  for (const block of document.querySelectorAll(".event")) {
    const on = block.dataset.eventId === selectedId;
    block.classList.toggle("selected", on);
    block.setAttribute("aria-pressed", String(on));
  }
  renderSelection(true);
}

function renderSelection(changed = false) {
  const event = selectedId && events.get(selectedId);
  if (!event) selectedId = null;
  const summary = $("selected-summary");
  const rename = $("rename-title");
  summary.textContent = event ? describe(event).replaceAll("\n", " · ") : "Click an event in the calendar to select it.";
  summary.classList.toggle("muted", !event);
  if (changed || !event) rename.value = event ? event.title : "";
  rename.disabled = !event;
  $("move").textContent = event?.all_day ? "Move +1 day" : "Move +1h";
  for (const button of document.querySelectorAll("#selection button")) button.disabled = !event;
}

function pickSlot(dayIndex, fraction) {
  const minutes = Math.floor((fraction * VISIBLE_MINUTES) / 30) * 30 + DAY_START_HOUR * 60;
  $("day").value = String(dayIndex);
  $("start").value = `${String(Math.floor(minutes / 60)).padStart(2, "0")}:${String(minutes % 60).padStart(2, "0")}`;
  $("all-day-input").checked = false;
  $("title").focus();
}

// === Activity and status ===

function logActivity(text, notification) {
  const list = $("activity");
  list.querySelector(".empty")?.remove();
  const item = document.createElement("li");
  item.textContent = text;
  const meta = document.createElement("span");
  meta.className = "meta";
  const sent = pending.get(notification.data?.event_id);
  const latency = sent ? ` · round trip ${Math.round(performance.now() - sent)} ms` : "";
  if (sent) {
    pending.delete(notification.data.event_id);
    setStatus(`${text}${latency}`);
  }
  meta.textContent = `${notification.channel} · seq ${notification.seq}${latency}`;
  item.append(meta);
  list.prepend(item);
  while (list.children.length > MAX_ACTIVITY) list.lastElementChild.remove();
}

function setStatus(text, error = false) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("error", error);
}

const STATE_TEXT = {
  connecting: "Connecting…",
  open: "Live",
  reconnecting: "Reconnecting…",
  closed: "Offline",
  error: "Client failed to load",
};

function setConnection(state) {
  const indicator = $("connection");
  indicator.dataset.state = state;
  indicator.querySelector(".state-text").textContent = STATE_TEXT[state] ?? state;
  if (state !== "open") $("connection-node").textContent = "";
}

function showNotice(text) {
  $("notice-text").textContent = text;
  $("notice").hidden = false;
}

// === Tokens and calls ===

let tokens = null; // {token, service_token, exp}
let herald = null;

async function fetchTokens() {
  // `rpc`: the token may call the calendar's methods.
  const query = new URLSearchParams({ user, ns: namespace, rpc: "calendar.event.*" });
  const response = await fetch(`/dev/token?${query}`, { cache: "no-store" });
  if (!response.ok) throw new Error(`GET /dev/token: ${response.status} ${await errorText(response)}`);
  tokens = await response.json();
  return tokens;
}

async function errorText(response) {
  try {
    const body = await response.json();
    const details = (body.errors || []).map((e) => `${e.path}: ${e.message}`).join("; ");
    return details || body.message || response.statusText;
  } catch {
    return response.statusText;
  }
}

/** RFC 3339 in UTC without milliseconds. */
const rfc3339 = (date) => date.toISOString().replace(/\.\d{3}Z$/, "Z");

/** Why a call failed, for people: the code, the message, each broken rule. */
function describeError(err) {
  const rules = (err.errors || []).map((e) => `${e.path}: ${e.message}`).join("; ");
  return [err.code, rules || err.frame?.message || err.message].filter(Boolean).join(": ");
}

/**
 * Calls `method` on this page's calendar through the socket. The result is
 * applied at once; the notification of the change follows, here and in every
 * other window of the calendar's members.
 */
async function call(method, data, what) {
  if (watchOnly()) return null;
  const started = performance.now();
  if (data.event_id) pending.set(data.event_id, started);
  setStatus(`${what}…`);
  try {
    const result = await herald.rpc(method, { calendar_id: calendarId, ...data });
    const ms = Math.round(performance.now() - started);
    if (result?.deleted) {
      events.delete(result.event_id);
    } else if (result?.event_id) {
      upsert(result);
      // A created event's id is known only now; its notification may come later.
      if (!data.event_id) pending.set(result.event_id, started);
    }
    render(result?.event_id);
    setStatus(`${what}: done in ${ms} ms (rpc), notifying the other windows…`);
    return result;
  } catch (err) {
    if (data.event_id) pending.delete(data.event_id);
    setStatus(`${what} failed: ${describeError(err)}`, true);
    return null;
  }
}

/**
 * Over server-sent events the page can only listen: calls need the
 * WebSocket. Says so instead of letting each call wait for one.
 */
function watchOnly() {
  if (herald.transport !== "sse") return false;
  setStatus("Connected over server-sent events: this page can watch the calendar but not change it (calls need a WebSocket).", true);
  return true;
}

/** Loads the week from the calendar service: the calendar as it is now. */
async function loadWeek() {
  if (watchOnly()) return;
  const from = rfc3339(days[0]);
  const to = rfc3339(addDays(days[0], 7));
  try {
    const { events: listed } = await herald.rpc("calendar.event.list", { calendar_id: calendarId, from, to });
    for (const event of listed) upsert(event);
    render();
    window.heraldDemo.loads += 1;
  } catch (err) {
    setStatus(`Loading the week failed: ${describeError(err)}`, true);
  }
}

function wireForm() {
  const defaultHour = Math.min(Math.max(new Date().getHours() + 1, DAY_START_HOUR), DAY_END_HOUR - 1);
  $("start").value = `${String(defaultHour).padStart(2, "0")}:00`;
  $("day").value = String(Math.max(todayIndex, 0));
  $("all-day-input").addEventListener("change", (e) => {
    $("start").disabled = e.target.checked;
    $("duration").disabled = e.target.checked;
  });

  $("compose").addEventListener("submit", (e) => {
    e.preventDefault();
    const title = $("title").value.trim();
    if (!title) return setStatus("Give the event a title.", true);
    const day = days[Number($("day").value)];
    let start;
    let end;
    if ($("all-day-input").checked) {
      start = day;
      end = addDays(day, 1);
    } else {
      const [h, m] = $("start").value.split(":").map(Number);
      start = new Date(day);
      start.setHours(h, m);
      end = new Date(start.getTime() + Number($("duration").value) * 60_000);
    }
    const data = { title, starts_at: rfc3339(start), ends_at: rfc3339(end) };
    if ($("all-day-input").checked) data.all_day = true;
    call("calendar.event.create", data, `Creating “${title}”`);
    $("title").value = "";
  });

  $("move").addEventListener("click", () => {
    const event = events.get(selectedId);
    if (!event) return;
    const shift = event.all_day ? DAY_MS : HOUR_MS;
    const moved = {
      event_id: event.event_id,
      starts_at: rfc3339(new Date(new Date(event.starts_at).getTime() + shift)),
      ends_at: rfc3339(new Date(new Date(event.ends_at).getTime() + shift)),
    };
    call("calendar.event.update", moved, `Moving “${event.title}”`);
  });

  $("rename").addEventListener("click", () => {
    const event = events.get(selectedId);
    const title = $("rename-title").value.trim();
    if (!event) return;
    if (!title || title === event.title) return setStatus("Type a new title first.", true);
    call("calendar.event.update", { event_id: event.event_id, title }, `Renaming to “${title}”`);
  });
  $("rename-title").addEventListener("keydown", (e) => {
    if (e.key === "Enter") $("rename").click();
  });

  $("delete").addEventListener("click", () => {
    const event = events.get(selectedId);
    if (!event) return;
    call("calendar.event.delete", { event_id: event.event_id }, `Deleting “${event.title}”`);
  });

  for (const button of document.querySelectorAll("[data-rsvp]")) {
    button.addEventListener("click", () => {
      const event = events.get(selectedId);
      if (!event) return;
      // The service answers for the token's user: there is no user_id to send.
      const data = { event_id: event.event_id, response: button.dataset.rsvp };
      call("calendar.event.rsvp", data, `RSVP ${button.dataset.rsvp}`);
    });
  }

  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && selectedId) select(selectedId);
  });
  $("notice-dismiss").addEventListener("click", () => ($("notice").hidden = true));
  $("notice-clear").addEventListener("click", () => {
    $("notice").hidden = true;
    reloadWeek();
  });
}

// === Presence: who else has this calendar open ===

// user → connections, from presence() on every welcome, then the diffs.
let present = new Map();

function renderPresence() {
  const list = $("presence");
  list.replaceChildren();
  const users = [...present.keys()].sort();
  if (!users.length) {
    const li = document.createElement("li");
    li.className = "muted empty";
    li.textContent = "Nobody (yet).";
    list.append(li);
  }
  for (const id of users) {
    const li = document.createElement("li");
    li.textContent = id === user ? `${id} (you)` : id;
    if (id === user) li.className = "me";
    li.dataset.user = id;
    list.append(li);
  }
}

async function loadPresence(herald) {
  try {
    const { members } = await herald.presence(namespace);
    present = new Map(members.map((m) => [m.user, m.connections]));
    renderPresence();
  } catch (err) {
    // Without the `presence` claim the list stays as it is.
    setStatus(`Presence: ${err.message}`, true);
  }
}

function applyPresence({ joined, left }) {
  for (const id of joined) present.set(id, present.get(id) ?? 1);
  for (const id of left) present.delete(id);
  renderPresence();
}

/** Forgets what the page holds and loads the week from the service. */
function reloadWeek() {
  events.clear();
  render();
  loadWeek();
}

// === Start ===

async function start() {
  buildGrid();
  wireForm();
  render();
  setInterval(drawNowLine, 60_000);

  let Herald;
  try {
    ({ Herald } = await import("/herald.js"));
  } catch (err) {
    setConnection("error");
    setStatus(`Cannot load /herald.js: ${err.message}`, true);
    return;
  }

  const scheme = location.protocol === "https:" ? "wss" : "ws";
  herald = new Herald({
    url: `${scheme}://${location.host}/v1/ws`,
    getToken: async () => (await fetchTokens()).token,
    presence: [namespace],
    onPresence: applyPresence,
    persist: `herald:demo:${user}`,
  });
  herald.on("state", setConnection);
  let loaded = false;
  herald.on("welcome", (welcome) => {
    $("connection-node").textContent = welcome.node ? `via ${welcome.node}` : "";
    $("connection").dataset.node = welcome.node ?? "";
    loadPresence(herald);
    // Once per page: after a reconnect the socket resumes, and what changed
    // meanwhile is replayed as notifications.
    if (!loaded) {
      loaded = true;
      loadWeek();
    }
  });
  herald.on("event", (notification) => {
    if (notification.event_type?.startsWith("calendar.event.")) apply(notification);
  });
  herald.on("truncated", ({ channel, first_seq }) => {
    const since = first_seq > 0 ? ` (it now starts at seq ${first_seq})` : "";
    showNotice(`Some changes on ${channel} could not be replayed${since}: the week was loaded again.`);
    reloadWeek();
  });
  herald.on("error", (frame) => setStatus(`${frame.code}: ${frame.message}`, true));
  // For the console and browser tests.
  window.heraldDemo = { herald, events, user, namespace, calendarId, loads: 0 };
  herald.connect();
}

start();
