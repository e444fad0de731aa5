// @goomerang/client: typed protobuf messaging over WebSockets with a goomerang server.

export { Client, SUBPROTOCOL } from "./client.js";
export { Code, GoomerangError, toCode } from "./status.js";
export { backoffDelay } from "./backoff.js";
export type { ReconnectOptions } from "./backoff.js";
export type {
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
