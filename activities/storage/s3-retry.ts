/**
 * Our own retry loop for what the SDK cannot retry by itself: a response body that breaks after the
 * headers arrived (the SDK has already returned), and multi-request sequences such as a multipart upload.
 */
import { setTimeout } from 'node:timers/promises';
import { isTransient, sdkAttempts } from './s3-errors';

export interface RetryPolicy {
  attempts: number;
  baseDelayMs: number;
  maxDelayMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { attempts: 6, baseDelayMs: 200, maxDelayMs: 10_000 };

/** Full jitter exponential backoff: spreads retries of many workers hitting one throttled prefix. */
export function backoffMs(policy: RetryPolicy, attempt: number): number {
  const cap = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** (attempt - 1));
  return Math.round(cap / 2 + (Math.random() * cap) / 2);
}

/** Waits `ms`; an abort of `signal` ends the wait early (rejects). */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return setTimeout(ms, undefined, { signal });
}

/** `signal`: an abort ends the loop with its reason, also while it waits before a retry. */
export async function withRetries<T>(
  policy: RetryPolicy,
  fn: (attempt: number) => Promise<T>,
  retryable: (err: unknown) => boolean = isTransient,
  signal?: AbortSignal,
): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn(attempt);
    } catch (err) {
      if (signal?.aborted) throw signal.reason ?? err;
      // An error the SDK already retried (throttling, 5xx) goes up to the activity's own retries: another
      // round of SDK attempts here would multiply the requests against a throttled prefix.
      if (attempt >= policy.attempts || !retryable(err) || sdkAttempts(err) > 1) throw err;
      await sleep(backoffMs(policy, attempt), signal);
    }
  }
}
