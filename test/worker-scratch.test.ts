/**
 * A worker's scratch claim: what a dead worker left is removed when the next worker starts, while
 * claims that may still be in use (a live process, another host that keeps its claim fresh, a claim
 * being created) and anything that is not a claim are left alone. Killed worker processes are covered
 * end to end by crash-recovery.test.ts.
 */
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { STALE_AFTER_MS, claimWorkerScratch } from '../activities/compaction/worker-scratch';
import { makeTempDir } from './helpers/temp-dirs';

let root: string;

before(async () => {
  root = await makeTempDir('ec-scratch');
});

/** A PID that existed a moment ago and no longer does. */
async function exitedPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', '']);
  await new Promise((resolve) => child.on('exit', resolve));
  return child.pid!;
}

async function fakeClaim(name: string, owner: Record<string, unknown> | undefined, ageMs = 0, payloadBytes = 0): Promise<string> {
  const dir = path.join(root, name);
  await fs.mkdir(path.join(dir, 'attempt', 'spill'), { recursive: true });
  if (payloadBytes) await fs.writeFile(path.join(dir, 'attempt', 'spill', 'duckdb_temp_block.tmp'), Buffer.alloc(payloadBytes));
  const then = new Date(Date.now() - ageMs);
  if (owner) {
    const file = path.join(dir, 'owner.json');
    await fs.writeFile(file, JSON.stringify(owner));
    await fs.utimes(file, then, then);
  }
  await fs.utimes(dir, then, then);
  return dir;
}

async function exists(p: string): Promise<boolean> {
  return fs.stat(p).then(
    () => true,
    () => false,
  );
}

describe('worker scratch claims', () => {
  test('a claim is a worker-* directory with its owner, removed on release', async () => {
    const claim = await claimWorkerScratch(root);
    try {
      assert.match(path.basename(claim.dir), /^worker-[0-9a-f]{8}$/);
      const owner = JSON.parse(await fs.readFile(path.join(claim.dir, 'owner.json'), 'utf8')) as { pid: number; host: string };
      assert.equal(owner.pid, process.pid);
      assert.equal(owner.host, os.hostname());
    } finally {
      await claim.release();
    }
    assert.equal(await exists(claim.dir), false);
  });

  test('claiming sweeps exactly the claims whose owner is gone', async () => {
    const live = await claimWorkerScratch(root);
    const ns = await fs.readlink('/proc/self/ns/pid').catch(() => '');
    const here = { host: os.hostname(), pidNamespace: ns, startedAt: new Date().toISOString() };
    const dead = await fakeClaim('worker-dead0001', { ...here, pid: await exitedPid() }, 0, 4096);
    const otherHostFresh = await fakeClaim('worker-remote01', { ...here, host: 'other-host', pid: 1 });
    const otherHostStale = await fakeClaim('worker-remote02', { ...here, host: 'other-host', pid: 1 }, STALE_AFTER_MS + 60_000, 100);
    const otherNamespace = await fakeClaim('worker-contain1', { ...here, pidNamespace: 'pid:[1]', pid: await exitedPid() });
    const beingClaimed = await fakeClaim('worker-new00001', undefined);
    const neverClaimed = await fakeClaim('worker-old00001', undefined, STALE_AFTER_MS + 60_000);
    const notAClaim = await fakeClaim('some-user-dir', undefined, STALE_AFTER_MS + 60_000);
    const strayFile = path.join(root, 'worker-file');
    await fs.writeFile(strayFile, 'not a directory of ours');
    const longAgo = new Date(Date.now() - STALE_AFTER_MS - 60_000);
    await fs.utimes(strayFile, longAgo, longAgo);

    const next = await claimWorkerScratch(root);
    try {
      const swept = new Map(next.swept.map((s) => [s.dir, s]));
      assert.deepEqual([...swept.keys()].sort(), [dead, neverClaimed, otherHostStale].sort());
      assert.equal(swept.get(dead)!.reason, 'owner exited');
      assert.ok(swept.get(dead)!.bytes >= 4096, 'the sweep reports what it freed');
      assert.equal(swept.get(otherHostStale)!.reason, 'claim not refreshed');
      for (const gone of swept.keys()) assert.equal(await exists(gone), false, `${gone} removed`);
      for (const kept of [live.dir, otherHostFresh, otherNamespace, beingClaimed, notAClaim, strayFile]) {
        assert.equal(await exists(kept), true, `${kept} kept`);
      }
    } finally {
      await next.release();
      await live.release();
    }
  });
});

test('a scratch root DuckDB would read as a glob pattern is refused before anything is created', async () => {
  const bad = path.join(root, 'scratch[1]');
  await assert.rejects(claimWorkerScratch(bad), /scratch directory .*scratch\[1\] must not contain \* \? \[ \] \{ \}/);
  await assert.rejects(fs.access(bad), 'not created');
});
