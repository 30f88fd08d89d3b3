/**
 * The workflow-level lock on a real dev server: FIFO hand-over, one holder at a time, a terminated
 * holder freed by the liveness check (also while new requests keep waking the lock workflow), a waiter that gives up naming the holder (its timeout counted from
 * the lock workflow's answer), cancelled waiters and
 * holders that withdraw or hand over at once, and a lock workflow
 * that continues-as-new without dropping queued requests.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { WorkflowFailedError } from '@temporalio/client';
import { CancelledFailure } from '@temporalio/common';
import { maybeRecordHistory } from './helpers/record-history';
import { waitFor } from './helpers/wait';
import { startProbeWorker, startTemporal, uniqueTaskQueue, type RunningWorker, type TemporalHarness } from './helpers/temporal';
import { lockStateQuery, lockWorkflowId, type LockState } from '../workflows/lock';
import type { ProbeResult } from './workflows/lock-probe';

let h: TemporalHarness;
let taskQueue: string;
let worker: RunningWorker;

before(async () => {
  h = await startTemporal();
  taskQueue = uniqueTaskQueue('lock');
  worker = await startProbeWorker(h, taskQueue);
});

after(async () => {
  await worker?.stop();
  await h?.stop();
});

function startProbe(id: string, resource: string, holdMs: number | null, timeoutSeconds?: number, rerequestSeconds?: number) {
  return h.client.workflow.start('lockProbe', {
    taskQueue,
    workflowId: id,
    args: [
      'warehouse',
      resource,
      holdMs,
      ...(timeoutSeconds === undefined && rerequestSeconds === undefined ? [] : [timeoutSeconds ?? null]),
      ...(rerequestSeconds === undefined ? [] : [rerequestSeconds]),
    ],
  });
}

/** Rejects when `p` has not settled within `ms`: a wait that would otherwise last forever fails the test. */
function deadlockGuard<T>(what: string, p: Promise<T>, ms = 60_000): Promise<T> {
  return Promise.race([p, new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`${what}: still waiting after ${ms / 1000} s (deadlock)`)), ms).unref())]);
}

async function lockState(resource: string): Promise<LockState> {
  return h.client.workflow.getHandle(lockWorkflowId('warehouse', resource)).query(lockStateQuery);
}


describe('resource lock', () => {
  it('grants in request order, one holder at a time', async () => {
    const resource = `/wh/fifo-${Date.now()}`;
    const ids = ['a', 'b', 'c'].map((x) => `probe-fifo-${x}-${Date.now()}`);
    const handles = [];
    for (const id of ids) {
      handles.push(await startProbe(id, resource, 1500));
      // Wait until this request is queued or held, so arrival order is the order of `ids`.
      await waitFor('request registered', async () => {
        const s = await lockState(resource);
        const known = [s.holder?.workflowId, ...s.queue.map((q) => q.workflowId)];
        return known.includes(id) ? true : undefined;
      });
    }
    const results = (await Promise.all(handles.map((hd) => hd.result()))) as ProbeResult[];
    for (let i = 1; i < results.length; i++) {
      assert.ok(results[i]!.acquiredAtMs >= results[i - 1]!.releasedAtMs, `holder ${i} overlapped holder ${i - 1}`);
      assert.ok(results[i]!.fence > results[i - 1]!.fence, 'fences increase in grant order');
    }
  });

  it('signals of another shape (no payload, as `temporal workflow signal` sends without --input) are ignored by the lock and its requesters, which go on', async () => {
    const resource = `/wh/malformed-${Date.now()}`;
    const holder = await startProbe(`probe-malformed-a-${Date.now()}`, resource, null);
    await waitFor('holder granted', async () => ((await lockState(resource)).holder?.workflowId === holder.workflowId ? true : undefined));
    const waiter = await startProbe(`probe-malformed-b-${Date.now()}`, resource, 100);
    await waitFor('waiter queued', async () => ((await lockState(resource)).queue.some((q) => q.workflowId === waiter.workflowId) ? true : undefined));
    const lock = h.client.workflow.getHandle(lockWorkflowId('warehouse', resource));
    for (const name of ['earthcatalog.lock.acquire', 'earthcatalog.lock.release']) {
      for (const payload of [null, {}, { requestId: 7 }, 'x']) await lock.signal(name, payload);
    }
    for (const name of ['earthcatalog.lock.granted', 'earthcatalog.lock.queued']) {
      for (const payload of [null, { requestId: 'forged' }, 'x']) await waiter.signal(name, payload);
    }
    const state = await lockState(resource);
    assert.equal(state.holder?.workflowId, holder.workflowId, 'the holder keeps the lock');
    assert.deepEqual(state.queue.map((q) => q.workflowId), [waiter.workflowId], 'nothing else was queued');
    await holder.signal('finishProbe');
    await deadlockGuard('the waiter gets the lock', waiter.result());
    for (const handle of [lock, waiter]) {
      const failed = ((await handle.fetchHistory()).events ?? []).filter((e) => e.workflowTaskFailedEventAttributes);
      assert.deepEqual(failed, [], `${handle.workflowId}: no workflow task failed`);
    }
  });

  it('frees the lock of a terminated holder within the liveness bound', async () => {
    const resource = `/wh/terminated-${Date.now()}`;
    const holder = await startProbe(`probe-holder-${Date.now()}`, resource, null);
    await waitFor('holder granted', async () => ((await lockState(resource)).holder?.workflowId === holder.workflowId ? true : undefined));
    const waiter = await startProbe(`probe-waiter-${Date.now()}`, resource, 10);
    await waitFor('waiter queued', async () => ((await lockState(resource)).queue.length === 1 ? true : undefined));
    const terminatedAt = Date.now();
    await holder.terminate('test: holder dies');
    const result = (await waiter.result()) as ProbeResult;
    const waited = result.acquiredAtMs - terminatedAt;
    // Documented bound: livenessCheckSeconds (10 s) plus a describe round trip.
    assert.ok(waited < 20_000, `waiter got the lock ${waited} ms after the holder was terminated`);
  });

  it('frees the lock of a terminated holder even while new requests keep arriving faster than the liveness check', async () => {
    const resource = `/wh/stream-${Date.now()}`;
    const holder = await startProbe(`probe-dead-holder-${Date.now()}`, resource, null);
    await waitFor('holder granted', async () => ((await lockState(resource)).holder?.workflowId === holder.workflowId ? true : undefined));
    const first = await startProbe(`probe-first-${Date.now()}`, resource, 10);
    await waitFor('first waiter queued', async () => ((await lockState(resource)).queue.length === 1 ? true : undefined));
    const terminatedAt = Date.now();
    await holder.terminate('test: holder dies');
    // A request every 3 s for 30 s, each waking the lock workflow before its 10 s check would run.
    const stream: Array<Awaited<ReturnType<typeof startProbe>>> = [];
    let firstResult: ProbeResult | undefined;
    void first.result().then((r) => (firstResult = r as ProbeResult));
    for (let i = 0; i < 10 && !firstResult; i++) {
      await new Promise((r) => setTimeout(r, 3000));
      stream.push(await startProbe(`probe-stream-${i}-${Date.now()}`, resource, 10));
    }
    const result = (await first.result()) as ProbeResult;
    const waited = result.acquiredAtMs - terminatedAt;
    assert.ok(waited < 20_000, `the first waiter got the lock ${waited} ms after the holder was terminated, ${stream.length} requests later`);
    for (const p of stream) await p.result();
    await maybeRecordHistory(h.address, lockWorkflowId('warehouse', resource), 'resourceLock-liveness-on-wake');
  });

  it('a waiter that times out fails with a message naming the holder', async () => {
    const resource = `/wh/timeout-${Date.now()}`;
    const holder = await startProbe(`probe-long-${Date.now()}`, resource, null);
    await waitFor('holder granted', async () => ((await lockState(resource)).holder?.workflowId === holder.workflowId ? true : undefined));
    const waiter = await startProbe(`probe-impatient-${Date.now()}`, resource, 10, 2);
    await assert.rejects(waiter.result(), (err: unknown) => {
      assert.ok(err instanceof WorkflowFailedError);
      const cause = err.cause as Error;
      assert.match(cause.message, new RegExp(`locked by workflow ${holder.workflowId}`));
      return true;
    });
    await holder.signal('finishProbe');
    await holder.result();
    const s = await lockState(resource);
    assert.equal(s.queue.length, 0, 'the impatient request was withdrawn');
  });

  it('a lock timeout counts from the lock workflow\'s answer: 0 takes a free lock even when the answer is slow, and gives up at once behind a holder', async () => {
    const resource = `/wh/zero-${Date.now()}`;
    // The lock workflow lives on the task queue of its first requester: a probe on a queue whose worker
    // is then stopped, so the lock workflow answers only once that worker is back.
    const slowQueue = uniqueTaskQueue('lock-slow');
    let slow = await startProbeWorker(h, slowQueue);
    const opener = await h.client.workflow.start('lockProbe', { taskQueue: slowQueue, workflowId: `probe-opener-${Date.now()}`, args: ['warehouse', resource, 10] });
    await opener.result();
    await slow.stop();

    const first = await startProbe(`probe-zero-free-${Date.now()}`, resource, null, 0);
    await new Promise((r) => setTimeout(r, 3000));
    assert.equal((await first.describe()).status.name, 'RUNNING', 'still waiting for the answer, not timed out');
    slow = await startProbeWorker(h, slowQueue);
    try {
      await waitFor('the zero-timeout request holds the free lock', async () => ((await lockState(resource)).holder?.workflowId === first.workflowId ? true : undefined));
      const second = await startProbe(`probe-zero-busy-${Date.now()}`, resource, 10, 0);
      await assert.rejects(second.result(), (err: unknown) => {
        assert.ok(err instanceof WorkflowFailedError);
        assert.match((err.cause as Error).message, new RegExp(`locked by workflow ${first.workflowId}; gave up after 0s`));
        return true;
      });
      await first.signal('finishProbe');
      assert.ok(((await first.result()) as ProbeResult).fence >= 1);
      assert.equal((await lockState(resource)).queue.length, 0, 'the request that gave up was withdrawn');
    } finally {
      await slow.stop();
    }
  });

  it('a cancelled waiter withdraws its request; a cancelled holder hands over at once', async () => {
    const resource = `/wh/cancel-${Date.now()}`;
    const holder = await startProbe(`probe-cancel-holder-${Date.now()}`, resource, null);
    await waitFor('holder granted', async () => ((await lockState(resource)).holder?.workflowId === holder.workflowId ? true : undefined));
    const cancelled = await startProbe(`probe-cancel-waiter-${Date.now()}`, resource, 10);
    await waitFor('waiter queued', async () => ((await lockState(resource)).queue.length === 1 ? true : undefined));
    await cancelled.cancel();
    await assert.rejects(cancelled.result(), (err: unknown) => err instanceof WorkflowFailedError && err.cause instanceof CancelledFailure);
    await waitFor('request withdrawn', async () => ((await lockState(resource)).queue.length === 0 ? true : undefined), 5_000);

    const next = await startProbe(`probe-cancel-next-${Date.now()}`, resource, 10);
    await waitFor('next queued', async () => ((await lockState(resource)).queue.length === 1 ? true : undefined));
    const cancelledAt = Date.now();
    await holder.cancel();
    await assert.rejects(holder.result(), (err: unknown) => err instanceof WorkflowFailedError && err.cause instanceof CancelledFailure);
    const result = (await next.result()) as ProbeResult;
    // Released by the cancelled holder itself, not by the liveness check (10 s).
    assert.ok(result.acquiredAtMs - cancelledAt < 5_000, `next got the lock ${result.acquiredAtMs - cancelledAt} ms after the cancel`);
  });

  it('a new run of a workflow id (restarted after terminate) supersedes the closed run\'s request, held or queued, instead of waiting behind it', async () => {
    // The liveness check cannot free these: the holder's workflow id is running again. Without the
    // supersede each new run would wait forever, so the results are awaited with a deadlock guard.
    const guard = <T>(what: string, p: Promise<T>) => deadlockGuard(what, p);
    const resource = `/wh/restarted-${Date.now()}`;
    const heldId = `probe-restarted-holder-${Date.now()}`;
    const first = await startProbe(heldId, resource, null);
    await waitFor('holder granted', async () => ((await lockState(resource)).holder?.workflowId === heldId ? true : undefined));
    const firstFence = (await lockState(resource)).holder!.fence;
    await first.terminate('test: restarted under the same id');
    const again = await startProbe(heldId, resource, 10);
    const regained = (await guard('restarted holder', again.result())) as ProbeResult;
    assert.ok(regained.fence > firstFence, 'the new run got a new grant, not the closed run\'s');

    const holder = await startProbe(`probe-restarted-busy-${Date.now()}`, resource, null);
    await waitFor('holder granted', async () => ((await lockState(resource)).holder?.workflowId === holder.workflowId ? true : undefined));
    const queuedId = `probe-restarted-waiter-${Date.now()}`;
    const waiter = await startProbe(queuedId, resource, 10);
    await waitFor('waiter queued', async () => ((await lockState(resource)).queue.length === 1 ? true : undefined));
    const staleRequest = (await lockState(resource)).queue[0]!.requestId;
    await waiter.terminate('test: restarted under the same id');
    const waiterAgain = await startProbe(queuedId, resource, 10);
    const queue = await waitFor('the new run\'s request queued', async () => {
      const s = await lockState(resource);
      return s.queue.some((q) => q.requestId !== staleRequest) ? s.queue : undefined;
    });
    assert.deepEqual(queue.map((q) => q.workflowId), [queuedId], 'one request of the waiter\'s id: the closed run\'s is gone');
    await holder.signal('finishProbe');
    await holder.result();
    const served = (await guard('restarted waiter', waiterAgain.result())) as ProbeResult;
    assert.ok(served.fence > regained.fence);
    await maybeRecordHistory(h.address, lockWorkflowId('warehouse', resource), 'resourceLock-superseded');
  });

  it('a terminated lock workflow: the next request\'s fresh run takes over its holder and queue, so the holder is not joined by another', async () => {
    const resource = `/wh/lock-terminated-${Date.now()}`;
    const lockId = lockWorkflowId('warehouse', resource);
    const holder = await startProbe(`probe-lt-holder-${Date.now()}`, resource, null);
    await waitFor('holder granted', async () => ((await lockState(resource)).holder?.workflowId === holder.workflowId ? true : undefined));
    const heldFence = (await lockState(resource)).holder!.fence;
    const waiter = await startProbe(`probe-lt-waiter-${Date.now()}`, resource, 10);
    await waitFor('waiter queued', async () => ((await lockState(resource)).queue.length === 1 ? true : undefined));
    await h.client.workflow.getHandle(lockId).terminate('test: an operator takes the lock for a stuck one');
    const late = await startProbe(`probe-lt-late-${Date.now()}`, resource, 10);
    const s = await waitFor('the fresh lock run has taken over', async () => {
      const st = await lockState(resource).catch(() => undefined);
      return st && st.queue.some((q) => q.workflowId === late.workflowId) ? st : undefined;
    });
    assert.equal(s.holder?.workflowId, holder.workflowId, 'the terminated run\'s holder still holds the lock');
    assert.equal(s.holder?.fence, heldFence);
    assert.deepEqual(s.queue.map((q) => q.workflowId), [waiter.workflowId, late.workflowId], 'the closed run\'s waiter first, then the new request');
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal((await late.describe()).status.name, 'RUNNING', 'the late request waits behind the holder');
    await holder.signal('finishProbe');
    const [held, w, l] = (await Promise.all([holder.result(), deadlockGuard('waiter', waiter.result()), deadlockGuard('late', late.result())])) as ProbeResult[];
    assert.ok(w!.acquiredAtMs >= held!.releasedAtMs && l!.acquiredAtMs >= w!.releasedAtMs, 'one holder at a time, in order');
    assert.ok(w!.fence > heldFence && l!.fence > w!.fence, 'fences go on from the terminated run\'s');
    await maybeRecordHistory(h.address, lockId, 'resourceLock-inherited');
  });

  it('a waiter whose lock workflow was terminated sends its request again and gets the lock once the holder is done', async () => {
    const resource = `/wh/lock-rerequest-${Date.now()}`;
    const lockId = lockWorkflowId('warehouse', resource);
    const holder = await startProbe(`probe-rr-holder-${Date.now()}`, resource, null);
    await waitFor('holder granted', async () => ((await lockState(resource)).holder?.workflowId === holder.workflowId ? true : undefined));
    const waiter = await startProbe(`probe-rr-waiter-${Date.now()}`, resource, 10, undefined, 2);
    await waitFor('waiter queued', async () => ((await lockState(resource)).queue.length === 1 ? true : undefined));
    await h.client.workflow.getHandle(lockId).terminate('test: an operator takes the lock for a stuck one');
    // Nobody else asks for the lock: the holder's release reaches no lock workflow.
    await holder.signal('finishProbe');
    const released = ((await holder.result()) as ProbeResult).releasedAtMs;
    const got = (await deadlockGuard('waiter', waiter.result(), 30_000)) as ProbeResult;
    assert.ok(got.acquiredAtMs >= released, 'granted after the holder was done');
  });

  it('a lock workflow left on a task queue no worker serves is taken over by a request from another queue once nobody it granted runs; while its holder runs, it is left alone', async () => {
    const queueA = uniqueTaskQueue('lock-gone');
    const onA = (id: string, resource: string, holdMs: number | null) => h.client.workflow.start('lockProbe', { taskQueue: queueA, workflowId: id, args: ['warehouse', resource, holdMs] });
    const lockRuns = async (lockId: string) => {
      const runs: Array<[string, string]> = [];
      for await (const wf of h.client.workflow.list({ query: `WorkflowId = '${lockId}'` })) runs.push([wf.status.name, wf.taskQueue]);
      return runs;
    };

    // A deploy moves to another task queue while a run on A holds the lock: the lock is left alone.
    let workerA = await startProbeWorker(h, queueA);
    const held = `/wh/moved-held-${Date.now()}`;
    const holder = await onA(`probe-moved-holder-${Date.now()}`, held, null);
    await waitFor('granted on A', async () => ((await lockState(held)).holder?.workflowId === holder.workflowId ? true : undefined));
    await workerA.stop();
    const waiter = await startProbe(`probe-moved-waiter-${Date.now()}`, held, 10, undefined, 2);
    await new Promise((r) => setTimeout(r, 35_000));
    const stillA = await h.client.workflow.getHandle(lockWorkflowId('warehouse', held)).describe();
    assert.deepEqual([stillA.status.name, stillA.taskQueue], ['RUNNING', queueA], 'a lock whose holder still runs is not taken over');
    assert.equal((await waiter.describe()).status.name, 'RUNNING', 'the waiter waits behind the holder');
    workerA = await startProbeWorker(h, queueA);
    await holder.signal('finishProbe');
    const released = ((await holder.result()) as ProbeResult).releasedAtMs;
    assert.ok(((await deadlockGuard('the waiter', waiter.result())) as ProbeResult).acquiredAtMs >= released);

    // A's workers go right after their run released the lock, before the idle lock workflow closes: it
    // can neither grant nor close, and a request on another task queue takes it over.
    const idle = `/wh/moved-idle-${Date.now()}`;
    const before = (await (await onA(`probe-moved-done-${Date.now()}`, idle, 10)).result()) as ProbeResult;
    await workerA.stop();
    const next = await startProbe(`probe-moved-next-${Date.now()}`, idle, 10);
    const after = (await deadlockGuard('a request on another task queue', next.result(), 90_000)) as ProbeResult;
    assert.ok(after.fence > before.fence, `fences go on from the retired run's (read from its history): ${before.fence} then ${after.fence}`);
    const runs = await lockRuns(lockWorkflowId('warehouse', idle));
    assert.ok(runs.some(([status, queue]) => status === 'TERMINATED' && queue === queueA), `the run on ${queueA} was terminated: ${JSON.stringify(runs)}`);
    assert.equal((await h.client.workflow.getHandle(lockWorkflowId('warehouse', idle)).describe()).taskQueue, taskQueue, "the lock goes on on the request's task queue");
  });

  it('a terminated lock workflow whose task queue no worker serves: the fresh run grants nobody while the run it had granted still runs', async () => {
    const queueA = uniqueTaskQueue('lock-gone-terminated');
    let workerA = await startProbeWorker(h, queueA);
    const resource = `/wh/gone-terminated-${Date.now()}`;
    const lockId = lockWorkflowId('warehouse', resource);
    const holder = await h.client.workflow.start('lockProbe', { taskQueue: queueA, workflowId: `probe-gt-holder-${Date.now()}`, args: ['warehouse', resource, null] });
    await waitFor('granted on A', async () => ((await lockState(resource)).holder?.workflowId === holder.workflowId ? true : undefined));
    await workerA.stop();
    // An operator terminates the lock while its queue has no worker: its state cannot be read by a query.
    await h.client.workflow.getHandle(lockId).terminate('test: an operator takes the lock for a stuck one');
    const waiter = await startProbe(`probe-gt-waiter-${Date.now()}`, resource, 10);
    await new Promise((r) => setTimeout(r, 25_000));
    assert.equal((await waiter.describe()).status.name, 'RUNNING', 'not granted beside the holder, whose run still runs');
    workerA = await startProbeWorker(h, queueA);
    try {
      await holder.signal('finishProbe');
      const released = ((await holder.result()) as ProbeResult).releasedAtMs;
      const got = (await deadlockGuard('the waiter', waiter.result())) as ProbeResult;
      assert.ok(got.acquiredAtMs >= released, 'granted once the holder was done');
    } finally {
      await workerA.stop();
    }
  });

  it('continues-as-new without dropping queued requests', async () => {
    const resource = `/wh/can-${Date.now()}`;
    const lockId = lockWorkflowId('warehouse', resource);
    // Start the lock with a tiny history budget so it continues-as-new while requests wait.
    const initial: LockState = { holder: null, queue: [], nextFence: 1, livenessCheckSeconds: 1, maxHistoryEvents: 30 };
    await h.client.workflow.start('resourceLock', { taskQueue, workflowId: lockId, args: [initial] });
    const handles = [];
    for (let i = 0; i < 5; i++) handles.push(await startProbe(`probe-can-${i}-${Date.now()}`, resource, 300));
    const results = (await Promise.all(handles.map((hd) => hd.result()))) as ProbeResult[];
    assert.equal(new Set(results.map((r) => r.fence)).size, 5, 'every request was granted once');
    const sorted = [...results].sort((a, b) => a.acquiredAtMs - b.acquiredAtMs);
    for (let i = 1; i < sorted.length; i++) assert.ok(sorted[i]!.acquiredAtMs >= sorted[i - 1]!.releasedAtMs, 'no overlap');
    // Visibility lags a little: wait until it lists the continued-as-new runs of the lock.
    const runs = await waitFor('lock runs listed', async () => {
      let n = 0;
      for await (const wf of h.client.workflow.list({ query: `WorkflowId = '${lockId}'` })) if (wf.status.name === 'CONTINUED_AS_NEW') n++;
      return n >= 1 ? n : undefined;
    });
    assert.ok(runs >= 1, 'the lock continued as new while requests were queued');
  });
});
