// The shapes the client and generated code share: methods, headers, metadata, options.

import type { DescMessage, MessageShape } from "@bufbuild/protobuf";
import type { ReconnectOptions } from "./backoff.js";

/** String headers carried by a frame (e.g. W3C `traceparent`). Keys are case-sensitive. */
export type Headers = Record<string, string>;

/** One RPC of a service, as generated code describes it. */
export interface MethodDesc<I extends DescMessage = DescMessage, O extends DescMessage = DescMessage> {
  /** What the wire calls it: `package.Service/Method`. */
  readonly name: string;
  readonly input: I;
  readonly output: O;
  /** A one-way method: sent as `MESSAGE`, never answered. */
  readonly oneWay: boolean;
}

/** What arrived with a message, a request or a reply. */
export interface Metadata {
  /** The payload's full protobuf name. */
  readonly type: string;
  /** The method called (`package.Service/Method`); empty when routed by type. */
  readonly method: string;
  /** The topic a published message came on; empty otherwise. */
  readonly topic: string;
  readonly headers: Headers;
  /** The request id (0 for one-way messages). */
  readonly id: bigint;
  /** The sender's clock when it sent the frame, µs since the Unix epoch (0 = unknown). */
  readonly createdUnixUs: bigint;
  /** A published message's place in its topic's history, when the server keeps one (PROTOCOL.md, History and recovery). */
  readonly position?: Position;
}

/** A place in a topic's history: the history's epoch and a message's offset in it. */
export interface Position {
  readonly epoch: string;
  readonly offset: bigint;
}

/** What {@link Client.subscribeFrom} found: everything missed was replayed, it could not be, or the topic has no history. */
export type Recovery = "recovered" | "unrecoverable" | "no-history";

/** A reply with what came with it. */
export interface Reply<O extends DescMessage> {
  readonly message: MessageShape<O>;
  readonly headers: Headers;
  readonly metadata: Metadata;
}

/** What a handler gets besides its message. */
export interface HandlerContext {
  readonly metadata: Metadata;
  /** Aborted when the sender cancels the request, its deadline passes, or the connection ends. */
  readonly signal: AbortSignal;
  /** Headers to send with the reply (requests only). */
  readonly replyHeaders: Headers;
}

/** Options for one call. */
export interface CallOptions {
  /** Give up after this many ms (default: the client's `requestTimeoutMs`, 30 s). The server learns the deadline too. */
  timeoutMs?: number;
  /** Give up when this aborts; the server is sent a CANCEL. */
  signal?: AbortSignal;
  headers?: Headers;
  /** While disconnected: wait for the connection until the deadline (`"wait"`) or fail at once with UNAVAILABLE (`"fail"`). Default: the client's setting. */
  whileDisconnected?: "wait" | "fail";
}

/** Options for a one-way send, broadcast or publish. */
export interface SendOptions {
  headers?: Headers;
  /** While disconnected: wait for the connection (`"wait"`, up to `timeoutMs`) or fail at once (`"fail"`). */
  whileDisconnected?: "wait" | "fail";
  /** How long to wait for a connection when disconnected, in ms (default: the client's `requestTimeoutMs`). */
  timeoutMs?: number;
}

/** The client's lifecycle. */
export type ConnectionState = "connecting" | "open" | "reconnecting" | "closed";

/** The WebSocket constructor to use: the global one in browsers and Node ≥ 22, or `ws`'s. */
export type WebSocketLike = new (url: string, protocols?: string | string[]) => WebSocket;

/** How a client connects and behaves. */
export interface ClientOptions {
  /** The server's endpoint, e.g. `ws://localhost:8080/ws`. */
  url: string;
  /** Extra query parameters, e.g. `{ token: "..." }` (browsers cannot set headers). */
  query?: Record<string, string>;
  /** Extra subprotocols to offer after `goomerang.v1`, e.g. a token (`token.abc`). */
  subprotocols?: string[];
  /** Reconnect with backoff and jitter after the connection is lost, then renew subscriptions (default on). `false` turns it off. */
  reconnect?: ReconnectOptions | false;
  /** What calls do while disconnected: wait for the connection until their deadline (default), or fail at once. */
  whileDisconnected?: "wait" | "fail";
  /** The default deadline of requests, in ms (default 30000). */
  requestTimeoutMs?: number;
  /**
   * Liveness probing, for half-open connections: after `intervalMs` of silence
   * the client sends an acknowledged probe and drops the connection if nothing
   * arrives within `timeoutMs` (defaults 20000 and 20000). Browsers answer the
   * server's pings themselves; the probe is an acknowledged UNSUBSCRIBE of a
   * topic never subscribed (PROTOCOL.md §3, Keepalive). `false` turns it off.
   */
  keepalive?: { intervalMs?: number; timeoutMs?: number } | false;
  /** The WebSocket implementation (default: `globalThis.WebSocket`; pass `ws`'s on Node < 22). */
  WebSocket?: WebSocketLike;
  /** A session key saved from an earlier run ({@link Client.sessionKey}), presented when connecting so the server resumes that session. */
  sessionKey?: string;
}
