// The status codes goomerang answers with (gRPC's), and the error a failed call rejects with.

/** A gRPC status code, as carried by `ERROR` frames (PROTOCOL.md §4). */
export enum Code {
  OK = 0,
  CANCELLED = 1,
  UNKNOWN = 2,
  INVALID_ARGUMENT = 3,
  DEADLINE_EXCEEDED = 4,
  NOT_FOUND = 5,
  ALREADY_EXISTS = 6,
  PERMISSION_DENIED = 7,
  RESOURCE_EXHAUSTED = 8,
  FAILED_PRECONDITION = 9,
  ABORTED = 10,
  OUT_OF_RANGE = 11,
  UNIMPLEMENTED = 12,
  INTERNAL = 13,
  UNAVAILABLE = 14,
  DATA_LOSS = 15,
  UNAUTHENTICATED = 16,
}

/** Maps any number to a known code (unknown codes become `UNKNOWN`, as gRPC does). */
export function toCode(value: number): Code {
  return Number.isInteger(value) && value >= 0 && value <= 16 ? (value as Code) : Code.UNKNOWN;
}

/**
 * What a call rejects with: the peer's answer (its `ERROR` frame) or a local
 * failure (deadline, disconnection), each with its status code.
 */
export class GoomerangError extends Error {
  /** The status code. */
  readonly code: Code;
  /** The status message, without the code. */
  readonly rawMessage: string;

  constructor(code: Code, message: string, options?: { cause?: unknown }) {
    super(`${Code[code]}: ${message}`, options);
    this.name = "GoomerangError";
    this.code = code;
    this.rawMessage = message;
  }

  /** The code's name, e.g. `NOT_FOUND`. */
  get codeName(): string {
    return Code[this.code];
  }

  /** Turns anything thrown into a GoomerangError (a non-goomerang error becomes `INTERNAL`). */
  static from(err: unknown): GoomerangError {
    if (err instanceof GoomerangError) return err;
    const message = err instanceof Error ? err.message : String(err);
    return new GoomerangError(Code.INTERNAL, message, { cause: err });
  }
}
