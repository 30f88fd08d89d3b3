/**
 * The WarehouseStore contract, one suite run on both backends: a local directory and S3 (a real S3 API
 * server, moto, on loopback). Then what only S3 has: multipart uploads, incomplete-upload cleanup,
 * missing buckets, missing credentials (the SDK's real default chain with nothing to find; the attempt
 * number of their classification from the SDK's MockActivityEnvironment) and denied requests (failing fast, naming the object, leaking no credentials), and
 * the core (compactBucket) on both backends against the independent oracle.
 */
import * as net from 'node:net';
import * as os from 'node:os';
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { format } from 'node:util';
import { CreateMultipartUploadCommand, HeadObjectCommand, ListMultipartUploadsCommand, UploadPartCommand } from '@aws-sdk/client-s3';
import type { WarehouseStore } from '../activities/storage/warehouse-store';
import { StorageError } from '../activities/storage/warehouse-store';
import { LocalWarehouseStore } from '../activities/storage/local-store';
import { S3WarehouseStore, type S3StoreOptions } from '../activities/storage/s3-store';
import { ObjectReplacedError } from '../activities/storage/s3-transfer';
import { openWarehouseStore } from '../activities/storage/open-store';
import { compactBucket } from '../activities/compaction/compact-bucket';
import { planBuckets } from '../activities/compaction/plan-buckets';
import { readPlanManifest, readPlanPage } from '../activities/compaction/plan-store';
import { generateSampleWarehouse } from '../client/demo/sample-warehouse';
import { expectedBucketRows, readOutputRows, assertSameRows } from './helpers/bucket-oracle';
import { byBucket, listFiles } from './helpers/warehouse-fixtures';
import { startMoto, uploadDirectory, listKeys, type MotoServer } from './helpers/moto-server';
import { startFaultProxy, type FaultProxy } from './helpers/fault-proxy';
import { makeTempDir } from './helpers/temp-dirs';
import { waitFor } from './helpers/wait';
import { ApplicationFailure } from '@temporalio/common';
import { MockActivityEnvironment } from '@temporalio/testing';
import { CREDENTIAL_ATTEMPTS, toActivityFailure } from '../activities';
import { FailureTypes } from '../workflows/contract';

const BUCKET = 'ec-store-test';
const MIB = 1024 * 1024;
/** Small thresholds so multipart and batching happen on small data (S3's minimum part is 5 MiB). */
const S3_TEST_OPTIONS: S3StoreOptions = {
  multipartThresholdBytes: 5 * MIB,
  partSizeBytes: 5 * MIB,
  deleteBatchSize: 10,
  listPageSize: 25,
  retry: { attempts: 4, baseDelayMs: 20, maxDelayMs: 200 },
};

let moto: MotoServer;
let scratch: string;
let counter = 0;

before(async () => {
  moto = await startMoto();
  await moto.createBucket(BUCKET);
  scratch = await makeTempDir('ec-s3-store');
});

after(async () => {
  await moto?.stop();
});

interface Backend {
  name: 'local' | 's3';
  /** A fresh, empty warehouse root. */
  open(opts?: S3StoreOptions): Promise<WarehouseStore>;
}

const backends: Backend[] = [
  {
    name: 'local',
    open: async () => new LocalWarehouseStore(await fs.mkdtemp(path.join(scratch, 'local-root-'))),
  },
  {
    name: 's3',
    open: async (opts) => S3WarehouseStore.fromUri(`s3://${BUCKET}/root-${++counter}/warehouse`, { ...S3_TEST_OPTIONS, ...opts }),
  },
];

async function localFile(bytes: Buffer): Promise<string> {
  const file = path.join(scratch, `src-${randomBytes(4).toString('hex')}`);
  await fs.writeFile(file, bytes);
  return file;
}

async function collect(store: WarehouseStore, prefix: string): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for await (const o of store.list(prefix)) out.set(o.key, o.size);
  return out;
}

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

for (const backend of backends) {
  describe(`WarehouseStore contract (${backend.name})`, () => {
    let store: WarehouseStore;
    before(async () => {
      store = await backend.open();
    });
    after(async () => {
      await store?.close();
    });

    it('lists every object below a prefix with its size, recursively, across pages (25 keys per page on S3)', async () => {
      const keys = Array.from({ length: 130 }, (_, i) => `list/grid_partition=c${i % 5}/year=2020/part_${String(i).padStart(5, '0')}.parquet`);
      let next = 0;
      await Promise.all(
        Array.from({ length: 16 }, async () => {
          while (next < keys.length) {
            const i = next++;
            await store.writeSmall(keys[i]!, Buffer.alloc(i % 7, 1));
          }
        }),
      );
      await store.writeSmall('listing-sibling/x.parquet', Buffer.from('not below list/'));
      const listed = await collect(store, 'list/');
      assert.equal(listed.size, keys.length);
      for (const [i, k] of keys.entries()) assert.equal(listed.get(k), i % 7, k);
      const one = await collect(store, 'list/grid_partition=c3/');
      assert.equal(one.size, 26);
      assert.ok([...one.keys()].every((k) => k.startsWith('list/grid_partition=c3/year=2020/')));
      const all = await collect(store, '');
      assert.ok(all.has('listing-sibling/x.parquet') && all.size === keys.length + 1);
    });

    it('stat gives the size of an object and undefined for an absent one', async () => {
      await store.writeSmall('stat/a.bin', Buffer.alloc(123));
      const st = await store.stat('stat/a.bin');
      assert.deepEqual({ key: st?.key, size: st?.size }, { key: 'stat/a.bin', size: 123 });
      assert.equal(await store.stat('stat/absent.bin'), undefined);
    });

    it('list and stat give a version that changes when the object is rewritten, even at the same size', async () => {
      const key = 'ver/grid_partition=a/year=2020/part_1.parquet';
      await store.writeSmall(key, randomBytes(1000));
      const v1 = (await store.stat(key))!.version;
      assert.ok(v1.length > 0);
      const listed = async () => {
        for await (const o of store.list('ver/')) if (o.key === key) return o.version;
        return undefined;
      };
      assert.equal(await listed(), v1, 'the listing and stat agree');
      assert.equal((await store.stat(key))!.version, v1, 'stable while unchanged');
      await store.writeSmall(key, randomBytes(1000));
      const v2 = (await store.stat(key))!.version;
      assert.notEqual(v2, v1);
      assert.equal(await listed(), v2);
      if (store instanceof LocalWarehouseStore) {
        // An ingest rewriting the file in place (same inode, same size).
        await fs.writeFile(store.uri(key), randomBytes(1000));
        assert.notEqual((await store.stat(key))!.version, v2);
      } else {
        const dir = path.join(scratch, 'ver-dl');
        await assert.rejects(store.materialize(key, dir, v1), (err: unknown) => {
          assert.ok(err instanceof ObjectReplacedError, String(err));
          assert.ok(err.message.includes(store.uri(key)), err.message);
          return true;
        });
        assert.deepEqual(await fs.readdir(dir), [], 'no partial download is left');
        assert.equal((await fs.readFile(await store.materialize(key, dir, v2))).length, 1000);
      }
    });

    it('materialize gives a local file with exactly the bytes; an absent object is a not-found StorageError', async () => {
      const bytes = randomBytes(300_000);
      await store.writeSmall('mat/a.parquet', bytes);
      const file = await store.materialize('mat/a.parquet', path.join(scratch, `dl-${backend.name}`));
      assert.equal(sha(await fs.readFile(file)), sha(bytes));
      await assert.rejects(store.materialize('mat/absent.parquet', path.join(scratch, `dl-${backend.name}`)), (err: unknown) => {
        assert.ok(err instanceof StorageError && err.kind === 'not-found', String(err));
        assert.match((err as Error).message, /mat\/absent\.parquet/);
        return true;
      });
    });

    it('publishIfAbsent creates once, never overwrites, and consumes the local file only when it created', async () => {
      const first = randomBytes(1000);
      const second = randomBytes(1000);
      const f1 = await localFile(first);
      assert.equal(await store.publishIfAbsent(f1, 'pub/out.parquet'), 'created');
      await assert.rejects(fs.access(f1), 'the local file is consumed');
      const f2 = await localFile(second);
      assert.equal(await store.publishIfAbsent(f2, 'pub/out.parquet'), 'exists');
      await fs.access(f2);
      assert.equal(sha((await store.readSmall('pub/out.parquet'))!.body), sha(first));
    });

    it('two attempts publishing the same key at once: exactly one creates it', async () => {
      const files = await Promise.all([localFile(randomBytes(2000)), localFile(randomBytes(2000))]);
      const results = await Promise.all(files.map((f) => store.publishIfAbsent(f, 'race/out.parquet')));
      assert.deepEqual([...results].sort(), ['created', 'exists']);
    });

    it('a large output is published whole (multipart on S3) and still never overwrites', async () => {
      const big = randomBytes(11 * MIB + 12345);
      const f = await localFile(big);
      assert.equal(await store.publishIfAbsent(f, 'big/compacted_p1.parquet'), 'created');
      const back = await store.materialize('big/compacted_p1.parquet', path.join(scratch, `big-${backend.name}`));
      assert.equal(sha(await fs.readFile(back)), sha(big));
      const f2 = await localFile(randomBytes(11 * MIB));
      assert.equal(await store.publishIfAbsent(f2, 'big/compacted_p1.parquet'), 'exists');
      assert.equal((await store.stat('big/compacted_p1.parquet'))!.size, big.length);
    });

    it('readRange returns bytes [start, end) and a short read at the end', async () => {
      const bytes = randomBytes(5000);
      await store.writeSmall('range/a.parquet', bytes);
      assert.deepEqual(Buffer.from(await store.readRange('range/a.parquet', 4992, 5000)), bytes.subarray(4992));
      assert.deepEqual(Buffer.from(await store.readRange('range/a.parquet', 10, 20)), bytes.subarray(10, 20));
      assert.equal((await store.readRange('range/a.parquet', 4990, 6000)).length, 10);
      assert.equal((await store.readRange('range/a.parquet', 7, 7)).length, 0);
    });

    it('writeSmall: if-absent, if-version and conflicts; readSmall returns the version', async () => {
      const v1 = await store.writeSmall('small/lock.json', Buffer.from('one'), null);
      assert.notEqual(v1, 'conflict');
      assert.equal(await store.writeSmall('small/lock.json', Buffer.from('two'), null), 'conflict');
      const read = await store.readSmall('small/lock.json');
      assert.equal(read?.body.toString(), 'one');
      assert.equal(read?.version, v1);
      const v2 = await store.writeSmall('small/lock.json', Buffer.from('three'), read!.version);
      assert.notEqual(v2, 'conflict');
      assert.equal(await store.writeSmall('small/lock.json', Buffer.from('stale'), read!.version), 'conflict');
      assert.equal(await store.writeSmall('small/absent.json', Buffer.from('x'), v2 as string), 'conflict');
      assert.equal((await store.readSmall('small/lock.json'))?.body.toString(), 'three');
      assert.equal(await store.readSmall('small/absent.json'), undefined);
      await store.writeSmall('small/lock.json', Buffer.from('forced'));
      assert.equal((await store.readSmall('small/lock.json'))?.body.toString(), 'forced');
    });

    it('deleteMany removes exactly the given keys, in batches, and ignores absent ones', async () => {
      const doomed = Array.from({ length: 25 }, (_, i) => `del/grid_partition=x/year=2020/part_${i}.parquet`);
      for (const k of doomed) await store.writeSmall(k, Buffer.from(k));
      await store.writeSmall('del/grid_partition=x/year=2020/keep.parquet', Buffer.from('keep'));
      await store.deleteMany([...doomed, 'del/never-existed.parquet', doomed[0]!]);
      assert.deepEqual([...(await collect(store, 'del/')).keys()], ['del/grid_partition=x/year=2020/keep.parquet']);
      await store.deleteMany(doomed);
    });

    it('refuses keys that escape the warehouse root, before any I/O', async () => {
      for (const bad of ['../outside.parquet', '/etc/passwd', 'a/../../b.parquet', 'a/./b.parquet', 'a\\..\\b']) {
        await assert.rejects(store.readSmall(bad), /escapes/, bad);
        await assert.rejects(store.writeSmall(bad, Buffer.from('x')), /escapes/, bad);
        await assert.rejects(store.deleteMany(['fine.parquet', bad]), /escapes/, bad);
        await assert.rejects(store.materialize(bad, scratch), /escapes/, bad);
        await assert.rejects(store.publishIfAbsent(path.join(scratch, 'nothing'), bad), /escapes/, bad);
      }
    });

    it('uri names the object under the root', () => {
      assert.equal(store.uri('grid_partition=a/year=2020/x.parquet'), `${store.root}/grid_partition=a/year=2020/x.parquet`);
    });
  });
}

describe('S3 only', () => {
  it('fromUri normalizes the root; open-store dispatches s3:// to it', async () => {
    const store = await openWarehouseStore(`s3://${BUCKET}/some/prefix`);
    try {
      assert.ok(store instanceof S3WarehouseStore);
      assert.equal(store.root, `s3://${BUCKET}/some/prefix`);
      assert.equal(store.uri('k.parquet'), `s3://${BUCKET}/some/prefix/k.parquet`);
    } finally {
      await store.close();
    }
    const atRoot = await S3WarehouseStore.fromUri(`s3://${BUCKET}`);
    assert.equal(atRoot.uri('k.parquet'), `s3://${BUCKET}/k.parquet`);
    await atRoot.close();
  });

  it('a large output goes up in parts (multipart ETag) with a conditional completion', async () => {
    const store = (await backends[1]!.open()) as S3WarehouseStore;
    try {
      const f = await localFile(randomBytes(11 * MIB));
      assert.equal(await store.publishIfAbsent(f, 'mp/compacted_p.parquet'), 'created');
      const { key } = parseRootKey(store, 'mp/compacted_p.parquet');
      const head = await moto.client.send(new HeadObjectCommand({ Bucket: BUCKET, Key: key }));
      assert.match(head.ETag ?? '', /-3"$/, 'three parts of 5 MiB, 5 MiB, 1 MiB');
      const uploads = await moto.client.send(new ListMultipartUploadsCommand({ Bucket: BUCKET, Prefix: key }));
      assert.equal(uploads.Uploads?.length ?? 0, 0, 'no upload left behind, also not by the refused second publish');
    } finally {
      await store.close();
    }
  });

  it('abortIncompleteWrites aborts our own interrupted uploads and leaves a live ingest upload alone', async () => {
    const store = (await backends[1]!.open()) as S3WarehouseStore;
    try {
      const ours = parseRootKey(store, 'grid_partition=a/year=2020/compacted_plan1.parquet').key;
      const ingest = parseRootKey(store, 'grid_partition=a/year=2020/part_00009_abc.parquet').key;
      for (const Key of [ours, ingest]) {
        const up = await moto.client.send(new CreateMultipartUploadCommand({ Bucket: BUCKET, Key }));
        await moto.client.send(new UploadPartCommand({ Bucket: BUCKET, Key, UploadId: up.UploadId, PartNumber: 1, Body: Buffer.alloc(10) }));
      }
      assert.equal(await store.abortIncompleteWrites('grid_partition=a/year=2020/'), 1);
      const left = await moto.client.send(new ListMultipartUploadsCommand({ Bucket: BUCKET, Prefix: `${parseRootKey(store, '').key}/grid_partition=a/` }));
      assert.deepEqual(left.Uploads?.map((u) => u.Key), [ingest]);
    } finally {
      await store.close();
    }
  });

  describe("a transfer stopped by its signal (a cancelled bucket attempt) ends at once", () => {
    let direct: S3WarehouseStore;
    let proxy: FaultProxy;
    let store: S3WarehouseStore;
    let onRequest: (r: { method: string; key: string; query: URLSearchParams }) => void = () => undefined;
    before(async () => {
      direct = (await backends[1]!.open()) as S3WarehouseStore;
      // A download of this key gets its headers and then no byte more, for ten minutes.
      proxy = await startFaultProxy(moto.endpoint, {
        rates: { stall: 1 },
        stallMs: 600_000,
        maxConsecutive: 1_000,
        eligible: (r) => {
          onRequest(r);
          return r.method === 'GET' && r.key.endsWith('/part_stalled.parquet');
        },
      });
      const { bucket, key } = parseRootKey(direct, '');
      store = await S3WarehouseStore.fromUri(`s3://${bucket}/${key}`, { ...S3_TEST_OPTIONS, client: { endpoint: proxy.endpoint } });
    });
    after(async () => {
      await store?.close();
      await direct?.close();
      await proxy?.stop();
    });

    // Without the signal the download waits out the client's 60 s idle timeout and sends the GET again.
    it('a stalled download rejects with the reason, and sends no second request', { timeout: 50_000 }, async () => {
      const key = 'grid_partition=a/year=2020/part_stalled.parquet';
      assert.notEqual(await direct.writeSmall(key, randomBytes(4096)), 'conflict');
      const controller = new AbortController();
      const reason = new Error('stopped by the test');
      const download = store.materialize(key, path.join(scratch, 'stalled'), undefined, { signal: controller.signal });
      await waitFor('the download to stall', async () => (proxy.stats().injected.stall >= 1 ? true : undefined));
      controller.abort(reason);
      await assert.rejects(download, (err: unknown) => err === reason);
      assert.equal(proxy.stats().injected.stall, 1, 'no retry');
      assert.deepEqual(await fs.readdir(path.join(scratch, 'stalled')), [], 'the partial file is removed');
    });

    it('an upload stopped between its parts rejects with the reason and leaves no object and no incomplete upload', async () => {
      const controller = new AbortController();
      const reason = new Error('stopped by the test');
      // Stopped as the first part goes out (a multipart upload of three parts).
      onRequest = (r) => {
        if (r.method === 'PUT' && r.query.has('partNumber')) controller.abort(reason);
      };
      try {
        const file = await localFile(randomBytes(11 * MIB));
        await assert.rejects(store.publishIfAbsent(file, 'mp/compacted_stopped.parquet', { signal: controller.signal }), (err: unknown) => err === reason);
      } finally {
        onRequest = () => undefined;
      }
      assert.equal(await direct.stat('mp/compacted_stopped.parquet'), undefined, 'no object');
      const { key } = parseRootKey(direct, 'mp/compacted_stopped.parquet');
      const uploads = await moto.client.send(new ListMultipartUploadsCommand({ Bucket: BUCKET, Prefix: key }));
      assert.equal(uploads.Uploads?.length ?? 0, 0, 'the multipart upload was aborted');
    });
  });

  it('a bucket that does not exist fails fast with a not-found error naming it', async () => {
    const store = await S3WarehouseStore.fromUri('s3://ec-no-such-bucket/wh', S3_TEST_OPTIONS);
    try {
      const started = Date.now();
      await assert.rejects(collect(store, ''), (err: unknown) => err instanceof StorageError && err.kind === 'not-found' && /s3:\/\/ec-no-such-bucket\/wh/.test(err.message));
      // The first object asked for may be a plan's manifest: the message leads with the bucket.
      await assert.rejects(store.materialize('grid_partition=a/year=2020/p.parquet', scratch), (err: unknown) =>
        err instanceof StorageError &&
        err.kind === 'not-found' &&
        /^bucket s3:\/\/ec-no-such-bucket does not exist \(NoSuchBucket.*asked for s3:\/\/ec-no-such-bucket\/wh\/grid_partition=a\/year=2020\/p\.parquet\)$/.test(err.message),
      );
      await assert.rejects(readPlanManifest(store, 'p1'), (err: unknown) => err instanceof StorageError && /^bucket s3:\/\/ec-no-such-bucket does not exist /.test(err.message));
      await assert.rejects(store.stat('x.parquet'), (err: unknown) => err instanceof StorageError && err.kind === 'not-found');
      assert.ok(Date.now() - started < 3000, 'not retried');
    } finally {
      await store.close();
    }
  });

  it('with no credentials anywhere in the environment: a no-credentials error naming the object, retried by the activity twice, then permanent', async () => {
    // The SDK's real default chain, with nothing to find: no variables, no files, no metadata service.
    const names = ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN', 'AWS_PROFILE', 'AWS_SHARED_CREDENTIALS_FILE', 'AWS_CONFIG_FILE',
      'AWS_EC2_METADATA_DISABLED', 'AWS_CONTAINER_CREDENTIALS_RELATIVE_URI', 'AWS_CONTAINER_CREDENTIALS_FULL_URI', 'AWS_WEB_IDENTITY_TOKEN_FILE'];
    const saved = new Map(names.map((n) => [n, process.env[n]]));
    for (const n of names) delete process.env[n];
    Object.assign(process.env, { AWS_SHARED_CREDENTIALS_FILE: path.join(scratch, 'no-credentials'), AWS_CONFIG_FILE: path.join(scratch, 'no-config'), AWS_EC2_METADATA_DISABLED: 'true' });
    let err: unknown;
    try {
      const store = await S3WarehouseStore.fromUri(`s3://${BUCKET}/no-credentials/wh`, S3_TEST_OPTIONS);
      try {
        err = await store.stat('grid_partition=a/year=2020/p.parquet').then(() => assert.fail('should find no credentials'), (e: unknown) => e);
      } finally {
        await store.close();
      }
    } finally {
      for (const [n, v] of saved) if (v === undefined) delete process.env[n]; else process.env[n] = v;
    }
    assert.ok(err instanceof StorageError && err.kind === 'no-credentials', String(err));
    assert.equal(
      err.message,
      `no AWS credentials found for s3://${BUCKET}/no-credentials/wh/grid_partition=a/year=2020/p.parquet by the AWS SDK's default chain in process ${process.pid} on ${os.hostname()} ` +
        `(a worker's environment for a compaction, the command's own for verify)`,
    );
    const failures = [];
    for (const attempt of [1, 2, CREDENTIAL_ATTEMPTS]) failures.push(await new MockActivityEnvironment({ attempt }).run(async () => toActivityFailure(err)));
    assert.deepEqual(failures.map((f) => f instanceof ApplicationFailure && [f.type, f.nonRetryable]), [
      [FailureTypes.noCredentials, false],
      [FailureTypes.noCredentials, false],
      [FailureTypes.noCredentials, true],
    ]);
  });

  describe('denied requests (through a proxy answering 403)', () => {
    let proxy: FaultProxy;
    let store: S3WarehouseStore;
    let direct: WarehouseStore;
    before(async () => {
      direct = await backends[1]!.open();
      await direct.writeSmall('grid_partition=a/year=2020/secret.parquet', Buffer.from('data'));
      await direct.writeSmall('grid_partition=a/year=2020/open.parquet', Buffer.from('data'));
      proxy = await startFaultProxy(moto.endpoint, { deny: (r) => r.key.endsWith('secret.parquet') });
      const { bucket, key } = parseRootKey(direct as S3WarehouseStore, '');
      store = await S3WarehouseStore.fromUri(`s3://${bucket}/${key}`, { ...S3_TEST_OPTIONS, client: { endpoint: proxy.endpoint } });
    });
    after(async () => {
      await store?.close();
      await direct?.close();
      await proxy?.stop();
    });

    it('AccessDenied fails fast (one request, no retries) with a denied error naming s3://bucket/key', async () => {
      const before = proxy.stats().injected.denied;
      await assert.rejects(store.materialize('grid_partition=a/year=2020/secret.parquet', scratch), (err: unknown) => {
        assert.ok(err instanceof StorageError && err.kind === 'denied', String(err));
        assert.match(err.message, new RegExp(`s3://${BUCKET}/.*/grid_partition=a/year=2020/secret\\.parquet`));
        assert.match(err.message, /AccessDenied/);
        return true;
      });
      assert.equal(proxy.stats().injected.denied - before, 1, 'a permanent error is not retried');
      proxy.setPlan({ deny: (r) => r.method === 'POST' && r.query.has('delete') });
      await assert.rejects(store.deleteMany(['grid_partition=a/year=2020/secret.parquet']), (err: unknown) => {
        assert.ok(err instanceof StorageError && err.kind === 'denied', String(err));
        assert.match(err.message, /grid_partition=a\/year=2020\/secret\.parquet/);
        return true;
      });
      proxy.setPlan({ deny: (r) => r.key.endsWith('secret.parquet') });
      assert.equal((await store.readSmall('grid_partition=a/year=2020/open.parquet'))?.body.toString(), 'data', 'other objects still work');
      assert.ok(await direct.stat('grid_partition=a/year=2020/secret.parquet'), 'nothing was deleted');
    });

    it('InvalidAccessKeyId (whose S3 body names the key id) leaves no credential in the error', async () => {
      proxy.setPlan({ deny: (r) => r.key.endsWith('secret.parquet'), denyCode: 'InvalidAccessKeyId' });
      const err = await store.readSmall('grid_partition=a/year=2020/secret.parquet').then(
        () => assert.fail('should be denied'),
        (e: unknown) => e,
      );
      assert.ok(err instanceof StorageError && err.kind === 'denied');
      const text = `${err.message}\n${err.stack}\n${JSON.stringify(err)}`;
      assert.ok(!text.includes(moto.accessKeyId), 'no access key id');
      assert.ok(!text.includes(moto.secretAccessKey), 'no secret');
    });

    it('InvalidObjectState (an input archived to Glacier) fails fast naming the object and the archive, not the credentials', async () => {
      proxy.setPlan({ deny: (r) => r.key.endsWith('secret.parquet'), denyCode: 'InvalidObjectState' });
      await assert.rejects(store.materialize('grid_partition=a/year=2020/secret.parquet', scratch), (err: unknown) => {
        assert.ok(err instanceof StorageError && err.kind === 'denied', String(err));
        assert.match(err.message, /^s3:\/\/.*grid_partition=a\/year=2020\/secret\.parquet is in an archive storage class \(InvalidObjectState, HTTP 403\); restore it/);
        return true;
      });
    });

    /** The error of reading the denied object through the proxy by a store whose credentials carry `token`. */
    async function refusedWithSessionToken(token: string): Promise<unknown> {
      const saved = process.env.AWS_SESSION_TOKEN;
      process.env.AWS_SESSION_TOKEN = token;
      try {
        const { bucket, key } = parseRootKey(direct as S3WarehouseStore, '');
        const viaProxy = await S3WarehouseStore.fromUri(`s3://${bucket}/${key}`, { ...S3_TEST_OPTIONS, client: { endpoint: proxy.endpoint } });
        try {
          return await viaProxy.readSmall('grid_partition=a/year=2020/secret.parquet').then(() => assert.fail('should be refused'), (e: unknown) => e);
        } finally {
          await viaProxy.close();
        }
      } finally {
        if (saved === undefined) delete process.env.AWS_SESSION_TOKEN;
        else process.env.AWS_SESSION_TOKEN = saved;
      }
    }

    it('ExpiredToken (whose S3 body echoes the session token) is a credentials failure, retried a few attempts, and nothing logged holds the token', async () => {
      const token = 'IQoJb3JpZ2luX2VjEXAMPLEsessionTOKEN0123456789';
      proxy.setPlan({ deny: (r) => r.key.endsWith('secret.parquet'), denyCode: 'ExpiredToken' });
      const err = await refusedWithSessionToken(token);
      assert.ok(err instanceof StorageError && err.kind === 'no-credentials', String(err));
      assert.match(err.message, /^the AWS credentials for s3:\/\/.*secret\.parquet have expired \(ExpiredToken, HTTP 400\); check how the session credentials of the process that asked \(a worker's for a compaction, the command's own for verify\) are refreshed/);
      const failure = await new MockActivityEnvironment({ attempt: 1 }).run(async () => toActivityFailure(err));
      assert.ok(failure instanceof ApplicationFailure && failure.type === FailureTypes.noCredentials && !failure.nonRetryable);
      // What the worker's logger writes for a failed activity: the error with every field.
      assert.ok(!format({ error: failure }).includes(token) && !format(err).includes(token), 'the session token is never logged');
    });

    it("an error of a code no AWS service uses, whose message echoes the request's headers, leaves the server's message out: no key id, signature or session token", async () => {
      const token = 'ECHOED-SESSION-TOKEN-0123456789';
      proxy.setPlan({ deny: (r) => r.key.endsWith('secret.parquet'), denyCode: 'EchoedRequest' });
      const err = await refusedWithSessionToken(token);
      assert.match(String((err as Error).message), /x-amz-security-token/, 'the server did echo the request');
      const failure = await new MockActivityEnvironment({ attempt: 1 }).run(async () => toActivityFailure(err));
      assert.ok(failure instanceof Error);
      assert.match(failure.message, /^the storage service answered with an error \(EchoedRequest, HTTP 400, request id [\w-]+\)$/);
      const logged = format({ error: failure });
      for (const secret of [token, moto.accessKeyId, 'Signature=']) assert.ok(!logged.includes(secret), secret);
    });

    it('an S3 error of a code the store does not classify reaches the worker log without the request details S3 echoed', async () => {
      const secret = 'SIGNING-MATERIAL-0123456789';
      const raw = Object.assign(new Error('Invalid argument.'), { name: 'InvalidArgument', $metadata: { httpStatusCode: 400 }, StringToSign: secret });
      const logged = await new MockActivityEnvironment({ attempt: 1 }).run(async () => toActivityFailure(raw));
      assert.ok(logged instanceof Error);
      assert.equal(logged.message, 'the storage service answered with an error (InvalidArgument, HTTP 400)');
      assert.equal(logged.name, 'InvalidArgument', 'still a plain error: left to the retry policy');
      assert.ok(!format({ error: logged }).includes(secret));
    });
  });
});

describe('a storage service that cannot be reached', () => {
  it('fails naming the connection error and the address, not as an answer of the service', async () => {
    // A port nothing listens on: taken, then given back.
    const port = await new Promise<number>((resolve) => {
      const server = net.createServer().listen(0, '127.0.0.1', () => {
        const { port: taken } = server.address() as net.AddressInfo;
        server.close(() => resolve(taken));
      });
    });
    const store = await S3WarehouseStore.fromUri('s3://nowhere/wh', { ...S3_TEST_OPTIONS, client: { endpoint: `http://127.0.0.1:${port}` } });
    try {
      const err = await store.readSmall('_earthcatalog_compaction/plans/x/manifest.json').then(() => assert.fail('should fail'), (e: unknown) => e);
      const failure = await new MockActivityEnvironment({ attempt: 1 }).run(async () => toActivityFailure(err));
      assert.ok(failure instanceof Error);
      assert.equal(failure.message, `the connection to the storage service failed: connect ECONNREFUSED 127.0.0.1:${port}`);
    } finally {
      await store.close();
    }
  });
});

describe('conditional writes whose answer is lost', () => {
  it('a plan whose manifest landed but whose answer was lost is recognised by its bytes (SSE-KMS ETags are no MD5s) and keeps its pages', async () => {
    const direct = await backends[1]!.open();
    const { bucket, key } = parseRootKey(direct as S3WarehouseStore, '');
    for (const name of ['part_1', 'part_2']) await direct.writeSmall(`grid_partition=a/year=2020/${name}.parquet`, Buffer.from(name));
    let lost = 0;
    const proxy = await startFaultProxy(moto.endpoint, {
      loseResponse: (r) => r.method === 'PUT' && r.key.endsWith('/manifest.json') && lost++ === 0,
      opaqueHeadEtags: true,
    });
    const store = await S3WarehouseStore.fromUri(`s3://${bucket}/${key}`, { ...S3_TEST_OPTIONS, client: { endpoint: proxy.endpoint } });
    try {
      const summary = await planBuckets(store, { warehouse: store.root, planId: 'lostanswer', threshold: 2, dryRun: false }, () => undefined);
      assert.equal(lost, 2, 'the first manifest write landed without an answer and was sent again');
      assert.deepEqual([summary.bucketsToCompact, summary.pages], [1, 1]);
      const page = await readPlanPage(direct, 'lostanswer', 0);
      assert.deepEqual(page.map((t) => t.inputs.length), [2], "the plan's page is still there");
      // An empty version is no version: refused rather than sent as an unconditional write.
      await assert.rejects(direct.writeSmall('grid_partition=a/year=2020/part_1.parquet', Buffer.from('x'), ''), /only if unchanged: its version \(ETag\) is unknown/);
      assert.equal((await direct.readSmall('grid_partition=a/year=2020/part_1.parquet'))?.body.toString(), 'part_1');
    } finally {
      await store.close();
      await direct.close();
      await proxy.stop();
    }
  });
});

/** The full object key of a warehouse key of `store` (test inspection through the raw client). */
function parseRootKey(store: S3WarehouseStore, key: string): { bucket: string; key: string } {
  const uri = key ? store.uri(key) : store.root;
  const m = /^s3:\/\/([^/]+)\/?(.*)$/.exec(uri)!;
  return { bucket: m[1]!, key: m[2]! };
}

describe('compactBucket, the core, on both backends', () => {
  let generated: string;
  let oracle: Awaited<ReturnType<typeof expectedBucketRows>>;
  let bucketKeys: string[];
  before(async () => {
    generated = await fs.mkdtemp(path.join(scratch, 'gen-'));
    await generateSampleWarehouse(generated, { cells: ['81283ffffffffff'], years: [2020], partsPerBucket: [3, 3], rowsPerPart: 40, seed: 11, schemaDrift: true });
    const buckets = byBucket(await listFiles(generated));
    assert.equal(buckets.size, 1);
    bucketKeys = [...buckets.values()][0]!;
    oracle = await expectedBucketRows(bucketKeys.map((k) => path.join(generated, k)));
  });

  for (const backend of backends) {
    it(`${backend.name}: output equals the oracle, inputs deleted, a new ingest file kept, nothing else left`, async () => {
      let store: WarehouseStore;
      if (backend.name === 'local') {
        const root = await fs.mkdtemp(path.join(scratch, 'core-local-'));
        await fs.cp(generated, root, { recursive: true });
        store = new LocalWarehouseStore(root);
      } else {
        store = await backend.open();
        const { bucket, key } = parseRootKey(store as S3WarehouseStore, '');
        await uploadDirectory(moto.client, bucket, key, generated);
      }
      try {
        const sizes = await collect(store, '');
        const planId = `core${backend.name}`;
        const req = {
          warehouse: store.root,
          planId,
          bucket: { cell: '81283ffffffffff', year: 2020 },
          inputs: bucketKeys.map((key) => ({ key, size: sizes.get(key)! })),
        };
        // A file ingested after the plan: never an input, never deleted.
        await store.writeSmall('grid_partition=81283ffffffffff/year=2020/part_99999_late.parquet', await fs.readFile(path.join(generated, bucketKeys[0]!)));
        const result = await compactBucket(store, req, {
          scratchDir: path.join(scratch, `core-${backend.name}-scratch`),
          memoryLimitMb: 256,
          threads: 1,
          heartbeat: () => undefined,
        });
        assert.equal(result.outcome, 'compacted');
        assert.equal(result.rowsOut, oracle.length);
        const left = [...(await collect(store, 'grid_partition=81283ffffffffff/')).keys()].sort();
        assert.deepEqual(left, [`grid_partition=81283ffffffffff/year=2020/compacted_${planId}.parquet`, 'grid_partition=81283ffffffffff/year=2020/part_99999_late.parquet']);
        const out = await store.materialize(result.outputKey, path.join(scratch, `core-${backend.name}-check`));
        assertSameRows(await readOutputRows(out), oracle, `${backend.name} output`);
        if (backend.name === 's3') {
          const { bucket, key } = parseRootKey(store as S3WarehouseStore, '');
          const raw = await listKeys(moto.client, bucket, key);
          assert.ok(raw.every((k) => k.endsWith('.parquet')), `no temporary objects: ${raw.join(', ')}`);
          const obj = await moto.client.send(new HeadObjectCommand({ Bucket: bucket, Key: `${key}/${result.outputKey}` }));
          assert.equal(obj.ContentLength, result.bytesOut);
        }
      } finally {
        await store.close();
      }
    });
  }

  it('s3: refusals after publishing: a refused sweep leaves the bucket compacted (a warning); refused input deletes fail it saying the output is published', async () => {
    const direct = await backends[1]!.open();
    const { bucket, key } = parseRootKey(direct as S3WarehouseStore, '');
    await uploadDirectory(moto.client, bucket, key, generated);
    // A policy without s3:ListBucketMultipartUploads, then one without s3:DeleteObject.
    const proxy = await startFaultProxy(moto.endpoint, { deny: (r) => r.method === 'GET' && r.query.has('uploads') });
    const store = await S3WarehouseStore.fromUri(`s3://${bucket}/${key}`, { ...S3_TEST_OPTIONS, client: { endpoint: proxy.endpoint } });
    try {
      const sizes = await collect(direct, '');
      const request = (planId: string, keys: readonly string[]) => ({
        warehouse: store.root,
        planId,
        bucket: { cell: '81283ffffffffff', year: 2020 },
        inputs: keys.map((k) => ({ key: k, size: sizes.get(k)! })),
      });
      const warnings: string[] = [];
      const opts = { scratchDir: path.join(scratch, 'refused-scratch'), memoryLimitMb: 256, threads: 1, heartbeat: () => undefined, warn: (m: string) => void warnings.push(m) };
      const result = await compactBucket(store, request('sweepdenied', bucketKeys), opts);
      assert.equal(result.outcome, 'compacted');
      assert.deepEqual([...(await collect(direct, 'grid_partition=81283ffffffffff/')).keys()], [`grid_partition=81283ffffffffff/year=2020/${path.basename(result.outputKey)}`]);
      assert.equal(warnings.length, 1);
      assert.match(warnings[0]!, /^bucket grid_partition=81283ffffffffff\/year=2020: compacted, but sweeping its leftovers was refused \(they wait for the next compaction of the bucket\): access to s3:\/\/.* denied/);

      // New ingest beside the output, compacted by a role that may not delete.
      await uploadDirectory(moto.client, bucket, key, generated);
      proxy.setPlan({ deny: (r) => r.method === 'POST' && r.query.has('delete') });
      const inputs = [result.outputKey, ...bucketKeys];
      const sizesNow = await collect(direct, '');
      const req = { ...request('deletedenied', []), inputs: inputs.map((k) => ({ key: k, size: sizesNow.get(k)! })) };
      const err = await compactBucket(store, req, opts).then(() => assert.fail('the deletes are refused'), (e: unknown) => e);
      assert.ok(err instanceof StorageError && err.kind === 'denied', String(err));
      assert.match(err.message, /^bucket grid_partition=81283ffffffffff\/year=2020: the compacted output grid_partition=81283ffffffffff\/year=2020\/compacted_deletedenied\.parquet is published, but deleting its inputs was refused after 0 of 4; the rest stay/);
      const left = [...(await collect(direct, 'grid_partition=81283ffffffffff/')).keys()].sort();
      assert.deepEqual(left, [...inputs, 'grid_partition=81283ffffffffff/year=2020/compacted_deletedenied.parquet'].sort(), 'every input kept beside the new output');

      // Deletes that fail for a reason worth retrying (a 500 each time, or a key S3's XML cannot carry) until
      // the attempts are spent: the failure says the output is published too, and stays retryable.
      proxy.setPlan({ rates: { error500: 1 }, maxConsecutive: 1_000_000, eligible: (r) => r.method === 'POST' && r.query.has('delete') });
      const sizesLeft = await collect(direct, '');
      const retried = { ...request('deletefails', []), inputs: left.map((k) => ({ key: k, size: sizesLeft.get(k)! })) };
      const failed = await compactBucket(store, retried, opts).then(() => assert.fail('the deletes fail'), (e: unknown) => e);
      assert.ok(failed instanceof Error && !(failed instanceof StorageError), String(failed));
      assert.match(failed.message, /^bucket grid_partition=81283ffffffffff\/year=2020: the compacted output \S+compacted_deletefails\.parquet is published, but deleting its inputs failed after 0 of 5; the rest stay/);
    } finally {
      await store.close();
      await direct.close();
      await proxy.stop();
    }
  });

  it("s3: a damaged input fails its bucket naming the object's key, not the worker's local copy of it; nothing is deleted", async () => {
    const store = await backends[1]!.open();
    const { bucket, key } = parseRootKey(store as S3WarehouseStore, '');
    await uploadDirectory(moto.client, bucket, key, generated);
    try {
      const truncated = bucketKeys[1]!;
      const bytes = await fs.readFile(path.join(generated, truncated));
      await store.writeSmall(truncated, bytes.subarray(0, bytes.length - 100));
      const sizes = await collect(store, '');
      const req = { warehouse: store.root, planId: 'damaged', bucket: { cell: '81283ffffffffff', year: 2020 }, inputs: bucketKeys.map((k) => ({ key: k, size: sizes.get(k)! })) };
      const scratchDir = path.join(scratch, 'damaged-scratch');
      await assert.rejects(compactBucket(store, req, { scratchDir, memoryLimitMb: 256, threads: 1, heartbeat: () => undefined }), (err: unknown) => {
        assert.match(String(err), new RegExp(`input ${truncated.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} is not a readable Parquet file: `));
        assert.ok(!String(err).includes(scratchDir), `no scratch path: ${String(err)}`);
        return true;
      });
      assert.deepEqual([...(await collect(store, 'grid_partition=81283ffffffffff/')).keys()].sort(), [...bucketKeys].sort(), 'nothing deleted');
    } finally {
      await store.close();
    }
  });

  it('s3: an input uploaded again with other bytes after its bucket was compacted stays for the next run; the unchanged ones are deleted', async () => {
    const store = await backends[1]!.open();
    const { bucket, key } = parseRootKey(store as S3WarehouseStore, '');
    await uploadDirectory(moto.client, bucket, key, generated);
    try {
      const sizes = await collect(store, '');
      const req = {
        warehouse: store.root,
        planId: 'rewrite',
        bucket: { cell: '81283ffffffffff', year: 2020 },
        inputs: bucketKeys.map((k) => ({ key: k, size: sizes.get(k)! })),
      };
      const opts = { scratchDir: path.join(scratch, 'rewrite-scratch'), memoryLimitMb: 256, threads: 1, heartbeat: () => undefined };
      const first = await compactBucket(store, req, opts);
      // As after an attempt that died between publishing and deleting: the same bytes uploaded again have
      // the same ETag, so they are the inputs the output was built from. One of them has new bytes.
      await uploadDirectory(moto.client, bucket, key, generated);
      const rewritten = bucketKeys[1]!;
      const other = await fs.readFile(path.join(generated, bucketKeys[0]!));
      await store.writeSmall(rewritten, other);
      const again = await compactBucket(store, req, opts);
      assert.equal(again.outputKey, first.outputKey);
      assert.equal(again.inputsRewritten, 1);
      assert.equal(again.filesIn, bucketKeys.length - 1);
      const left = [...(await collect(store, 'grid_partition=81283ffffffffff/')).keys()].sort();
      assert.deepEqual(left, [first.outputKey, rewritten].sort());
      assert.equal(sha(await fs.readFile(await store.materialize(rewritten, path.join(scratch, 'rewrite-check')))), sha(other), 'the new bytes are intact');
    } finally {
      await store.close();
    }
  });
});
