import { ActivityFailure, ApplicationFailure, proxyActivities } from '@temporalio/workflow';

export interface RetryProbeResult {
  /** The failure type of the last attempt, or null if an attempt succeeded. */
  failureType: string | null;
}

/** Runs the test activity `flakyBucket` with as many attempts as a bucket gets (fast backoff); a non-retryable failure ends it. */
export async function retryProbe(): Promise<RetryProbeResult> {
  const { flakyBucket } = proxyActivities<{ flakyBucket(): Promise<void> }>({
    startToCloseTimeout: '1 minute',
    retry: { initialInterval: '50 milliseconds', maximumInterval: '200 milliseconds', maximumAttempts: 8 },
  });
  try {
    await flakyBucket();
    return { failureType: null };
  } catch (err) {
    const cause = err instanceof ActivityFailure ? err.cause : undefined;
    return { failureType: cause instanceof ApplicationFailure ? (cause.type ?? null) : 'unknown' };
  }
}
