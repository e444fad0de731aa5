// The goomerang client: one WebSocket, every pattern of PROTOCOL.md v1, reconnection and resubscription.

import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import type { DescMessage, MessageInitShape, MessageShape } from "@bufbuild/protobuf";

import { backoffDelay } from "./backoff.js";
import type { ReconnectOptions } from "./backoff.js";
import { FrameKind, FrameSchema, PositionSchema, SessionSchema } from "./gen/goomerang/v1/frame_pb.js";
import type { Frame } from "./gen/goomerang/v1/frame_pb.js";
import { Code, GoomerangError, toCode } from "./status.js";
import type {
  CallOptions,
  ClientOptions,
  ConnectionState,
  HandlerContext,
  Headers,
  Metadata,
  MethodDesc,
  Position,
  Recovery,
  Reply,
  SendOptions,
  WebSocketLike,
} from "./types.js";

/** The subprotocol of goomerang's wire protocol, version 1. */
export const SUBPROTOCOL = "goomerang.v1";

/** The topic the liveness probe unsubscribes from; nothing ever subscribes to it. */
const PROBE_TOPIC = "goomerang.keepalive.probe";

type RequestHandler = (message: any, ctx: HandlerContext) => unknown;

interface Route {
  input: DescMessage;
  /** The reply's schema; none for one-way handlers. */
  output: DescMessage | undefined;
  handler: RequestHandler;
  oneWay: boolean;
}

interface Pending {
  output: DescMessage | undefined;
  resolve: (frame: Frame) => void;
  reject: (err: GoomerangError) => void;
}

interface Subscription {
  pattern: string;
  group: string;
}

type Listener<T> = (value: T) => void;

/**
 * A goomerang client. Construct it, register handlers for what the server
 * sends, then `await client.connect()`.
 *
 * ```ts
 * const client = new Client({ url: "ws://localhost:8080/ws" });
 * await client.connect();
 * const reply = await client.request(Greeter.methods.sayHello, { name: "ada" });
 * ```
 */
export class Client {
  private readonly options: ClientOptions;
  private readonly WebSocketImpl: WebSocketLike;
  private ws: WebSocket | undefined;
  private currentState: ConnectionState = "closed";
  private closedByUser = true;
  private nextId = 1n;
  private readonly pending = new Map<bigint, Pending>();
  private readonly byMethod = new Map<string, Route>();
  private readonly byType = new Map<string, Route>();
  private readonly running = new Map<bigint, AbortController>();
  private readonly subscriptions = new Map<string, Subscription>();
  private readonly stateListeners = new Set<Listener<ConnectionState>>();
  private readonly errorListeners = new Set<Listener<GoomerangError>>();
  private readonly unrecoverableListeners = new Set<Listener<string>>();
  /** The last position received on each topic with history. */
  private readonly positions = new Map<string, Position>();
  /** The session key the server gave (PROTOCOL.md, Sessions). */
  private session: string | undefined;
  /** Calls waiting for a connection: resolved when one opens, rejected when the client closes. */
  private readonly waiters = new Set<{ resolve: () => void; reject: (err: GoomerangError) => void }>();
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  private keepaliveTimer: ReturnType<typeof setTimeout> | undefined;
  private lastSeen = 0;
  private attempt = 0;

  constructor(options: ClientOptions) {
    this.options = options;
    const impl = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketLike }).WebSocket;
    if (impl === undefined) {
      throw new TypeError(
        "no global WebSocket: pass the `ws` package's WebSocket as the `WebSocket` option (Node < 22)",
      );
    }
    this.WebSocketImpl = impl;
    this.session = options.sessionKey;
  }

  /** The session key the server gave this client, presented whenever it reconnects; undefined without one. */
  get sessionKey(): string | undefined {
    return this.session;
  }

  /** The last position received on `topic` (a topic with history), as the client would recover from it. */
  position(topic: string): Position | undefined {
    return this.positions.get(topic);
  }

  /**
   * Calls `listener` with a topic whose messages, missed while disconnected,
   * the server could no longer replay when the subscription was renewed: fetch
   * the state they describe again. Returns a function that removes it.
   */
  onUnrecoverable(listener: Listener<string>): () => void {
    this.unrecoverableListeners.add(listener);
    return () => this.unrecoverableListeners.delete(listener);
  }

  /** The lifecycle state. */
  get state(): ConnectionState {
    return this.currentState;
  }

  /** Calls `listener` on every state change; returns a function that removes it. */
  onState(listener: Listener<ConnectionState>): () => void {
    this.stateListeners.add(listener);
    return () => this.stateListeners.delete(listener);
  }

  /**
   * Calls `listener` for what goes wrong away from any call: the server could
   * not handle a one-way message (`ERROR` id 0), a renewed subscription was
   * refused, a reconnection attempt failed, a handler threw on a one-way message.
   */
  onError(listener: Listener<GoomerangError>): () => void {
    this.errorListeners.add(listener);
    return () => this.errorListeners.delete(listener);
  }

  /**
   * Connects; resolves once the connection is open. Rejects with UNAVAILABLE
   * if the first attempt fails (reconnection covers later losses only).
   */
  connect(): Promise<void> {
    if (this.currentState === "open") return Promise.resolve();
    this.closedByUser = false;
    this.attempt = 0;
    return this.open();
  }

  /** Closes the connection (code 1000 unless given) and stops reconnecting; waiting calls fail with UNAVAILABLE. */
  close(code = 1000, reason = "normal closure"): void {
    this.closedByUser = true;
    clearTimeout(this.reconnectTimer);
    this.stopKeepalive();
    const ws = this.ws;
    this.ws = undefined;
    if (ws !== undefined && ws.readyState <= 1) ws.close(code, reason);
    this.ended(new GoomerangError(Code.UNAVAILABLE, "the client was closed"));
    this.setState("closed");
  }

  // ---- handlers for what the server sends ------------------------------------

  /** Handles requests (or one-way messages, for a one-way method) to `method`. */
  handle<I extends DescMessage, O extends DescMessage>(
    method: MethodDesc<I, O>,
    handler: (message: MessageShape<I>, ctx: HandlerContext) => MessageInitShape<O> | Promise<MessageInitShape<O>>,
  ): this;
  handle<I extends DescMessage>(
    method: MethodDesc<I, DescMessage>,
    handler: (message: MessageShape<I>, ctx: HandlerContext) => void | Promise<void>,
  ): this;
  handle(method: MethodDesc, handler: RequestHandler): this {
    if (this.byMethod.has(method.name)) throw new TypeError(`a handler for ${method.name} is already registered`);
    const wrapped: RequestHandler = method.oneWay
      ? handler
      : async (message, ctx) => create(method.output, (await handler(message, ctx)) as MessageInitShape<DescMessage>);
    this.byMethod.set(method.name, {
      input: method.input,
      output: method.oneWay ? undefined : method.output,
      handler: wrapped,
      oneWay: method.oneWay,
    });
    return this;
  }

  /** Handles one-way messages of type `schema` sent without a method: broadcasts, published messages, untyped sends. */
  onMessage<I extends DescMessage>(
    schema: I,
    handler: (message: MessageShape<I>, ctx: HandlerContext) => void | Promise<void>,
  ): this {
    if (this.byType.has(schema.typeName)) throw new TypeError(`a handler for ${schema.typeName} is already registered`);
    this.byType.set(schema.typeName, { input: schema, output: undefined, handler, oneWay: true });
    return this;
  }

  /** Handles requests of type `input` sent without a method (the untyped API), answering with `output`. */
  onRequest<I extends DescMessage, O extends DescMessage>(
    input: I,
    output: O,
    handler: (message: MessageShape<I>, ctx: HandlerContext) => MessageInitShape<O> | Promise<MessageInitShape<O>>,
  ): this {
    if (this.byType.has(input.typeName)) throw new TypeError(`a handler for ${input.typeName} is already registered`);
    const wrapped: RequestHandler = async (message, ctx) =>
      create(output as DescMessage, (await handler(message, ctx)) as MessageInitShape<DescMessage>);
    this.byType.set(input.typeName, { input, output, handler: wrapped, oneWay: false });
    return this;
  }

  // ---- calls ---------------------------------------------------------------------

  /** Calls `method` and resolves with its reply. Rejects with a GoomerangError carrying the status code. */
  async request<I extends DescMessage, O extends DescMessage>(
    method: MethodDesc<I, O>,
    input: MessageInitShape<I>,
    options?: CallOptions,
  ): Promise<MessageShape<O>> {
    return (await this.call(method, input, options)).message;
  }

  /** As {@link request}, with the reply's headers and metadata. */
  call<I extends DescMessage, O extends DescMessage>(
    method: MethodDesc<I, O>,
    input: MessageInitShape<I>,
    options?: CallOptions,
  ): Promise<Reply<O>> {
    return this.exchange(method.name, method.input, input, method.output, options);
  }

  /** A request routed by the payload's type (no method), for handlers registered by type. */
  requestByType<I extends DescMessage, O extends DescMessage>(
    input: I,
    message: MessageInitShape<I>,
    output: O,
    options?: CallOptions,
  ): Promise<Reply<O>> {
    return this.exchange("", input, message, output, options);
  }

  /** Sends a one-way message to `method`. Resolves once it is handed to the socket. */
  send<I extends DescMessage>(method: MethodDesc<I, DescMessage>, input: MessageInitShape<I>, options?: SendOptions): Promise<void> {
    return this.oneWay({ kind: FrameKind.MESSAGE, method: method.name }, method.input, input, options);
  }

  /** Sends a one-way message routed by its type. */
  sendByType<I extends DescMessage>(schema: I, message: MessageInitShape<I>, options?: SendOptions): Promise<void> {
    return this.oneWay({ kind: FrameKind.MESSAGE }, schema, message, options);
  }

  /** Asks the server to deliver a message to every connection, this one included. */
  broadcast<I extends DescMessage>(schema: I, message: MessageInitShape<I>, options?: SendOptions): Promise<void> {
    return this.oneWay({ kind: FrameKind.BROADCAST }, schema, message, options);
  }

  /** Publishes a message on `topic`; subscribers get it as a one-way message with the topic set. */
  publish<I extends DescMessage>(topic: string, schema: I, message: MessageInitShape<I>, options?: SendOptions): Promise<void> {
    return this.oneWay({ kind: FrameKind.PUBLISH, topic }, schema, message, options);
  }

  /**
   * Subscribes to `pattern` (`*` one token, `>` the rest), in queue group
   * `group` if given. Resolves when the server acknowledges; the subscription
   * is renewed after every reconnection. Messages arrive at the handlers for
   * their type ({@link onMessage}), with `ctx.metadata.topic` set.
   */
  async subscribe(pattern: string, options?: { group?: string } & CallOptions): Promise<void> {
    const group = options?.group ?? "";
    const reply = await this.control(FrameKind.SUBSCRIBE, pattern, group, options);
    const now = positionOf(reply);
    // Recover from here if the connection drops before a message comes.
    if (now !== undefined && now.epoch !== "" && group === "") {
      this.positions.set(pattern, { epoch: now.epoch, offset: now.offset });
    }
    this.subscriptions.set(`${group}\u0000${pattern}`, { pattern, group });
  }

  /**
   * Subscribes to `topic` (no wildcards) from `from`, a position reached
   * earlier (`ctx.metadata.position`): the server first sends what was
   * published after it, if its history still holds all of it.
   */
  async subscribeFrom(topic: string, from: Position, options?: CallOptions): Promise<Recovery> {
    const reply = await this.control(FrameKind.SUBSCRIBE, topic, "", options, from);
    this.subscriptions.set(`\u0000${topic}`, { pattern: topic, group: "" });
    const now = positionOf(reply);
    if (now === undefined) return "no-history";
    if (now.epoch !== "") this.positions.set(topic, { epoch: now.epoch, offset: now.offset });
    return now.recovered ? "recovered" : "unrecoverable";
  }

  /** Undoes a {@link subscribe} with the same pattern and group. */
  async unsubscribe(pattern: string, options?: { group?: string } & CallOptions): Promise<void> {
    const group = options?.group ?? "";
    this.subscriptions.delete(`${group}\u0000${pattern}`);
    if (group === "") this.positions.delete(pattern);
    await this.control(FrameKind.UNSUBSCRIBE, pattern, group, options);
  }

  // ---- the connection ---------------------------------------------------------------

  private url(): string {
    const query = this.options.query;
    const session = this.session;
    if ((query === undefined || Object.keys(query).length === 0) && session === undefined) return this.options.url;
    const url = new URL(this.options.url);
    for (const [key, value] of Object.entries(query ?? {})) url.searchParams.set(key, value);
    // The session to resume: browsers cannot set the header (PROTOCOL.md, Sessions).
    if (session !== undefined) url.searchParams.set("goomerang_session", session);
    return url.toString();
  }

  private open(): Promise<void> {
    this.setState(this.attempt === 0 && this.currentState !== "reconnecting" ? "connecting" : "reconnecting");
    return new Promise<void>((resolve, reject) => {
      let ws: WebSocket;
      try {
        ws = new this.WebSocketImpl(this.url(), [SUBPROTOCOL, ...(this.options.subprotocols ?? [])]);
      } catch (err) {
        reject(new GoomerangError(Code.UNAVAILABLE, `could not connect: ${String(err)}`, { cause: err }));
        return;
      }
      ws.binaryType = "arraybuffer";
      this.ws = ws;
      let opened = false;
      ws.onopen = () => {
        if (this.ws !== ws) return;
        if (ws.protocol !== SUBPROTOCOL && ws.protocol !== "") {
          ws.close(1002, `the server selected ${ws.protocol}, not ${SUBPROTOCOL}`);
          return;
        }
        opened = true;
        this.attempt = 0;
        this.lastSeen = Date.now();
        this.setState("open");
        this.startKeepalive();
        this.renewSubscriptions();
        for (const waiter of [...this.waiters]) waiter.resolve();
        resolve();
      };
      ws.onmessage = (event: MessageEvent) => {
        if (this.ws !== ws) return;
        this.lastSeen = Date.now();
        if (typeof event.data === "string") {
          ws.close(1003, "text messages are not goomerang frames");
          return;
        }
        this.receive(new Uint8Array(event.data as ArrayBuffer));
      };
      ws.onclose = (event: CloseEvent) => {
        if (this.ws !== ws) return;
        this.ws = undefined;
        this.stopKeepalive();
        const why = `connection closed (${event.code}${event.reason ? `: ${event.reason}` : ""})`;
        this.failInFlight(new GoomerangError(Code.UNAVAILABLE, why));
        if (!opened) {
          const err = new GoomerangError(Code.UNAVAILABLE, `could not connect to ${this.options.url} (${event.code})`);
          if (this.attempt === 0 && this.currentState === "connecting") {
            this.setState("closed");
            this.closedByUser = true;
            this.ended(err);
            reject(err);
            return;
          }
          this.emitError(err);
        }
        this.scheduleReconnect();
        if (opened) resolve();
      };
      ws.onerror = () => {
        // The close event follows with the code; nothing to do here.
      };
    });
  }

  private scheduleReconnect(): void {
    const reconnect = this.options.reconnect;
    if (this.closedByUser || reconnect === false) {
      this.ended(new GoomerangError(Code.UNAVAILABLE, "the connection is closed"));
      this.setState("closed");
      return;
    }
    const options: ReconnectOptions = reconnect ?? {};
    if (options.maxAttempts !== undefined && this.attempt >= options.maxAttempts) {
      this.closedByUser = true;
      this.ended(new GoomerangError(Code.UNAVAILABLE, `gave up reconnecting after ${this.attempt} attempts`));
      this.setState("closed");
      return;
    }
    this.setState("reconnecting");
    const delay = backoffDelay(options, this.attempt);
    this.attempt += 1;
    this.reconnectTimer = setTimeout(() => {
      if (this.closedByUser) return;
      this.open().catch(() => {
        // Reported through onError; the next attempt is scheduled by the close handler.
      });
    }, delay);
  }

  private renewSubscriptions(): void {
    for (const sub of this.subscriptions.values()) {
      const from = sub.group === "" ? this.positions.get(sub.pattern) : undefined;
      this.control(FrameKind.SUBSCRIBE, sub.pattern, sub.group, undefined, from).then((reply) => {
        const now = positionOf(reply);
        if (now === undefined) return;
        if (from !== undefined && !now.recovered) {
          for (const listener of this.unrecoverableListeners) listener(sub.pattern);
        }
        if (now.epoch !== "") this.positions.set(sub.pattern, { epoch: now.epoch, offset: now.offset });
      }).catch((err: unknown) => {
        this.emitError(
          new GoomerangError(
            GoomerangError.from(err).code,
            `could not renew the subscription to ${JSON.stringify(sub.pattern)} after reconnecting: ${GoomerangError.from(err).rawMessage}`,
          ),
        );
      });
    }
  }

  private startKeepalive(): void {
    const keepalive = this.options.keepalive;
    if (keepalive === false) return;
    const interval = keepalive?.intervalMs ?? 20000;
    const timeout = keepalive?.timeoutMs ?? 20000;
    const check = () => {
      const ws = this.ws;
      if (ws === undefined) return;
      const silent = Date.now() - this.lastSeen;
      if (silent >= interval + timeout) {
        ws.close(4000, "keepalive timeout: the server stopped answering");
        // A dead peer may never finish the close handshake: treat it as lost now.
        ws.onclose?.({ code: 1006, reason: "keepalive timeout" } as CloseEvent);
        return;
      }
      if (silent >= interval) {
        // An acknowledged frame: the answer is traffic, which is all we need.
        this.control(FrameKind.UNSUBSCRIBE, PROBE_TOPIC, "", { timeoutMs: timeout }).catch(() => {});
        this.keepaliveTimer = setTimeout(check, timeout);
      } else {
        this.keepaliveTimer = setTimeout(check, interval - silent);
      }
    };
    this.keepaliveTimer = setTimeout(check, interval);
  }

  private stopKeepalive(): void {
    clearTimeout(this.keepaliveTimer);
    this.keepaliveTimer = undefined;
  }

  private setState(state: ConnectionState): void {
    if (this.currentState === state) return;
    this.currentState = state;
    for (const listener of [...this.stateListeners]) listener(state);
  }

  private emitError(err: GoomerangError): void {
    for (const listener of [...this.errorListeners]) listener(err);
  }

  /** The connection ended for good: calls waiting for one fail. */
  private ended(err: GoomerangError): void {
    for (const waiter of [...this.waiters]) waiter.reject(err);
    this.failInFlight(err);
  }

  /** Everything in flight on the lost connection fails; handlers it started are cancelled. */
  private failInFlight(err: GoomerangError): void {
    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const p of pending) p.reject(err);
    for (const controller of this.running.values()) controller.abort(err);
    this.running.clear();
  }

  /** Resolves when connected: at once, or after waiting up to `deadline` (ms since epoch), or fails. */
  private async connected(whileDisconnected: "wait" | "fail" | undefined, deadline: number, signal?: AbortSignal): Promise<WebSocket> {
    const ws = this.ws;
    if (ws !== undefined && this.currentState === "open" && ws.readyState === 1) return ws;
    const mode = whileDisconnected ?? this.options.whileDisconnected ?? "wait";
    if (mode === "fail" || this.closedByUser) {
      throw new GoomerangError(Code.UNAVAILABLE, this.closedByUser ? "not connected (call connect first)" : "not connected");
    }
    await new Promise<void>((resolve, reject) => {
      const waiter = {
        resolve: () => finish(() => resolve()),
        reject: (err: GoomerangError) => finish(() => reject(err)),
      };
      const onAbort = () => waiter.reject(new GoomerangError(Code.CANCELLED, "the caller gave up while waiting for a connection"));
      const timer = setTimeout(
        () => waiter.reject(new GoomerangError(Code.DEADLINE_EXCEEDED, "no connection within the deadline")),
        Math.max(0, deadline - Date.now()),
      );
      const finish = (then: () => void) => {
        this.waiters.delete(waiter);
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
        then();
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.waiters.add(waiter);
    });
    const now = this.ws;
    if (now === undefined || now.readyState !== 1) throw new GoomerangError(Code.UNAVAILABLE, "not connected");
    return now;
  }

  private write(ws: WebSocket, frame: MessageInitShape<typeof FrameSchema>): void {
    ws.send(toBinary(FrameSchema, create(FrameSchema, frame)));
  }

  private async oneWay<I extends DescMessage>(
    head: { kind: FrameKind; method?: string; topic?: string },
    schema: I,
    message: MessageInitShape<I>,
    options?: SendOptions,
  ): Promise<void> {
    const payload = toBinary(schema, create(schema, message));
    const deadline = Date.now() + (options?.timeoutMs ?? this.options.requestTimeoutMs ?? 30000);
    const ws = await this.connected(options?.whileDisconnected, deadline);
    this.write(ws, {
      ...head,
      type: schema.typeName,
      payload,
      headers: options?.headers ?? {},
      createdUnixUs: BigInt(Date.now()) * 1000n,
    });
  }

  private async control(
    kind: FrameKind,
    topic: string,
    group: string,
    options?: CallOptions,
    from?: Position,
  ): Promise<Frame> {
    return this.roundTrip(
      { kind, topic, queueGroup: group, offset: from?.offset ?? 0n, epoch: from?.epoch ?? "" },
      undefined,
      options,
    );
  }

  private async exchange<O extends DescMessage>(
    method: string,
    input: DescMessage,
    message: unknown,
    output: O,
    options?: CallOptions,
  ): Promise<Reply<O>> {
    const payload = toBinary(input, create(input, message as MessageInitShape<DescMessage>));
    const frame = await this.roundTrip(
      { kind: FrameKind.REQUEST, method, type: input.typeName, payload, headers: options?.headers ?? {} },
      output,
      options,
    );
    let reply: MessageShape<O>;
    try {
      reply = fromBinary(output, frame.payload);
    } catch (err) {
      throw new GoomerangError(Code.INTERNAL, `the reply does not decode as ${output.typeName}: ${String(err)}`, { cause: err });
    }
    return { message: reply, headers: { ...frame.headers }, metadata: metadataOf(frame) };
  }

  /** Sends a frame with a fresh id and waits for its REPLY or ERROR, sending CANCEL if the caller gives up. */
  private async roundTrip(
    head: MessageInitShape<typeof FrameSchema>,
    output: DescMessage | undefined,
    options?: CallOptions,
  ): Promise<Frame> {
    const timeout = options?.timeoutMs ?? this.options.requestTimeoutMs ?? 30000;
    const signal = options?.signal;
    if (signal?.aborted) throw new GoomerangError(Code.CANCELLED, "the caller gave up before sending");
    const deadline = Date.now() + timeout;
    const ws = await this.connected(options?.whileDisconnected, deadline, signal);
    const id = this.nextId;
    this.nextId += 1n;
    const left = Math.max(1, deadline - Date.now());
    return new Promise<Frame>((resolve, reject) => {
      const giveUp = (err: GoomerangError) => {
        if (!this.pending.delete(id)) return;
        cleanup();
        if (this.ws === ws && ws.readyState === 1) this.write(ws, { kind: FrameKind.CANCEL, id });
        reject(err);
      };
      const onAbort = () => giveUp(new GoomerangError(Code.CANCELLED, "the caller gave up"));
      const timer = setTimeout(
        () => giveUp(new GoomerangError(Code.DEADLINE_EXCEEDED, `no reply to request ${id} within ${timeout}ms`)),
        left,
      );
      const cleanup = () => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.pending.set(id, {
        output,
        resolve: (frame) => {
          cleanup();
          resolve(frame);
        },
        reject: (err) => {
          cleanup();
          reject(err);
        },
      });
      this.write(ws, {
        ...head,
        id,
        timeoutMs: head.kind === FrameKind.REQUEST ? Math.min(left, 0xffffffff) : 0,
        createdUnixUs: BigInt(Date.now()) * 1000n,
      });
    });
  }

  // ---- incoming frames ------------------------------------------------------------

  private receive(bytes: Uint8Array): void {
    let frame: Frame;
    try {
      frame = fromBinary(FrameSchema, bytes);
    } catch {
      this.ws?.close(1007, "undecodable frame");
      return;
    }
    switch (frame.kind) {
      case FrameKind.REPLY:
      case FrameKind.ERROR:
        this.answer(frame);
        return;
      case FrameKind.MESSAGE:
        if (frame.id !== 0n) {
          this.ws?.close(1002, "MESSAGE frame with a nonzero id");
          return;
        }
        if (frame.type === SessionSchema.typeName && frame.method === "") {
          // The server gives (or takes back) the session key: the client's own business.
          try {
            const key = fromBinary(SessionSchema, frame.payload).key;
            this.session = key === "" ? undefined : key;
          } catch {
            // An undecodable Session changes nothing.
          }
          return;
        }
        if (frame.topic !== "" && frame.offset > 0n) {
          this.positions.set(frame.topic, { epoch: frame.epoch, offset: frame.offset });
        }
        void this.dispatch(frame, false);
        return;
      case FrameKind.REQUEST:
        if (frame.id === 0n) {
          this.ws?.close(1002, "REQUEST frame with id 0");
          return;
        }
        if (this.running.has(frame.id)) {
          this.ws?.close(1002, `REQUEST reuses id ${frame.id}, which is in flight`);
          return;
        }
        void this.dispatch(frame, true);
        return;
      case FrameKind.CANCEL:
        this.running.get(frame.id)?.abort(new GoomerangError(Code.CANCELLED, "the server cancelled the request"));
        this.running.delete(frame.id);
        return;
      default:
        this.ws?.close(1002, `frame kind ${frame.kind} may not be sent to a client`);
    }
  }

  private answer(frame: Frame): void {
    if (frame.kind === FrameKind.ERROR && frame.id === 0n) {
      const what = frame.method || frame.type || "a frame";
      const status = frame.status;
      this.emitError(
        new GoomerangError(toCode(status?.code ?? 2), `the server could not handle ${what}: ${status?.message ?? ""}`),
      );
      return;
    }
    const pending = this.pending.get(frame.id);
    if (pending === undefined) return; // late or duplicate: dropped, as PROTOCOL.md says
    this.pending.delete(frame.id);
    if (frame.kind === FrameKind.ERROR) {
      pending.reject(new GoomerangError(toCode(frame.status?.code ?? 2), frame.status?.message ?? ""));
    } else if (pending.output !== undefined && frame.type !== pending.output.typeName) {
      pending.reject(
        new GoomerangError(Code.INTERNAL, `expected a reply of type ${pending.output.typeName}, got ${JSON.stringify(frame.type)}`),
      );
    } else {
      pending.resolve(frame);
    }
  }

  private route(frame: Frame): Route | GoomerangError {
    if (frame.method !== "") {
      const route = this.byMethod.get(frame.method);
      if (route === undefined) return new GoomerangError(Code.UNIMPLEMENTED, `no handler for method ${JSON.stringify(frame.method)}`);
      if (route.input.typeName !== frame.type) {
        return new GoomerangError(
          Code.INVALID_ARGUMENT,
          `${frame.method} takes ${route.input.typeName}, not ${JSON.stringify(frame.type)}`,
        );
      }
      return route;
    }
    const byType = this.byType.get(frame.type);
    if (byType !== undefined) return byType;
    const methods = [...this.byMethod.entries()].filter(([, r]) => r.input.typeName === frame.type);
    if (methods.length === 1) return methods[0]![1];
    if (methods.length > 1) {
      return new GoomerangError(
        Code.UNIMPLEMENTED,
        `several methods take ${frame.type} (${methods.map(([m]) => m).join(", ")}); name one`,
      );
    }
    return new GoomerangError(Code.UNIMPLEMENTED, `no handler for message type ${JSON.stringify(frame.type)}`);
  }

  private async dispatch(frame: Frame, isRequest: boolean): Promise<void> {
    const ws = this.ws;
    const fail = (err: GoomerangError) => {
      if (ws === undefined || ws.readyState !== 1) return;
      if (isRequest) {
        this.write(ws, { kind: FrameKind.ERROR, id: frame.id, status: { code: err.code, message: err.rawMessage } });
      } else {
        this.write(ws, {
          kind: FrameKind.ERROR,
          type: frame.type,
          method: frame.method,
          status: { code: err.code, message: err.rawMessage },
        });
      }
    };
    const route = this.route(frame);
    if (route instanceof GoomerangError) {
      fail(route);
      return;
    }
    if (isRequest && route.oneWay) {
      fail(new GoomerangError(Code.UNIMPLEMENTED, `the handler for ${frame.method || frame.type} is one-way and sends no reply`));
      return;
    }
    let message: unknown;
    try {
      message = fromBinary(route.input, frame.payload);
    } catch (err) {
      fail(new GoomerangError(Code.INVALID_ARGUMENT, `payload does not decode as ${route.input.typeName}: ${String(err)}`));
      return;
    }
    const controller = new AbortController();
    let timer: ReturnType<typeof setTimeout> | undefined;
    if (isRequest) {
      this.running.set(frame.id, controller);
      if (frame.timeoutMs > 0) {
        timer = setTimeout(
          () => controller.abort(new GoomerangError(Code.DEADLINE_EXCEEDED, "the request's deadline passed")),
          frame.timeoutMs,
        );
      }
    }
    const ctx: HandlerContext = { metadata: metadataOf(frame), signal: controller.signal, replyHeaders: {} };
    try {
      const result = await route.handler(message, ctx);
      if (!isRequest) return;
      if (this.running.get(frame.id) !== controller || controller.signal.aborted) return; // cancelled: nothing is sent
      const output = route.output;
      if (output !== undefined && ws !== undefined && ws.readyState === 1 && this.ws === ws) {
        this.write(ws, {
          kind: FrameKind.REPLY,
          id: frame.id,
          type: output.typeName,
          payload: toBinary(output, result as MessageShape<DescMessage>),
          headers: ctx.replyHeaders,
        });
      }
    } catch (err) {
      const error = GoomerangError.from(err);
      if (!isRequest) {
        this.emitError(new GoomerangError(error.code, `handler for ${frame.method || frame.type} failed: ${error.rawMessage}`));
        return;
      }
      if (this.running.get(frame.id) !== controller || controller.signal.aborted) return;
      fail(error);
    } finally {
      clearTimeout(timer);
      if (isRequest && this.running.get(frame.id) === controller) this.running.delete(frame.id);
    }
  }

}

function metadataOf(frame: Frame): Metadata {
  return {
    type: frame.type,
    method: frame.method,
    topic: frame.topic,
    headers: { ...frame.headers },
    id: frame.id,
    createdUnixUs: frame.createdUnixUs,
    ...(frame.offset > 0n ? { position: { epoch: frame.epoch, offset: frame.offset } } : {}),
  };
}

/** The position a SUBSCRIBE's reply carries (a topic with history); undefined for a topic without. */
function positionOf(reply: Frame): { epoch: string; offset: bigint; recovered: boolean } | undefined {
  if (reply.type !== PositionSchema.typeName) return undefined;
  try {
    const position = fromBinary(PositionSchema, reply.payload);
    return { epoch: position.epoch, offset: position.offset, recovered: position.recovered };
  } catch {
    return undefined;
  }
}

export type { Headers };
