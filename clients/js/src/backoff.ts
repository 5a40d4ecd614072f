/** Reconnect delays: exponential backoff with full jitter. */
export interface BackoffOptions {
  /** First ceiling, in ms (default 500). */
  minMs?: number;
  /** Largest ceiling, in ms (default 20,000). */
  maxMs?: number;
  /** Growth of the ceiling per failed attempt (default 2). */
  factor?: number;
}

/**
 * Delay before attempt `attempt` (0-based), `random` in [0, 1): uniform in [0, min(maxMs, minMs * factor^attempt)].
 * Full jitter spreads clients dropped at the same instant over the whole window.
 */
export function backoffDelay(o: Required<BackoffOptions>, attempt: number, random: number): number {
  const ceiling = Math.min(o.maxMs, o.minMs * Math.pow(o.factor, Math.min(attempt, 30)));
  return Math.floor(random * ceiling);
}
