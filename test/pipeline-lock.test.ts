/**
 * `--use-lock`'s lock object on a real directory: the shape earthcatalog's Python `S3Lock` writes and
 * reads (`owner`, `pid`, `hostname`, `acquired`, `ttl_hours`), when it is created, honoured, taken over
 * (stale, or owned by a workflow of ours that has closed) and released (only by its owner); and Python
 * itself, reading ours the way the pipeline does, finds it held.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { LocalWarehouseStore } from '../activities/storage/local-store';
import { acquirePipelineLock, inspectPipelineLock, PipelineLockBusyError, releasePipelineLock } from '../activities/locking/pipeline-lock';
import { FailureTypes, parseCompactionInput, pipelineLockLocation } from '../workflows/contract';
import { resumeCommand } from '../client/commands/status';
import { MockActivityEnvironment } from '@temporalio/testing';
import { DefaultLogger } from '@temporalio/worker';
import { createActivities } from '../activities';
import { ApplicationFailure } from '@temporalio/common';
import { makeTempDir } from './helpers/temp-dirs';

const execFileP = promisify(execFile);
const running = async () => undefined;
const KEY = '.lock';

async function storeWithLock(body?: string): Promise<{ store: LocalWarehouseStore; file: string }> {
  const root = await makeTempDir('ec-pylock-unit');
  const file = path.join(root, KEY);
  if (body !== undefined) await fs.writeFile(file, body);
  return { store: new LocalWarehouseStore(root), file };
}

/** What the Python pipeline's S3Lock writes: an aware UTC time from isoformat(), microseconds included. */
function pythonLock(owner: string, acquiredMsAgo: number, ttlHours?: number): string {
  const acquired = new Date(Date.now() - acquiredMsAgo).toISOString().replace(/\.(\d{3})Z$/, '.$1456+00:00');
  return JSON.stringify({ owner, pid: 4242, hostname: 'py-host', acquired, ...(ttlHours === undefined ? {} : { ttl_hours: ttlHours }) });
}

/** What an earlier release of this tool wrote. */
function earlierReleaseLock(owner: string, expiresInMs: number): string {
  return JSON.stringify({ owner, acquired_at: new Date().toISOString(), expires_at: new Date(Date.now() + expiresInMs).toISOString() });
}

async function bodyOf(file: string): Promise<Record<string, unknown>> {
  return JSON.parse(await fs.readFile(file, 'utf8')) as Record<string, unknown>;
}

/**
 * The decision of the pipeline's S3Lock.acquire on an object it finds (written here for the test, from
 * its documented behaviour): stale once `ttl_hours` (default 12) have passed since `acquired`.
 */
const PYTHON_DECISION = `
import json, sys
from datetime import datetime, timedelta, timezone
existing = json.load(open(sys.argv[1]))
age = datetime.now(timezone.utc) - datetime.fromisoformat(existing["acquired"])
ttl = timedelta(hours=existing.get("ttl_hours", 12))
print(("stale" if age >= ttl else "held") + f" by {existing['owner']} on {existing['hostname']}")
`;

describe('pipeline lock object', () => {
  it("is created when absent in the Python pipeline's shape, which Python reads as held; its owner takes it again without a note", async () => {
    const { store, file } = await storeWithLock();
    assert.equal(await acquirePipelineLock(store, 'wf-a', running, KEY), undefined);
    const body = await bodyOf(file);
    assert.deepEqual(Object.keys(body).sort(), ['acquired', 'expires_at', 'hostname', 'owner', 'pid', 'ttl_hours']);
    assert.deepEqual([body.owner, body.pid, body.hostname, body.ttl_hours], ['wf-a', process.pid, os.hostname(), 24]);
    assert.match(String(body.acquired), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00$/);
    const { stdout } = await execFileP('python3', ['-c', PYTHON_DECISION, file]);
    assert.equal(stdout.trim(), `held by wf-a on ${os.hostname()}`);
    assert.equal(await acquirePipelineLock(store, 'wf-a', running, KEY), undefined);
  });

  it('taken again by its owner, it is renewed: acquired and the expiry move on', async () => {
    const { store, file } = await storeWithLock();
    await acquirePipelineLock(store, 'wf-a', running, KEY);
    const first = await bodyOf(file);
    await new Promise((r) => setTimeout(r, 20));
    await acquirePipelineLock(store, 'wf-a', running, KEY);
    const renewed = await bodyOf(file);
    assert.equal(renewed.owner, 'wf-a');
    assert.ok(Date.parse(String(renewed.acquired)) > Date.parse(String(first.acquired)), 'the Python pipeline counts its TTL from acquired');
    assert.ok(Date.parse(String(renewed.expires_at)) > Date.parse(String(first.expires_at)));
  });

  it("honours a live owner: the Python pipeline's (its shape, its default TTL), an earlier release's, or a running workflow's", async () => {
    for (const [body, until] of [
      [pythonLock('incremental', 3600_000), 11],
      [pythonLock('backfill-v2', 3600_000, 2), 1],
      [earlierReleaseLock('python-ingest', 3600_000), 1],
    ] as const) {
      const { store, file } = await storeWithLock(body);
      const { owner, hostname } = JSON.parse(body) as { owner: string; hostname?: string };
      const asked: string[] = [];
      await assert.rejects(acquirePipelineLock(store, 'wf-b', async (o) => void asked.push(o), KEY), (err: Error) => {
        assert.ok(err instanceof PipelineLockBusyError, err.message);
        const m = new RegExp(`^pipeline lock .*/\\.lock is held by ${owner}${hostname ? ` on ${hostname}` : ''} until (\\S+)$`).exec(err.message);
        assert.ok(m, err.message);
        const hoursLeft = (Date.parse(m[1]!) - Date.now()) / 3600_000;
        assert.ok(Math.abs(hoursLeft - until) < 0.1, `${owner}: ${hoursLeft} h left, expected ${until}`);
        return true;
      });
      assert.deepEqual(asked, [owner], 'the owner was looked up');
      assert.equal(await fs.readFile(file, 'utf8'), body, 'untouched');
    }
  });

  it('honours an object it cannot read (it may be a pipeline it does not know), saying how to clear it', async () => {
    for (const body of ['not json', '{"owner": "x"}', '{"acquired": "2026-01-01T00:00:00+00:00"}', '[]']) {
      const { store, file } = await storeWithLock(body);
      await assert.rejects(
        acquirePipelineLock(store, 'wf-c', running, KEY),
        (err: Error) => err instanceof PipelineLockBusyError && /is not a lock object this tool can read .*: it is honoured as held; if no pipeline holds it, delete it$/.test(err.message),
      );
      assert.equal(await fs.readFile(file, 'utf8'), body, 'untouched');
    }
  });

  it('takes over a stale or an abandoned one, saying whose it was and why', async () => {
    for (const [body, whose] of [
      [pythonLock('incremental', 13 * 3600_000), 'incremental on py-host'],
      [pythonLock('incremental', 3 * 3600_000, 2), 'incremental on py-host'],
      [earlierReleaseLock('python-ingest', -1000), 'python-ingest'],
    ] as const) {
      const stale = await storeWithLock(body);
      assert.match((await acquirePipelineLock(stale.store, 'wf-c', running, KEY)) ?? '', new RegExp(`^took over pipeline lock .*/\\.lock from ${whose}: expired at `));
      assert.equal((await bodyOf(stale.file)).owner, 'wf-c');
    }
    const abandoned = await storeWithLock(pythonLock('wf-terminated', 60_000, 24));
    const note = await acquirePipelineLock(abandoned.store, 'wf-c', async (owner) => (owner === 'wf-terminated' ? 'TERMINATED' : undefined), KEY);
    assert.match(note ?? '', /from wf-terminated on py-host: its owner, workflow wf-terminated, is terminated/);
    assert.equal((await bodyOf(abandoned.file)).owner, 'wf-c');
  });

  it("is only looked at by a dry run, which says what a run would find: held (by whom, until when), to be taken over, unreadable, or nothing when it would take it at once", async () => {
    const cases: [string | undefined, RegExp | undefined][] = [
      [undefined, undefined],
      [pythonLock('wf-dry', 60_000), undefined],
      [pythonLock('incremental', 3600_000), /^pipeline lock .*\/\.lock is held by incremental on py-host until \S+: a run would wait for it \(about 5 minutes\), then fail$/],
      [pythonLock('incremental', 13 * 3600_000), /^a run would take over pipeline lock .*\/\.lock from incremental on py-host: expired at \S+$/],
      ['not json', /^pipeline lock .*\/\.lock is not a lock object this tool can read: a run would honour it as held and fail; if no pipeline holds it, delete it$/],
    ];
    for (const [body, expected] of cases) {
      const { store, file } = await storeWithLock(body);
      const said = await inspectPipelineLock(store, 'wf-dry', running, KEY, async () => false);
      if (expected) assert.match(said ?? '', expected, body);
      else assert.equal(said, undefined, body);
      if (body !== undefined) assert.equal(await fs.readFile(file, 'utf8'), body, 'untouched');
      else await assert.rejects(fs.access(file), 'nothing created');
    }
    // Held by a compaction running now: a run of the same warehouse waits for it (the warehouse lock) rather than failing.
    const { store } = await storeWithLock(pythonLock('compact-wh-abc', 60_000, 24));
    assert.match(
      (await inspectPipelineLock(store, 'wf-dry', running, KEY, async (o) => o === 'compact-wh-abc')) ?? '',
      /^pipeline lock .*\/\.lock is held by compact-wh-abc on py-host until \S+, a compaction running now: a run of the same warehouse waits for it to end, one of another warehouse would wait for the object \(about 5 minutes\), then fail$/,
    );
  });

  it("a dry run's look at an object it cannot read says so instead of failing the dry run after its plan", async () => {
    const warehouse = await makeTempDir('ec-pylock-unreadable');
    // A folder where the object should be: reading it fails (EISDIR), as a role without s3:ListBucket gets 403.
    await fs.mkdir(path.join(warehouse, KEY));
    const activities = createActivities({ scratchDir: await makeTempDir('ec-pylock-scratch'), memoryBudgetMb: 256, duckdbThreads: 1 });
    const said: string | undefined = await new MockActivityEnvironment().run(activities.inspectPipelineLock, { warehouse, owner: 'wf-dry', lock: path.join(warehouse, KEY) });
    assert.match(said ?? '', /^the pipeline lock object .*\/\.lock could not be read \(.*EISDIR.*\): a run takes it by a conditional write, which may still succeed$/);
  });

  it('is released by its owner only', async () => {
    const { store, file } = await storeWithLock(pythonLock('incremental', 0));
    await releasePipelineLock(store, 'wf-d', KEY);
    assert.equal((await bodyOf(file)).owner, 'incremental', "someone else's lock stays");
    await acquirePipelineLock(store, 'wf-e', async () => 'TERMINATED', KEY);
    await releasePipelineLock(store, 'wf-e', KEY);
    await assert.rejects(fs.access(file), 'its own is removed');
    await releasePipelineLock(store, 'wf-e', KEY);
  });

  it("the release activity also removes the run's object where earlier releases kept it (a run upgraded while it held one), never another owner's", async () => {
    const warehouse = await makeTempDir('ec-pylock-upgraded');
    const earlier = path.join(warehouse, '_lock', 'compaction.lock');
    await fs.mkdir(path.dirname(earlier), { recursive: true });
    const activities = createActivities({ scratchDir: await makeTempDir('ec-pylock-scratch'), memoryBudgetMb: 256, duckdbThreads: 1 });
    const env = new MockActivityEnvironment();
    await fs.writeFile(earlier, earlierReleaseLock('wf-upgraded', 3600_000));
    await env.run(activities.acquirePipelineLock, { warehouse, owner: 'wf-upgraded' });
    await env.run(activities.releasePipelineLock, { warehouse, owner: 'wf-upgraded', lock: path.join(warehouse, KEY) });
    await assert.rejects(fs.access(earlier), 'the earlier place is released');
    await assert.rejects(fs.access(path.join(warehouse, KEY)), 'so is the new one (no lock given: the default place)');
    await fs.writeFile(earlier, earlierReleaseLock('someone-else', 3600_000));
    await env.run(activities.releasePipelineLock, { warehouse, owner: 'wf-upgraded' });
    assert.equal((await bodyOf(earlier)).owner, 'someone-else');
    // Honoured as held (an object it cannot read; a live owner is looked up on the server, which this environment
    // lacks): retried (about 5 minutes), as a failure of its own type, which the worker logs as one line.
    await fs.writeFile(path.join(warehouse, KEY), 'not json');
    await assert.rejects(env.run(activities.acquirePipelineLock, { warehouse, owner: 'wf-upgraded', lock: path.join(warehouse, KEY) }), (err: Error) => {
      assert.ok(err instanceof ApplicationFailure && !err.nonRetryable && err.type === FailureTypes.pipelineLockHeld, String(err));
      assert.match(err.message, /^pipeline lock .*\/\.lock is not a lock object this tool can read/);
      return true;
    });
    await fs.rm(path.join(warehouse, KEY));
    // A folder that is not there (a share not mounted) is not made: a lock there would be one no pipeline sees.
    const unmounted = path.join(warehouse, 'mnt', 'shared', '.lock');
    await assert.rejects(env.run(activities.acquirePipelineLock, { warehouse, owner: 'wf-upgraded', lock: unmounted }), (err: Error) => {
      assert.ok(err instanceof ApplicationFailure && err.nonRetryable && err.type === FailureTypes.storageMissing, String(err));
      assert.match(err.message, /the folder of the pipeline lock object .*\/mnt\/shared\/\.lock does not exist on this worker/);
      return true;
    });
    await assert.rejects(fs.access(path.dirname(unmounted)), 'not made');
    // The run then releases what it could not take: nothing there, said so, and not a failure the run would retry and warn of.
    const warned: string[] = [];
    const logged = new MockActivityEnvironment(undefined, { logger: new DefaultLogger('WARN', (entry) => void warned.push(entry.message)) });
    await logged.run(activities.releasePipelineLock, { warehouse, owner: 'wf-upgraded', lock: unmounted });
    assert.ok(warned.some((m) => /^nothing to release: the folder of the pipeline lock object .*\/mnt\/shared\/\.lock does not exist on this worker/.test(m)), warned.join('\n'));
    await assert.rejects(fs.access(path.dirname(unmounted)), 'still not made');
  });

  it("is the Python pipeline's default object unless --pipeline-lock names another: .lock at the root of an s3 warehouse's bucket, in a local warehouse's folder", () => {
    assert.equal(pipelineLockLocation({ warehouse: 's3://its-live-data/test-space/stac/warehouse' }), 's3://its-live-data/.lock');
    assert.equal(pipelineLockLocation({ warehouse: '/data/warehouse' }), '/data/warehouse/.lock');
    const named = parseCompactionInput({ warehouse: 's3://bkt/wh', catalog: '/c/catalog.db', useLock: true, pipelineLock: 's3://bkt/test-space/stac/catalog/.lock' });
    assert.equal(pipelineLockLocation(named), 's3://bkt/test-space/stac/catalog/.lock');
    assert.match(resumeCommand(named, 'earthcatalog-compaction', []), / --use-lock --pipeline-lock s3:\/\/bkt\/test-space\/stac\/catalog\/\.lock( |$)/, 'the printed resume takes the same object');
    for (const [pipelineLock, problem] of [
      ['s3://bkt', /must name an object inside a bucket or a folder/],
      ['s3://bkt/dir/', /pipelineLock must be an absolute path or an s3:\/\/bucket\/key URI of one object/],
      ['relative/.lock', /pipelineLock must be an absolute path/],
      ['s3://bkt/wh/grid_partition=x/year=2024/.lock', /must not be inside a grid_partition= folder/],
      ['s3://bkt/.lock?versionId=1', /must not contain \? #/],
      ['s3://bkt/x/..', /must name an object inside a bucket or a folder/],
      ['/tmp/..', /must name an object inside a bucket or a folder/],
      ['/.lock', /must name an object inside a bucket or a folder/],
    ] as const) {
      assert.throws(() => parseCompactionInput({ warehouse: 's3://bkt/wh', catalog: '/c/catalog.db', useLock: true, pipelineLock }), problem, pipelineLock);
    }
    assert.throws(() => parseCompactionInput({ warehouse: 's3://bkt/wh', catalog: '/c/catalog.db', pipelineLock: 's3://bkt/.lock' }), /pipelineLock names the object useLock takes: set useLock too/);
  });
});
