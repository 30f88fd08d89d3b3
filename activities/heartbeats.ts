/**
 * Heartbeats of the long activities (plan, buckets, rebuild): sent from a timer, so that only a worker that is
 * gone (not a slow DuckDB statement or catalog download) misses the heartbeat timeout.
 */
import { Context } from '@temporalio/activity';
import { HEARTBEAT_INTERVAL_MS } from '../workflows/contract';

/**
 * How often a worker of this plugin sends an activity's heartbeats at most (its `maxHeartbeatThrottleInterval`):
 * below `keepAlive`'s interval, so every one is sent.
 */
export const HEARTBEAT_THROTTLE_MS = HEARTBEAT_INTERVAL_MS / 2;

/**
 * Heartbeats every HEARTBEAT_INTERVAL_MS while `work` runs; the timer sends none at the start. `work` gets
 * `beatNow`, a heartbeat sent at once that resolves when the SDK has sent it: one that follows another within
 * the throttle is held back until the throttle ends, so `beatNow` waits that out.
 */
export function keepAlive<T>(details: () => unknown, work: (beatNow: () => Promise<void>) => Promise<T>): Promise<T> {
  const ctx = Context.current();
  let lastBeatAt = Number.NEGATIVE_INFINITY;
  const beat = () => {
    lastBeatAt = Date.now();
    ctx.heartbeat(details());
  };
  const beatNow = async () => {
    const sinceLastBeat = Date.now() - lastBeatAt;
    beat();
    if (sinceLastBeat < HEARTBEAT_THROTTLE_MS) await new Promise((resolve) => setTimeout(resolve, HEARTBEAT_THROTTLE_MS - sinceLastBeat + THROTTLE_MARGIN_MS));
  };
  const timer = setInterval(beat, HEARTBEAT_INTERVAL_MS);
  return work(beatNow).finally(() => clearInterval(timer));
}

/** The SDK's throttle runs on its own timer: a little past its end, the held-back heartbeat has gone out. */
const THROTTLE_MARGIN_MS = 500;
