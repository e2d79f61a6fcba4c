// Types of the Herald browser client (herald.js) and of the frames it hands
// to the app. The frame types mirror proto-schemas/schemas/frames/, the
// event data types proto-schemas/schemas/events/ and the rpc request types
// proto-schemas/schemas/rpc/; the guide is docs/client.md.

/** `user:<user id>` or `ns:<namespace>`. */
export type Channel = `user:${string}` | `ns:${string}`;

/** Every error code on Herald's wire (proto-schemas/schemas/error.json). */
export type ErrorCode =
  | "MALFORMED_JSON"
  | "MISSING_TOKEN"
  | "INVALID_TOKEN"
  | "EXPIRED_TOKEN"
  | "FORBIDDEN"
  | "PAYLOAD_TOO_LARGE"
  | "UNSUPPORTED_MEDIA_TYPE"
  | "VALIDATION_FAILED"
  | "UNKNOWN_EVENT_TYPE"
  | "NATS_UNAVAILABLE"
  | "FORBIDDEN_NAMESPACE"
  | "SLOW_CONSUMER"
  | "RATE_LIMITED"
  | "MALFORMED_FRAME"
  | "UNKNOWN_FRAME"
  | "TOO_MANY_SUBSCRIPTIONS"
  | "TOO_MANY_CONNECTIONS"
  | "REVOKED"
  | "INTERNAL_ERROR"
  | "UNKNOWN_METHOD"
  | "FORBIDDEN_METHOD"
  | "RPC_UNAVAILABLE"
  | "RPC_TIMEOUT"
  | "RPC_FAILED";

/**
 * Codes the client itself reports, in frames shaped like the edge's `error`:
 * - `TOKEN_UNAVAILABLE`: `getToken()` threw or rejected; the client retries.
 * - `NO_TRANSPORT`: no allowed transport is usable here (fatal).
 * - `NOT_JOINED`: over SSE, the edge did not join a namespace passed to `subscribe()`.
 * - `CANCELLED`: `close()` or `unsubscribe()` ended a pending `subscribe()` (or `close()` a pending `rpc()`).
 * - `CLOSED`: the connection closed for good with no error frame to say why.
 * - `NOT_CONNECTED`: `rpc()` found no open WebSocket within `rpcWaitMs`, or
 *   the client is closed, or connected over SSE (no client frames); the call
 *   was not sent.
 * - `CONNECTION_LOST`: the socket ended after the call was sent and before
 *   its answer; it may have taken effect (it is never sent twice).
 * - `RPC_TIMEOUT` (also an edge code): no answer within `rpcWaitMs` of sending.
 */
export type ClientErrorCode =
  | "TOKEN_UNAVAILABLE"
  | "NO_TRANSPORT"
  | "NOT_JOINED"
  | "CANCELLED"
  | "CLOSED"
  | "NOT_CONNECTED"
  | "CONNECTION_LOST";

// === server frames ===

/** The first frame of every accepted connection. */
export interface Welcome {
  type: "welcome";
  session_id: string;
  user: string;
  node: string;
  /** The notification stream's epoch; a cursor is only valid with it. */
  epoch: string;
  heartbeat_ms: number;
  channels: Channel[];
  /** The token's `exp`, in Unix seconds. */
  token_exp: number;
  /**
   * Per channel, the seq above which live delivery starts. The client takes it
   * as the cursor of a channel it has none for, so a reconnect resumes it.
   */
  seqs?: Record<Channel, number>;
}

/** One notification of a joined channel. */
export interface Event<T extends string = string, D = unknown> {
  type: "event";
  channel: Channel;
  /** The resume cursor of this channel. */
  seq: number;
  /** The publisher's event id (idempotency key); the same on every channel of one event. */
  id: string;
  event_type: T;
  source: string;
  /** RFC 3339. */
  time: string;
  data: D;
}

export interface Subscribed {
  type: "subscribed";
  ref?: string | null;
  channel: Channel;
  /** The channel's latest seq at subscribe time (0 when it has none). */
  seq: number;
}

export interface Unsubscribed {
  type: "unsubscribed";
  ref?: string | null;
  channel: Channel;
  /**
   * Why the edge unsubscribed the connection on its own (no `ref`):
   * `REVOKED` when a service took the namespace from the user.
   */
  code?: ErrorCode | null;
}

export interface Pong {
  type: "pong";
  ref?: string | null;
}

export interface Authenticated {
  type: "authenticated";
  ref?: string | null;
  token_exp: number;
}

/** Non-fatal unless a close follows. */
export interface ErrorFrame {
  type: "error";
  /** Herald's code, the client's own, or (for `rpc()`) a service's: `^[A-Z][A-Z0-9_]{0,63}$`. */
  code: ErrorCode | ClientErrorCode | (string & {});
  message: string;
  ref?: string | null;
  /** The failed rules of `VALIDATION_FAILED`, each with its path (`data.ends_at`). */
  errors?: FieldError[];
}

/** One failed validation rule. */
export interface FieldError {
  path: string;
  message: string;
}

/** Why a call failed: a service's own code (`SLOT_TAKEN`) or an edge-side one. */
export interface RpcError {
  code: ErrorCode | (string & {});
  message: string;
  errors?: FieldError[];
}

/** The answer to one `rpc` frame: `result`, or `error`. */
export type RpcResult =
  | { type: "rpc_result"; ref: string; result: unknown }
  | { type: "rpc_result"; ref: string; error: RpcError };

/**
 * The channel's history cannot be replayed (the cursor is older than the
 * stream holds, or of another epoch): refetch that channel's state. Live
 * delivery goes on. `first_seq` is the oldest seq still stored; it is 0 when
 * the client raised it itself (a channel rejoined without a cursor of its own).
 */
export interface HistoryTruncated {
  type: "history_truncated";
  channel: Channel;
  first_seq: number;
}

/** The node is going away; the client reconnects to any node at once. */
export interface Reconnect {
  type: "reconnect";
  reason: string;
}

/** One present user. */
export interface Member {
  user: string;
  /** The user's connections joined to the namespace, on every edge. */
  connections: number;
}

/** The answer to `presence()`: who is in the namespace now. */
export interface Presence {
  type: "presence";
  ref?: string | null;
  channel: Channel;
  /** Sorted by user; at most the edge's `--presence-max-members`. */
  members: Member[];
  /** More users are present than are listed. */
  truncated: boolean;
}

/** Users who came to or left a namespace subscribed with `presence: true` (batched, about a second late at most). */
export interface PresenceDiff {
  type: "presence_diff";
  channel: Channel;
  joined: string[];
  left: string[];
}

export type ServerFrame =
  | Presence
  | PresenceDiff
  | Welcome
  | Event
  | Subscribed
  | Unsubscribed
  | Pong
  | Authenticated
  | ErrorFrame
  | HistoryTruncated
  | Reconnect
  | RpcResult;

// === registered event types (proto-schemas/schemas/events/) ===

export type CalendarField =
  | "calendar_id"
  | "event_id"
  | "title"
  | "starts_at"
  | "ends_at"
  | "all_day"
  | "location"
  | "attendees";

/** Which event of which calendar. */
export interface CalendarEventRef {
  calendar_id: string;
  event_id: string;
}

export interface CalendarEventData extends CalendarEventRef {
  /** 1–200 characters. */
  title: string;
  /** RFC 3339; before `ends_at`. */
  starts_at: string;
  ends_at: string;
  all_day?: boolean | null;
  /** At most 200 characters. */
  location?: string | null;
  /** User ids. */
  attendees?: string[] | null;
}

export interface CalendarEventUpdatedData extends CalendarEventData {
  /** Non-empty. */
  changes: CalendarField[];
}

export type CalendarEventDeletedData = CalendarEventRef;

export type RsvpResponse = "accepted" | "declined" | "tentative";

export interface CalendarEventRsvpData extends CalendarEventRef {
  user_id: string;
  response: RsvpResponse;
}

/** An event of a registered type; narrow it with `event_type`. */
export type CalendarEvent =
  | Event<"calendar.event.created", CalendarEventData>
  | Event<"calendar.event.updated", CalendarEventUpdatedData>
  | Event<"calendar.event.deleted", CalendarEventDeletedData>
  | Event<"calendar.event.rsvp", CalendarEventRsvpData>;

// === rpc methods (proto-schemas/schemas/rpc/) ===

/** `data` of `calendar.event.create`; the service picks the event id. */
export type CalendarEventCreateRequest = Omit<CalendarEventData, "event_id">;

/** `data` of `calendar.event.update`: at least one field besides the ids. */
export interface CalendarEventUpdateRequest extends CalendarEventRef {
  title?: string | null;
  starts_at?: string | null;
  ends_at?: string | null;
  all_day?: boolean | null;
  location?: string | null;
  attendees?: string[] | null;
}

export type CalendarEventDeleteRequest = CalendarEventRef;

/** The caller answers for themself: the service takes the user from the token. */
export interface CalendarEventRsvpRequest extends CalendarEventRef {
  response: RsvpResponse;
}

/** `from` < `to`, RFC 3339, at most 92 days apart. */
export interface CalendarEventListRequest {
  calendar_id: string;
  from: string;
  to: string;
}

/**
 * Every registered method: its request `data`, and what its service
 * answers. Results are the service's contract; augment this interface
 * (declaration merging) to type them.
 */
export interface RpcMethods {
  "calendar.event.create": { request: CalendarEventCreateRequest; result: unknown };
  "calendar.event.update": { request: CalendarEventUpdateRequest; result: unknown };
  "calendar.event.delete": { request: CalendarEventDeleteRequest; result: unknown };
  "calendar.event.rsvp": { request: CalendarEventRsvpRequest; result: unknown };
  "calendar.event.list": { request: CalendarEventListRequest; result: unknown };
}

export type RpcMethod = keyof RpcMethods;

// === the client ===

export type State = "connecting" | "open" | "reconnecting" | "closed";
export type Transport = "websocket" | "sse";

export interface HeraldOptions {
  /** WebSocket endpoint. Default: the page's host, path `/v1/ws` (`wss:` on https). */
  url?: string;
  /** SSE endpoint. Default: `url` with `ws`→`http` and `/v1/ws`→`/v1/sse`. */
  sseUrl?: string;
  /** Called before every (re)connect and before `token_exp`; must return a fresh user JWT. */
  getToken: () => string | Promise<string>;
  /** Joined on every (re)connect. */
  namespaces?: string[];
  /** localStorage key for cursors and epoch; `false`/absent keeps them in memory only. */
  persist?: string | false;
  /**
   * Full jitter: delay = random(0, min(maxMs, initialMs × 2^attempt)). Default 500 / 30000.
   * After `TOO_MANY_CONNECTIONS` (close 4005) each delay is at least min(maxMs, 8 × initialMs).
   */
  backoff?: { initialMs?: number; maxMs?: number };
  /** In order of preference. Default `["websocket", "sse"]`. */
  transports?: Transport[];
  /**
   * How long an `rpc()` call may wait for an open WebSocket before it is sent
   * (then NOT_CONNECTED), and for its answer once sent (then RPC_TIMEOUT).
   * Default 10000; keep it above the edge's `--rpc-timeout-ms` (5000).
   */
  rpcWaitMs?: number;
  /** Joined on every (re)connect with `presence: true`: their `presence_diff` frames are emitted as `presence`. */
  presence?: string[];
  /** Shorthand for `on("presence", fn)`. */
  onPresence?: (diff: PresenceDiff) => void;
}

export interface HeraldEvents {
  /** Once per (channel, seq), in seq order per channel. */
  event: Event | CalendarEvent;
  state: State;
  truncated: HistoryTruncated;
  /**
   * Non-fatal error frames, and fatal refusals (then `state` becomes "closed"):
   * `MISSING_TOKEN`, `FORBIDDEN_NAMESPACE`, `REVOKED` (no reconnect, not even
   * with a fresh token: the app decides, e.g. signs the user out), and
   * `INVALID_TOKEN`/`EXPIRED_TOKEN` once a fresh token failed too.
   */
  error: ErrorFrame;
  /** The edge left a namespace on its own (no `ref`): a refreshed token no longer allows it, or `code: "REVOKED"`. */
  unsubscribed: Unsubscribed;
  welcome: Welcome;
  /** Who came and went in a namespace subscribed with `presence: true`. */
  presence: PresenceDiff;
}

/** A rejected `subscribe()`, `unsubscribe()` or `rpc()`. */
export class HeraldError extends Error {
  readonly name: "HeraldError";
  /** Herald's, the client's, or a service's own code (for `rpc()`). */
  readonly code: ErrorCode | ClientErrorCode | (string & {});
  /** The failed rules of `VALIDATION_FAILED` (empty otherwise). */
  readonly errors: FieldError[];
  readonly frame: ErrorFrame;
  constructor(frame: ErrorFrame);
}

export class Herald {
  constructor(options: HeraldOptions);
  on<K extends keyof HeraldEvents>(name: K, fn: (value: HeraldEvents[K]) => void): this;
  off<K extends keyof HeraldEvents>(name: K, fn: (value: HeraldEvents[K]) => void): this;
  /** Opens the connection; a no-op unless `state` is "closed". */
  connect(): void;
  /** Closes for good (until the next `connect()`); pending `subscribe()` and `rpc()` calls reject with `CANCELLED`. */
  close(): void;
  /** Joins a namespace now and on every reconnect; resolves on `subscribed`, rejects on an `error` with its ref. */
  subscribe(namespace: string, options?: { presence?: boolean }): Promise<Subscribed>;
  /**
   * Who is in a namespace now (the token's `presence` claim must allow it);
   * rejects with `FORBIDDEN_NAMESPACE` without it. WebSocket only.
   */
  presence(namespace: string): Promise<Presence>;
  /** Leaves a namespace and forgets its cursor; resolves on `unsubscribed`. */
  unsubscribe(namespace: string): Promise<Unsubscribed>;
  /**
   * Calls a registered method over the WebSocket (the token's `rpc` claim must
   * allow it). Resolves with the service's result; rejects with a HeraldError
   * whose `code` is the service's (`SLOT_TAKEN`), the edge's (`FORBIDDEN_METHOD`,
   * `VALIDATION_FAILED` with `errors`, `RPC_TIMEOUT`, …) or the client's
   * (`NOT_CONNECTED`, `CONNECTION_LOST`, `CANCELLED`). While (re)connecting
   * the call waits for the socket, at most `rpcWaitMs`; at most 8 are in
   * flight at once, more wait their turn.
   */
  rpc<M extends RpcMethod>(method: M, data: RpcMethods[M]["request"]): Promise<RpcMethods[M]["result"]>;
  readonly state: State;
  /** A read-only snapshot: the last seq handed to the app, per channel. */
  readonly cursors: Readonly<Record<Channel, number>>;
  readonly transport: Transport | null;
}

export default Herald;
