// Reconnection delays: exponential backoff with jitter.

/** How the client reconnects after losing its connection. */
export interface ReconnectOptions {
  /** The first delay, in ms (default 100). */
  initialDelayMs?: number;
  /** The longest delay, in ms (default 5000). */
  maxDelayMs?: number;
  /** Each failed attempt multiplies the delay by this (default 2). */
  multiplier?: number;
  /** Each delay varies randomly by up to this fraction, either way (default 0.2). */
  jitter?: number;
  /** Give up after this many failed attempts in a row (default: never). */
  maxAttempts?: number;
}

/** The delay before reconnection attempt `attempt` (0 for the first). */
export function backoffDelay(options: ReconnectOptions, attempt: number, random = Math.random): number {
  const initial = options.initialDelayMs ?? 100;
  const max = options.maxDelayMs ?? 5000;
  const multiplier = options.multiplier ?? 2;
  const jitter = Math.min(Math.max(options.jitter ?? 0.2, 0), 1);
  const base = Math.min(max, initial * multiplier ** attempt);
  const spread = base * jitter * (2 * random() - 1);
  return Math.max(0, Math.round(base + spread));
}
