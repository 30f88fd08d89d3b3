/**
 * keepAlive's timing, on the SDK's MockActivityEnvironment and Node's mocked timers: what it sends and when
 * beatNow resolves. The SDK's throttle itself is the worker's (not mocked here): crash-recovery kills a worker
 * right after the rebuild's beatNow and checks that the retry names what the killed attempt wrote.
 */
import { test, mock } from 'node:test';
import assert from 'node:assert/strict';
import { MockActivityEnvironment } from '@temporalio/testing';
import { HEARTBEAT_THROTTLE_MS, keepAlive } from '../activities/heartbeats';
import { HEARTBEAT_INTERVAL_MS, HEARTBEAT_TIMEOUT_MS } from '../workflows/contract';

const settled = () => new Promise<void>((resolve) => setImmediate(resolve));

test('keepAlive sends a heartbeat every 10 s from a timer (none at the start, none after the step); beatNow sends at once and, within the throttle of the last one, resolves only once the throttle is over', async () => {
  assert.equal(HEARTBEAT_INTERVAL_MS, 10_000);
  assert.equal(HEARTBEAT_THROTTLE_MS, 5_000, 'below the interval: a worker of the plugin sends every timer heartbeat');
  assert.equal(HEARTBEAT_TIMEOUT_MS, 30_000);
  mock.timers.enable({ apis: ['setInterval', 'setTimeout', 'Date'], now: 1_000_000 });
  try {
    const env = new MockActivityEnvironment();
    const beats: number[] = [];
    env.on('heartbeat', (d: number) => beats.push(d));
    let n = 0;
    const result = await env.run(() =>
      keepAlive(
        () => ++n,
        async (beatNow) => {
          assert.deepEqual(beats, [], 'none at the start');
          mock.timers.tick(9_999);
          assert.deepEqual(beats, []);
          mock.timers.tick(1);
          assert.deepEqual(beats, [1], 'the timer');

          // 2 s after the timer's: the SDK would hold it back until 5 s after that one.
          mock.timers.tick(2_000);
          let resolved = false;
          const waiting = beatNow().then(() => void (resolved = true));
          assert.deepEqual(beats, [1, 2], 'sent at once');
          mock.timers.tick(3_499);
          await settled();
          assert.equal(resolved, false, 'still within the throttle (and its margin)');
          mock.timers.tick(1);
          await waiting;

          // The timer beats on (at 20 s); 6 s after it, the throttle is over: beatNow resolves without waiting.
          mock.timers.tick(20_000 - 15_500);
          assert.deepEqual(beats, [1, 2, 3]);
          mock.timers.tick(6_000);
          let atOnce = false;
          void beatNow().then(() => void (atOnce = true));
          await settled();
          assert.equal(atOnce, true);
          assert.deepEqual(beats, [1, 2, 3, 4]);
          return 'done';
        },
      ),
    );
    assert.equal(result, 'done');
    mock.timers.tick(60_000);
    assert.deepEqual(beats, [1, 2, 3, 4], 'the timer stops with the step');
  } finally {
    mock.timers.reset();
  }
});
