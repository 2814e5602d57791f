/**
 * Reconnect delays: exponential growth, capped, with jitter so that the
 * clients of a restarted server do not all come back at the same instant.
 */

export interface ReconnectOptions {
  /** Delay before the first retry, ms. */
  initialDelay: number;
  /** Upper bound of any delay, ms. */
  maxDelay: number;
  /** Fraction of the delay that is randomised: 0 = none, 0.5 = ±50%. */
  jitter: number;
}

export const DEFAULT_RECONNECT: ReconnectOptions = {
  initialDelay: 500,
  maxDelay: 30_000,
  jitter: 0.5,
};

/** Delay before retry number `attempt` (0-based). `random` returns [0, 1). */
export function backoffDelay(
  attempt: number,
  options: ReconnectOptions,
  random: () => number = Math.random,
): number {
  const exponential = options.initialDelay * 2 ** Math.min(attempt, 30);
  const base = Math.min(options.maxDelay, exponential);
  const jitter = Math.min(Math.max(options.jitter, 0), 1);
  const factor = 1 - jitter + 2 * jitter * random();
  return Math.round(Math.min(options.maxDelay, Math.max(0, base * factor)));
}
