// Herald browser client: one connection to any edge, per-channel cursors,
// resume after every reconnect. No dependencies and no build step; the guide
// is docs/client.md, the types are herald.d.ts.
//
// The cursor is the whole story. Seqs only grow within a channel, so a client
// that remembers the last seq it handed to the app, per channel, can ask any
// edge for "everything after it" and drop anything at or below it. That makes
// delivery exactly-once per channel across reconnects, edge changes and server
// resume races, without any state on the server.

const DEFAULT_BACKOFF = { initialMs: 500, maxMs: 30000 };
// The edge refuses client frames beyond a token bucket (20/s, burst 40, by
// default) and closes with 4029 after repeated refusals. A reconnect that
// resubscribes many namespaces at once would trip it, so frames are paced a
// little below the defaults (the limits are not announced in `welcome`).
const SEND_BURST = 30;
const SEND_PER_SEC = 15;
// What an error code ends a stream with; SSE has no close codes, so its last
// frame is mapped to the same numbers and both transports share one policy.
const CLOSE_BY_CODE = {
  MISSING_TOKEN: 4001, INVALID_TOKEN: 4002, EXPIRED_TOKEN: 4003, FORBIDDEN_NAMESPACE: 4004,
  TOO_MANY_CONNECTIONS: 4005, SLOW_CONSUMER: 4008, REVOKED: 4010, RATE_LIMITED: 4029,
  NATS_UNAVAILABLE: 1013,
};
// REVOKED: a service ended the user's sessions (logout everywhere, a suspended
// account) or revoked the token. Reconnecting, even with a fresh token from
// getToken(), would undo what the service asked for: the app decides.
const FATAL = new Set([4001, 4004, 4010]);
// TOO_MANY_CONNECTIONS: the user's other tabs hold every slot on that edge.
// Retrying soon only churns; the usual backoff waits at least this many
// initial delays (4 s by default) before each try.
const CROWDED_FLOOR_STEPS = 8;
// The token may just be stale (a sleeping tab, a cached token): one fresh try.
const RETRY_WITH_NEW_TOKEN = new Set([4002, 4003]);
// Subscribe errors that say "not now" rather than "no".
const TRANSIENT = new Set(["NATS_UNAVAILABLE", "RATE_LIMITED"]);
const MAX_TIMEOUT_MS = 2 ** 31 - 1;
// The edge refuses a socket's calls past `--max-rpc-in-flight` (8 by
// default) with RATE_LIMITED; more wait here, in call order, instead.
const RPC_IN_FLIGHT = 8;
// How long a call may wait for a socket (connecting, reconnecting, or behind
// other calls) before it is sent; then it rejects with NOT_CONNECTED. Once
// sent, the edge answers within its `--rpc-timeout-ms`.
const DEFAULT_RPC_WAIT_MS = 10000;
const OPEN = 1; // WebSocket.OPEN, without touching a global that may be missing

/**
 * A rejected `subscribe()`/`unsubscribe()`/`rpc()`: `frame` is the error
 * frame (for `rpc()`, the `error` of its `rpc_result`), `errors` the failed
 * rules of VALIDATION_FAILED, each with its `path`.
 */
export class HeraldError extends Error {
  constructor(frame) {
    super(`${frame.code}: ${frame.message}`);
    this.name = "HeraldError";
    this.code = frame.code;
    this.errors = Array.isArray(frame.errors) ? frame.errors : [];
    this.frame = frame;
  }
}

const errorFrame = (code, message) => ({ type: "error", code, message });
const report = (err) => (globalThis.reportError ?? console.error)(err);
const attempt = (fn) => { try { return fn(); } catch { return undefined; } };
// The edge splits `ns=` on commas and trims names, so such names cannot ride
// in an SSE URL; over WebSocket they travel in `subscribe` frames and are fine.
const sseable = (ns) => !ns.includes(",") && ns.trim() === ns;

function defaultUrl() {
  const { protocol, host } = globalThis.location;
  return `${protocol === "https:" ? "wss" : "ws"}://${host}/v1/ws`;
}

export class Herald {
  #opts; #listeners = new Map(); #state = "closed";
  #cursors = new Map(); // channel → last seq handed to the app
  #epoch = null; #user = null;
  #namespaces; // wanted namespaces, in order; joined on every (re)connect
  #joined = new Set(); // channels that were live at some point: a later gap must be announced
  #waiters = []; // pending subscribe()/unsubscribe() promises
  #refs = new Map(); #nextRef = 1; // ref → what it was sent for, on the current connection
  #conn = null;
  #gen = 0; // bumped on every teardown: callbacks of an older connection are ignored
  #retryTimer; #attempt = 0;
  #kinds; #kindIdx = 0; #wsFailures = 0; #wsWorked = false; #authRetried = false; #everOpen = false;
  #calls = []; // rpc() calls not answered yet, in call order: { state: "waiting" | "sent", … }

  constructor(options = {}) {
    if (typeof options.getToken !== "function") throw new TypeError("Herald: getToken is required");
    const url = options.url ?? defaultUrl();
    this.#opts = {
      url,
      sseUrl: options.sseUrl ?? url.replace(/^ws/, "http").replace(/\/v1\/ws(?=$|[?#])/, "/v1/sse"),
      getToken: options.getToken,
      persist: options.persist || null,
      backoff: { ...DEFAULT_BACKOFF, ...options.backoff },
      transports: options.transports ?? ["websocket", "sse"],
      rpcWaitMs: options.rpcWaitMs ?? DEFAULT_RPC_WAIT_MS,
    };
    this.#namespaces = new Set(options.namespaces ?? []);
    this.#load();
  }

  get state() { return this.#state; }
  get transport() { return this.#conn?.kind ?? null; }
  get cursors() { return Object.freeze(Object.fromEntries(this.#cursors)); }

  on(name, fn) {
    if (!this.#listeners.has(name)) this.#listeners.set(name, new Set());
    this.#listeners.get(name).add(fn);
    return this;
  }
  off(name, fn) { this.#listeners.get(name)?.delete(fn); return this; }

  connect() {
    if (this.#state !== "closed") return;
    // A fresh start tries the preferred transport again, whatever failed before.
    this.#kinds = this.#opts.transports.filter((kind) =>
      kind === "websocket" ? typeof WebSocket === "function" : kind === "sse" && typeof fetch === "function");
    this.#kindIdx = this.#attempt = this.#wsFailures = 0;
    this.#wsWorked = this.#authRetried = this.#everOpen = false;
    this.#setState("connecting");
    this.#open();
  }

  close() {
    this.#stop(errorFrame("CANCELLED", "close() was called"));
  }

  subscribe(namespace) {
    return new Promise((resolve, reject) => {
      this.#namespaces.add(namespace);
      this.#waiters.push({ kind: "subscribe", ns: namespace, resolve, reject });
      const conn = this.#conn;
      if (conn?.kind === "websocket" && conn.welcomed) this.#sendSubscribe(conn, namespace, this.#cursors, this.#epoch);
      // An SSE stream's channels are fixed: open a new one, resuming from the cursors.
      else if (conn?.kind === "sse") this.#restart(0);
      // Otherwise the next connection joins it.
    });
  }

  unsubscribe(namespace) {
    const channel = `ns:${namespace}`;
    this.#forget(namespace, errorFrame("CANCELLED", `unsubscribe("${namespace}") was called`));
    const conn = this.#conn;
    if (conn?.kind === "websocket" && conn.welcomed) {
      return new Promise((resolve, reject) => {
        const ref = this.#ref({ kind: "unsubscribe", ns: namespace });
        this.#waiters.push({ kind: "unsubscribe", ns: namespace, resolve, reject });
        this.#send(conn, { type: "unsubscribe", ref, namespace });
      });
    }
    if (conn?.kind === "sse") this.#restart(0);
    return Promise.resolve({ type: "unsubscribed", ref: null, channel });
  }

  /**
   * Calls `method` with `data` over the socket; resolves with the service's
   * result, rejects with a HeraldError carrying `code` (the service's or the
   * edge's; see herald.d.ts) and `errors`. A call made while (re)connecting
   * waits for the socket, at most `rpcWaitMs`. A call never is sent twice: if
   * the socket ends after it was sent, it rejects with CONNECTION_LOST (it
   * may have taken effect).
   */
  rpc(method, data = {}) {
    return new Promise((resolve, reject) => {
      if (this.#state === "closed") {
        return reject(new HeraldError(errorFrame("NOT_CONNECTED", "rpc() before connect() or after close()")));
      }
      const call = { method, data, resolve, reject };
      this.#wait(call);
      this.#calls.push(call);
      this.#pumpCalls();
    });
  }

  // === connecting ===

  async #open() {
    const gen = this.#gen;
    const kind = this.#kinds[this.#kindIdx];
    if (!kind) return this.#fail(errorFrame("NO_TRANSPORT", "no usable transport (WebSocket, fetch)"), true);
    let token;
    try {
      token = await this.#opts.getToken();
    } catch (err) {
      if (gen !== this.#gen) return;
      this.#emit("error", errorFrame("TOKEN_UNAVAILABLE", `getToken() failed: ${err?.message ?? err}`));
      return this.#restart(this.#backoff());
    }
    if (gen !== this.#gen) return; // closed or restarted while waiting for the token
    const conn = { gen, kind, welcomed: false, opened: false, timers: new Map(), had: new Set(),
      queue: [], tokens: SEND_BURST, tokensAt: Date.now(), lastFrameAt: Date.now() };
    this.#conn = conn;
    try {
      if (kind === "websocket") this.#openWebSocket(conn, token);
      else await this.#openSse(conn, token);
    } catch (err) {
      this.#fail(errorFrame("NO_TRANSPORT", `cannot open ${kind}: ${err?.message ?? err}`), true);
    }
  }

  #openWebSocket(conn, token) {
    const url = new URL(this.#opts.url, globalThis.location?.href);
    url.searchParams.set("token", token);
    // `since` at connect resumes the channels named at connect; naming no `ns`
    // there keeps it to the user channel, and each namespace gets its own
    // cursor in its own `subscribe`.
    const userChannel = `user:${this.#user}`;
    if (this.#user !== null && this.#epoch !== null && this.#cursors.has(userChannel)) {
      url.searchParams.set("since", this.#cursors.get(userChannel));
      url.searchParams.set("epoch", this.#epoch);
      conn.had.add(userChannel);
    }
    const ws = (conn.ws = new WebSocket(url));
    ws.onopen = () => { conn.opened = true; this.#wsFailures = 0; };
    ws.onmessage = (message) => this.#onMessage(conn, message.data);
    ws.onclose = (event) => this.#onEnd(conn, event.code);
  }

  // SSE over fetch rather than EventSource: EventSource cannot set
  // `Last-Event-ID` on a new stream, so a stream recreated for a new token, a
  // namespace change or a page reload would start live and lose what it missed.
  // With fetch the client sends its own cursors every time, and sees heartbeat
  // comments, so a dead stream is noticed.
  async #openSse(conn, token) {
    const url = new URL(this.#opts.sseUrl, globalThis.location?.href);
    conn.requested = [...this.#namespaces].filter(sseable);
    if (conn.requested.length) url.searchParams.set("ns", conn.requested.join(","));
    const headers = { Accept: "text/event-stream", Authorization: `Bearer ${token}` };
    // The edge wants one seq per channel in `welcome`'s order; predict that
    // order (user channel, then the `ns` list). A channel with no cursor yet
    // resumes from the newest seq seen anywhere: seqs are positions in one
    // stream, so that misses at most a notification in flight at the cut (and
    // such a channel is announced as truncated, see #onWelcome).
    const predicted = this.#user === null ? [] : [`user:${this.#user}`, ...conn.requested.map((ns) => `ns:${ns}`)];
    const known = predicted.filter((channel) => this.#cursors.has(channel));
    if (this.#epoch !== null && known.length) {
      const newest = Math.max(...this.#cursors.values());
      headers["Last-Event-ID"] = `${this.#epoch}/${predicted.map((c) => this.#cursors.get(c) ?? newest).join(".")}`;
      conn.predicted = predicted.join("\n");
      conn.had = new Set(known);
    }
    conn.abort = new AbortController();
    try {
      const response = await fetch(url, { headers, signal: conn.abort.signal, cache: "no-store" });
      if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
      conn.opened = true;
      await this.#readSse(conn, response.body);
    } catch {
      // Aborted, refused before the stream (503 while draining), or cut off:
      // the last frame decides what happens next.
    }
    const last = conn.last;
    let code = 1006;
    if (last?.type === "reconnect") code = 1012;
    // After `welcome` a refused namespace is a notice, not a refused stream.
    else if (last?.type === "error" && !(conn.welcomed && last.code === "FORBIDDEN_NAMESPACE")) code = CLOSE_BY_CODE[last.code] ?? 1006;
    this.#onEnd(conn, code);
  }

  async #readSse(conn, body) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let data = [];
    let id = null;
    for (;;) {
      const { value, done } = await reader.read();
      if (done || conn.gen !== this.#gen) return;
      conn.lastFrameAt = Date.now(); // heartbeat comments count as life too
      buffer += value;
      const lines = buffer.split("\n");
      buffer = lines.pop();
      for (let line of lines) {
        if (line.endsWith("\r")) line = line.slice(0, -1);
        if (line === "") {
          if (data.length) this.#onMessage(conn, data.join("\n"), id);
          data = [];
          id = null;
        } else if (line.startsWith("data:")) data.push(line.slice(line[5] === " " ? 6 : 5));
        else if (line.startsWith("id:")) id = line.slice(line[3] === " " ? 4 : 3);
      }
    }
  }

  // === frames ===

  #onMessage(conn, text, sseId) {
    if (conn.gen !== this.#gen) return;
    conn.lastFrameAt = Date.now();
    const frame = attempt(() => JSON.parse(text));
    if (!frame || typeof frame !== "object") return;
    conn.last = frame;
    const info = frame.ref != null ? this.#refs.get(frame.ref) : undefined;
    if (info) this.#refs.delete(frame.ref);
    switch (frame.type) {
      case "welcome": return this.#onWelcome(conn, frame);
      case "event": return this.#onEvent(conn, frame, sseId);
      case "subscribed": return this.#onSubscribed(conn, frame, info);
      case "unsubscribed":
        // No ref: the edge dropped a namespace a refreshed token no longer
        // allows, or a service took it from the user (`code: "REVOKED"`).
        if (!info) {
          this.#forget(frame.channel.slice(3), null);
          this.#emit("unsubscribed", frame);
        }
        return this.#settle("unsubscribe", frame.channel.slice(3), (w) => w.resolve(frame));
      case "authenticated": return this.#scheduleRefresh(conn, frame.token_exp);
      case "history_truncated": {
        // No replay follows, and live delivery starts above the `seq` that
        // `subscribed` reported, so that is a safe cursor once the app refetches.
        const hw = conn.resumedHw?.get(frame.channel);
        if (hw !== undefined && !(this.#cursors.get(frame.channel) >= hw)) this.#cursors.set(frame.channel, hw);
        this.#save();
        return this.#emit("truncated", frame);
      }
      case "reconnect": return this.#restart(0); // the edge is draining: any other edge, now
      case "rpc_result": return this.#onRpcResult(info, frame);
      case "error": return this.#onError(frame, info);
    }
  }

  #onWelcome(conn, welcome) {
    if (this.#user !== null && welcome.user !== this.#user) {
      // Stored cursors belong to someone else: drop them and start over, live.
      this.#cursors.clear();
      this.#joined.clear();
      this.#epoch = null;
      this.#user = welcome.user;
      this.#save();
      return this.#restart(0);
    }
    const oldEpoch = this.#epoch;
    let resumeFrom = this.#cursors;
    if (oldEpoch !== null && welcome.epoch !== oldEpoch) {
      // The stream was recreated and seqs restarted: old cursors would drop
      // new events as seen. They are still sent once, with their epoch, so the
      // edge answers `history_truncated` for each channel.
      resumeFrom = new Map(this.#cursors);
      this.#cursors.clear();
      conn.distrustIds = true;
    }
    this.#epoch = welcome.epoch;
    this.#user = welcome.user;
    conn.welcomed = true;
    conn.channels = welcome.channels;
    this.#attempt = 0;
    this.#authRetried = false;
    this.#everOpen = true;
    if (conn.kind === "websocket") this.#wsWorked = true;
    // The edge could not use an SSE cursor built for other channels than it joined.
    if (conn.predicted !== undefined && conn.predicted !== welcome.channels.join("\n")) conn.had.clear();
    // A channel that was live before and is rejoined without its own cursor
    // may have missed something: say so, as the edge would (`first_seq` 0).
    const checked = conn.kind === "sse" ? welcome.channels : [`user:${welcome.user}`];
    const gaps = checked.filter((c) => !conn.had.has(c) && (this.#joined.has(c) || this.#cursors.has(c)));
    for (const channel of welcome.channels) this.#joined.add(channel);
    // Where live delivery starts on each channel: a channel with no cursor
    // yet takes that seq as one, so the next reconnect resumes it (with
    // `since`) instead of starting live and reporting a gap.
    for (const [channel, seq] of Object.entries(welcome.seqs ?? {})) {
      if (!this.#cursors.has(channel)) this.#cursors.set(channel, seq);
    }
    this.#save();
    this.#setState("open");
    if (conn.gen === this.#gen) this.#emit("welcome", welcome);
    for (const channel of gaps) {
      if (conn.gen === this.#gen) this.#emit("truncated", { type: "history_truncated", channel, first_seq: 0 });
    }
    if (conn.gen !== this.#gen) return; // a listener closed us
    this.#scheduleRefresh(conn, welcome.token_exp);
    if (conn.kind === "websocket") {
      for (const ns of this.#namespaces) this.#sendSubscribe(conn, ns, resumeFrom, oldEpoch ?? welcome.epoch);
      if (welcome.heartbeat_ms > 0) this.#timer(conn, "ping", welcome.heartbeat_ms, true, () => this.#ping(conn));
      this.#pumpCalls();
      return;
    }
    this.#pumpCalls(); // SSE: calls cannot be sent
    for (const ns of [...this.#namespaces]) {
      const channel = `ns:${ns}`;
      if (welcome.channels.includes(channel)) {
        const reply = { type: "subscribed", ref: null, channel, seq: this.#cursors.get(channel) ?? 0 };
        this.#settle("subscribe", ns, (w) => w.resolve(reply));
        continue;
      }
      // Refused (the edge sent an error frame saying why) or not SSE-able.
      const refusal = errorFrame("NOT_JOINED", `the edge did not join ${channel} over SSE`);
      this.#settle("subscribe", ns, (w) => w.reject(new HeraldError(refusal)));
      if (conn.requested.includes(ns)) this.#forget(ns, null);
    }
    // SSE sends no pings to answer; its heartbeat comments must keep coming.
    const hb = welcome.heartbeat_ms;
    if (hb > 0) this.#timer(conn, "watch", hb, true, () => {
      if (Date.now() - conn.lastFrameAt > 2.5 * hb) this.#restart(this.#backoff());
    });
  }

  #onEvent(conn, event, sseId) {
    const { channel, seq } = event;
    const unwanted = channel.startsWith("ns:") && !this.#namespaces.has(channel.slice(3));
    const last = this.#cursors.get(channel);
    if (!unwanted && (last === undefined || seq > last)) {
      this.#emit("event", event);
      // Only now: a cursor must never pass an event the app has not had.
      this.#cursors.set(channel, seq);
    }
    // Each SSE id holds every channel's cursor, including where live delivery
    // started on channels with no event yet: learn those too.
    if (sseId && conn.channels && !conn.distrustIds) {
      const slash = sseId.lastIndexOf("/");
      const seqs = sseId.slice(slash + 1).split(".").map(Number);
      if (sseId.slice(0, slash) === this.#epoch && seqs.length === conn.channels.length) {
        conn.channels.forEach((c, i) => {
          if (Number.isSafeInteger(seqs[i]) && !(this.#cursors.get(c) >= seqs[i])) this.#cursors.set(c, seqs[i]);
        });
      }
    }
    this.#save();
  }

  #onSubscribed(conn, frame, info) {
    const ns = frame.channel.slice(3);
    if (info?.resumed) {
      (conn.resumedHw ??= new Map()).set(frame.channel, frame.seq);
    } else if (info && this.#namespaces.has(ns) && !(this.#cursors.get(frame.channel) >= frame.seq)) {
      // Joined live: delivery starts above `seq`, so it is this channel's cursor.
      this.#cursors.set(frame.channel, frame.seq);
    }
    this.#joined.add(frame.channel);
    this.#save();
    this.#settle("subscribe", ns, (w) => w.resolve(frame));
  }

  #onRpcResult(info, frame) {
    if (info?.kind !== "rpc") return;
    if (frame.error) {
      const error = { type: "error", ref: frame.ref, ...frame.error };
      this.#endCall(info.call, (c) => c.reject(new HeraldError(error)));
    } else {
      this.#endCall(info.call, (c) => c.resolve(frame.result));
    }
  }

  // Sends waiting calls while the socket is a welcomed WebSocket and fewer
  // than RPC_IN_FLIGHT are sent; over SSE there is no way to send them.
  #pumpCalls() {
    const conn = this.#conn;
    if (conn?.kind === "sse" && conn.welcomed) {
      const refusal = errorFrame("NOT_CONNECTED", "calls need a WebSocket; this connection is SSE");
      for (const call of this.#calls.filter((c) => c.state === "waiting")) {
        this.#endCall(call, (c) => c.reject(new HeraldError(refusal)));
      }
      return;
    }
    if (conn?.kind !== "websocket" || !conn.welcomed) return;
    let sent = this.#calls.filter((c) => c.state === "sent").length;
    for (const call of this.#calls) {
      if (sent >= RPC_IN_FLIGHT) break;
      if (call.state !== "waiting") continue;
      call.state = "sent";
      call.ref = this.#ref({ kind: "rpc", call });
      call.text = JSON.stringify({ type: "rpc", ref: call.ref, method: call.method, data: call.data });
      call.conn = conn;
      // Bounded once sent too: the edge answers within its --rpc-timeout-ms,
      // but a frame it dropped (too many frames) is never answered.
      clearTimeout(call.timer);
      call.timer = setTimeout(() => this.#endCall(call, (c) => c.reject(new HeraldError(errorFrame(
        "RPC_TIMEOUT", `no answer within ${this.#opts.rpcWaitMs} ms`)))), this.#opts.rpcWaitMs);
      conn.queue.push(call.text);
      sent += 1;
    }
    this.#flush(conn);
  }

  // A call waits for a socket, at most rpcWaitMs each time it has to.
  #wait(call) {
    call.state = "waiting";
    clearTimeout(call.timer);
    call.timer = setTimeout(() => {
      if (call.state !== "waiting") return;
      this.#endCall(call, (c) => c.reject(new HeraldError(errorFrame(
        "NOT_CONNECTED", `no open socket within ${this.#opts.rpcWaitMs} ms; the call was not sent`))));
    }, this.#opts.rpcWaitMs);
  }

  #endCall(call, settle) {
    clearTimeout(call.timer);
    const i = this.#calls.indexOf(call);
    if (i < 0) return;
    this.#calls.splice(i, 1);
    if (call.state === "sent") this.#refs.delete(call.ref);
    call.state = "done";
    settle(call);
    this.#pumpCalls();
  }

  // The socket of `conn` ends: a call still in its send queue never left and
  // waits for the next socket; one that left may have taken effect.
  #dropCalls(conn, frame) {
    const unsent = new Set(conn?.queue ?? []);
    const lost = errorFrame("CONNECTION_LOST", "the socket ended before the answer; the call may have taken effect");
    for (const call of [...this.#calls]) {
      if (frame) {
        this.#endCall(call, (c) => c.reject(new HeraldError(frame)));
      } else if (call.state === "sent" && call.conn === conn) {
        if (unsent.has(call.text)) {
          this.#refs.delete(call.ref);
          this.#wait(call);
        } else {
          this.#endCall(call, (c) => c.reject(new HeraldError(lost)));
        }
      }
    }
  }

  #onError(frame, info) {
    this.#emit("error", frame);
    // A call refused as a frame (too many frames, a bad frame): rejected with it.
    if (info?.kind === "rpc") return this.#endCall(info.call, (c) => c.reject(new HeraldError(frame)));
    if (info?.kind === "unsubscribe") this.#settle("unsubscribe", info.ns, (w) => w.reject(new HeraldError(frame)));
    if (info?.kind !== "subscribe") return; // fatal ones are followed by a close, handled in #onEnd
    const n = this.#settle("subscribe", info.ns, (w) => w.reject(new HeraldError(frame)));
    // A resubscribe after a reconnect that hit a passing problem: keep the
    // namespace and try the whole connection again. Anything else is final.
    if (TRANSIENT.has(frame.code) && n === 0) this.#restart(this.#backoff());
    else this.#forget(info.ns, null);
  }

  // === reconnecting ===

  #onEnd(conn, code) {
    if (conn.gen !== this.#gen) return;
    if (conn.kind === "websocket" && !conn.opened && !this.#wsWorked && ++this.#wsFailures >= 2 && this.#kindIdx + 1 < this.#kinds.length) {
      // Twice refused before the handshake and never worked since connect():
      // something on the way blocks WebSockets. Fall back until the next connect().
      this.#kindIdx += 1;
    }
    if (code === 1012) return this.#restart(0);
    if (code === 4004 && conn.kind === "sse") {
      // Every namespace in the URL was refused; the user channel still works.
      for (const ns of conn.requested) this.#forget(ns, conn.last);
      return this.#restart(0);
    }
    const why = conn.last?.type === "error" ? conn.last : errorFrame("CLOSED", `closed with ${code}`);
    if (FATAL.has(code)) return this.#fail(why);
    if (RETRY_WITH_NEW_TOKEN.has(code)) {
      if (this.#authRetried) return this.#fail(why);
      this.#authRetried = true;
      return this.#restart(0); // #open asks getToken() again
    }
    if (code === 4005) return this.#restart(this.#backoff(CROWDED_FLOOR_STEPS * this.#opts.backoff.initialMs));
    this.#restart(this.#backoff()); // 1006, 1013, 4008, 4029, a dead heartbeat, …
  }

  #ping(conn) {
    // Browsers answer the edge's pings but do not expose them, so liveness is
    // checked with app-level pings: no frame at all since the last one → dead.
    if (conn.pingAt !== undefined && conn.lastFrameAt <= conn.pingAt) return this.#restart(this.#backoff());
    conn.pingAt = Date.now();
    this.#send(conn, { type: "ping", ref: String(this.#nextRef++) });
  }

  #scheduleRefresh(conn, exp) {
    // 30 s before `exp`, or a third of the time left for short-lived tokens (a
    // 5 s token still has 1.5 s for getToken() and the round trip), never in a
    // busy loop.
    const left = exp * 1000 - Date.now();
    const delay = Math.min(MAX_TIMEOUT_MS, Math.max(1000, left - Math.min(30000, left / 3)));
    this.#timer(conn, "refresh", delay, false, async () => {
      if (conn.kind === "sse") return this.#restart(0); // no client frames: a new stream, same cursors
      let token;
      try {
        token = await this.#opts.getToken();
      } catch (err) {
        if (conn.gen !== this.#gen) return;
        this.#emit("error", errorFrame("TOKEN_UNAVAILABLE", `getToken() failed: ${err?.message ?? err}`));
        return this.#scheduleRefresh(conn, exp);
      }
      if (conn.gen === this.#gen) this.#send(conn, { type: "auth", ref: this.#ref({ kind: "auth" }), token });
    });
  }

  #backoff(floorMs = 0) {
    // Full jitter: spreads a crowd of clients that lost the same edge.
    const { initialMs, maxMs } = this.#opts.backoff;
    const cap = Math.min(maxMs, initialMs * 2 ** this.#attempt++);
    const floor = Math.min(maxMs, floorMs);
    return floor + Math.random() * Math.max(0, cap - floor);
  }

  #restart(delayMs) {
    this.#teardown();
    this.#setState(this.#everOpen ? "reconnecting" : "connecting");
    this.#retryTimer = setTimeout(() => this.#open(), delayMs);
  }

  // Fatal: nothing is retried. A server refusal was emitted when it arrived.
  #fail(frame, emit = false) {
    if (emit) this.#emit("error", frame);
    this.#stop(frame);
  }

  #stop(frame) {
    this.#teardown(frame);
    for (const w of this.#waiters.splice(0)) {
      if (w.kind === "subscribe") w.reject(new HeraldError(frame));
      else w.resolve({ type: "unsubscribed", ref: null, channel: `ns:${w.ns}` });
    }
    this.#setState("closed");
  }

  // `frame`: why every pending call is rejected (a stop); without it only
  // the calls sent on this connection end, the others wait for the next.
  #teardown(frame = null) {
    clearTimeout(this.#retryTimer);
    const conn = this.#conn;
    this.#conn = null;
    this.#gen += 1;
    this.#dropCalls(conn, frame);
    this.#refs.clear();
    // Pending unsubscribes are done: the next connection will not join them.
    this.#settle("unsubscribe", null, (w) => w.resolve({ type: "unsubscribed", ref: null, channel: `ns:${w.ns}` }));
    if (!conn) return;
    for (const timer of conn.timers.values()) clearTimeout(timer);
    attempt(() => conn.ws?.close(1000));
    attempt(() => conn.abort?.abort());
  }

  // === helpers ===

  #sendSubscribe(conn, ns, cursors, epoch) {
    const since = cursors.get(`ns:${ns}`);
    const ref = this.#ref({ kind: "subscribe", ns, resumed: since !== undefined });
    const frame = { type: "subscribe", ref, namespace: ns };
    this.#send(conn, since === undefined ? frame : { ...frame, since, epoch });
  }

  #send(conn, frame) {
    conn.queue.push(JSON.stringify(frame));
    this.#flush(conn);
  }

  #flush(conn) {
    if (conn.gen !== this.#gen || conn.ws?.readyState !== OPEN) return;
    const now = Date.now();
    conn.tokens = Math.min(SEND_BURST, conn.tokens + ((now - conn.tokensAt) * SEND_PER_SEC) / 1000);
    conn.tokensAt = now;
    while (conn.queue.length && conn.tokens >= 1) {
      conn.ws.send(conn.queue.shift());
      conn.tokens -= 1;
    }
    if (conn.queue.length && !conn.timers.has("flush")) {
      conn.timers.set("flush", setTimeout(() => { conn.timers.delete("flush"); this.#flush(conn); }, 1000 / SEND_PER_SEC));
    }
  }

  #ref(info) {
    const ref = String(this.#nextRef++);
    this.#refs.set(ref, info);
    return ref;
  }

  #timer(conn, name, ms, repeat, fn) {
    clearTimeout(conn.timers.get(name));
    conn.timers.set(name, repeat ? setInterval(fn, ms) : setTimeout(fn, ms));
  }

  // Settles the waiters of one kind (and namespace, unless null); returns how many.
  #settle(kind, ns, fn) {
    const matched = this.#waiters.filter((w) => w.kind === kind && (ns === null || w.ns === ns));
    this.#waiters = this.#waiters.filter((w) => !matched.includes(w));
    for (const w of matched) fn(w);
    return matched.length;
  }

  // Stops wanting a namespace; its cursor goes too, since the app's state for
  // it goes stale: a later subscribe starts live rather than replaying a gap.
  #forget(ns, frame) {
    const channel = `ns:${ns}`;
    this.#namespaces.delete(ns);
    this.#cursors.delete(channel);
    this.#joined.delete(channel);
    if (frame) this.#settle("subscribe", ns, (w) => w.reject(new HeraldError(frame)));
    this.#save();
  }

  #setState(state) {
    if (state === this.#state) return;
    this.#state = state;
    this.#emit("state", state);
  }

  #emit(name, value) {
    // One failing listener must not stop delivery, nor the cursor after it.
    for (const fn of [...(this.#listeners.get(name) ?? [])]) {
      try { fn(value); } catch (err) { report(err); }
    }
  }

  // Written on every change, not batched: a reload resuming from an older
  // cursor would hand the app events it already has.
  #save() {
    if (!this.#opts.persist) return;
    const saved = { epoch: this.#epoch, user: this.#user, cursors: Object.fromEntries(this.#cursors) };
    attempt(() => globalThis.localStorage.setItem(this.#opts.persist, JSON.stringify(saved)));
  }

  #load() {
    if (!this.#opts.persist) return;
    const saved = attempt(() => JSON.parse(globalThis.localStorage.getItem(this.#opts.persist)));
    if (!saved || typeof saved !== "object" || typeof saved.epoch !== "string") return;
    this.#epoch = saved.epoch;
    this.#user = typeof saved.user === "string" ? saved.user : null;
    for (const [channel, seq] of Object.entries(saved.cursors ?? {})) {
      if (Number.isSafeInteger(seq)) this.#cursors.set(channel, seq);
    }
  }
}

export default Herald;
