/**
 * Transient faults injected at the HTTP level between the S3 store and a real S3 API server (moto):
 * 500 InternalError, 503 SlowDown, connections reset before an answer, responses cut mid-body,
 * uploads cut mid-body and stalls past the client's timeout. The store retries and every operation
 * still gives exactly the right bytes. First, the proxy itself is checked to inject what it claims.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { GetObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { S3WarehouseStore } from '../activities/storage/s3-store';
import { startMoto, listKeys, type MotoServer } from './helpers/moto-server';
import { startFaultProxy, type FaultKind, type FaultPlan, type FaultProxy } from './helpers/fault-proxy';
import { makeTempDir } from './helpers/temp-dirs';

const BUCKET = 'ec-fault-test';
const MIB = 1024 * 1024;
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

let moto: MotoServer;
let scratch: string;

before(async () => {
  moto = await startMoto();
  await moto.createBucket(BUCKET);
  scratch = await makeTempDir('ec-fault');
});

after(async () => {
  await moto?.stop();
});

describe('the fault proxy', () => {
  let proxy: FaultProxy;
  after(() => proxy?.stop());

  it('answers injected errors with S3 XML bodies, at most maxConsecutive times in a row, then forwards', async () => {
    await moto.client.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'probe.txt', Body: 'hello', ACL: 'public-read' }));
    proxy = await startFaultProxy(moto.endpoint, { rates: { slowDown503: 1 }, maxConsecutive: 2 });
    const url = `${proxy.endpoint}/${BUCKET}/probe.txt`;
    const first = await fetch(url);
    assert.equal(first.status, 503);
    assert.match(await first.text(), /<Code>SlowDown<\/Code>/);
    assert.equal((await fetch(url)).status, 503);
    const third = await fetch(url);
    assert.equal(third.status, 200, 'the third try of the same request passes');
    assert.equal(await third.text(), 'hello');
    assert.equal(proxy.stats().injected.slowDown503, 2);
  });

  it('stops injecting when its fault budget is spent', async () => {
    proxy.setPlan({ rates: { error500: 1 }, maxFaults: 3, maxConsecutive: 100 });
    const statuses: number[] = [];
    for (let i = 0; i < 6; i++) {
      const res = await fetch(`${proxy.endpoint}/${BUCKET}/probe.txt`);
      statuses.push(res.status);
      await res.arrayBuffer();
    }
    assert.deepEqual(statuses, [500, 500, 500, 200, 200, 200]);
  });

  it('is deterministic for a seed: the same request sequence gets the same faults', async () => {
    const run = async (seed: number): Promise<number[]> => {
      const p = await startFaultProxy(moto.endpoint, { rates: { error500: 0.5 }, maxConsecutive: 100 }, seed);
      const out: number[] = [];
      for (let i = 0; i < 12; i++) {
        const res = await fetch(`${p.endpoint}/${BUCKET}/probe.txt`);
        out.push(res.status);
        await res.arrayBuffer();
      }
      await p.stop();
      return out;
    };
    const a = await run(42);
    assert.deepEqual(await run(42), a);
    assert.ok(a.includes(500) && a.includes(200), `a mix of faults and passes: ${a.join(',')}`);
  });

  it('cuts a response in the middle of its body', async () => {
    proxy.setPlan({ rates: { midBodyReset: 1 }, maxFaults: 1 });
    await assert.rejects(async () => {
      const res = await fetch(`${proxy.endpoint}/${BUCKET}/probe.txt`);
      await res.text();
    });
    assert.equal(proxy.stats().injected.midBodyReset, 1);
  });
});

const MIXED_FAULTS: FaultPlan = {
  rates: { error500: 0.08, slowDown503: 0.08, reset: 0.06, midBodyReset: 0.15, uploadReset: 0.1, stall: 0.03 },
  stallMs: 4000,
  latencyMs: 2,
  maxConsecutive: 2,
  maxFaults: 400,
};

describe('the S3 store through transient faults', () => {
  let proxy: FaultProxy;
  let store: S3WarehouseStore;
  const prefix = 'wh';
  const small = new Map<string, Buffer>();
  const bigKey = 'grid_partition=b/year=2021/compacted_big.parquet';
  const big = randomBytes(11 * MIB + 777);

  before(async () => {
    proxy = await startFaultProxy(moto.endpoint, MIXED_FAULTS, 7);
    store = await S3WarehouseStore.fromUri(`s3://${BUCKET}/${prefix}`, {
      client: { endpoint: proxy.endpoint, idleTimeoutMs: 1500, maxAttempts: 8 },
      bodyIdleTimeoutMs: 1000,
      multipartThresholdBytes: 5 * MIB,
      partSizeBytes: 5 * MIB,
      listPageSize: 10,
      deleteBatchSize: 7,
      retry: { attempts: 6, baseDelayMs: 20, maxDelayMs: 300 },
    });
    for (let i = 0; i < 40; i++) small.set(`grid_partition=a/year=2020/part_${String(i).padStart(3, '0')}.parquet`, randomBytes(20_000 + i * 1000));
  });

  after(async () => {
    await store?.close();
    await proxy?.stop();
  });

  it('publishes every object exactly once with the right bytes (single-part and multipart)', async () => {
    for (const [key, bytes] of small) {
      const file = path.join(scratch, `up-${path.basename(key)}`);
      await fs.writeFile(file, bytes);
      assert.equal(await store.publishIfAbsent(file, key), 'created', key);
    }
    const file = path.join(scratch, 'big');
    await fs.writeFile(file, big);
    assert.equal(await store.publishIfAbsent(file, bigKey), 'created');
    // Checked straight against the server, not through the proxy.
    for (const [key, bytes] of [...small, [bigKey, big] as const]) {
      const res = await moto.client.send(new GetObjectCommand({ Bucket: BUCKET, Key: `${prefix}/${key}` }));
      assert.equal(sha(await res.Body!.transformToByteArray()), sha(bytes), key);
    }
  });

  it('lists every object across pages', async () => {
    const listed = new Map<string, number>();
    for await (const o of store.list('')) listed.set(o.key, o.size);
    assert.equal(listed.size, small.size + 1);
    for (const [key, bytes] of small) assert.equal(listed.get(key), bytes.length, key);
    assert.equal(listed.get(bigKey), big.length);
  });

  it('materializes every object with exactly its bytes, resuming downloads cut mid-body', async () => {
    const dir = path.join(scratch, 'downloads');
    for (const [key, bytes] of [...small, [bigKey, big] as const]) {
      const file = await store.materialize(key, dir);
      assert.equal(sha(await fs.readFile(file)), sha(bytes), key);
    }
  });

  it('a download cut twice in the middle resumes from where it broke (ranged GET pinned by If-Match)', async () => {
    const before = proxy.stats();
    proxy.setPlan({ rates: { midBodyReset: 1 }, maxFaults: 2 });
    try {
      const file = await store.materialize(bigKey, path.join(scratch, 'resumed'));
      assert.equal(sha(await fs.readFile(file)), sha(big));
      const after = proxy.stats();
      assert.equal(after.injected.midBodyReset - before.injected.midBodyReset, 2);
      assert.equal(after.requests - before.requests, 3, 'one GET and two resumptions, not three full downloads');
      assert.equal(after.withHeader.range - before.withHeader.range, 2);
      assert.equal(after.withHeader['if-match'] - before.withHeader['if-match'], 2);
    } finally {
      proxy.setPlan(MIXED_FAULTS);
    }
  });

  it('reads ranges and small objects, and writes small objects conditionally', async () => {
    for (const [key, bytes] of [...small].slice(0, 10)) {
      assert.deepEqual(Buffer.from(await store.readRange(key, bytes.length - 8, bytes.length)), bytes.subarray(bytes.length - 8), key);
      assert.equal(sha((await store.readSmall(key))!.body), sha(bytes), key);
    }
    for (let i = 0; i < 10; i++) {
      const key = `_earthcatalog_compaction/plans/p/page-${i}.json`;
      const v1 = await store.writeSmall(key, Buffer.from(`{"page":${i}}`), null);
      assert.notEqual(v1, 'conflict', `a retried if-absent write of ${key} is not its own conflict`);
      const v2 = await store.writeSmall(key, Buffer.from(`{"page":${i},"v":2}`), v1);
      assert.notEqual(v2, 'conflict', key);
      assert.equal((await store.readSmall(key))?.body.toString(), `{"page":${i},"v":2}`);
    }
  });

  it('deletes exactly the given objects in batches', async () => {
    const doomed = [...small.keys()].slice(0, 30);
    await store.deleteMany(doomed);
    const left = await listKeys(moto.client, BUCKET, `${prefix}/grid_partition=a`);
    assert.deepEqual(left, [...small.keys()].slice(30).map((k) => k.slice('grid_partition=a/'.length)));
  });

  it('a prefix that keeps answering 503 SlowDown costs the SDK\'s attempts once per call, not once more per retry of ours', async () => {
    const throttled = await startFaultProxy(moto.endpoint, { rates: { slowDown503: 1 }, maxConsecutive: 1000, maxFaults: 1000 }, 3);
    const slow = await S3WarehouseStore.fromUri(`s3://${BUCKET}/${prefix}`, {
      client: { endpoint: throttled.endpoint, maxAttempts: 3 },
      retry: { attempts: 6, baseDelayMs: 20, maxDelayMs: 100 },
    });
    try {
      await assert.rejects(async () => {
        for await (const o of slow.list('')) assert.fail(`listed ${o.key} through a prefix that only throttles`);
      }, /SlowDown/);
      assert.equal(throttled.stats().injected.slowDown503, 3, 'the SDK\'s 3 attempts, then the activity\'s retry policy decides');
    } finally {
      await slow.close();
      await throttled.stop();
    }
  });

  it('really went through every kind of fault', () => {
    const { injected, requests } = proxy.stats();
    for (const kind of ['error500', 'slowDown503', 'reset', 'midBodyReset', 'uploadReset', 'stall'] as FaultKind[]) {
      assert.ok(injected[kind] > 0, `${kind} injected (${JSON.stringify(injected)} over ${requests} requests)`);
    }
  });
});
