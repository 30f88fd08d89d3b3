/**
 * `--use-lock`'s lock object on a real directory: when it is created, honoured, taken over (expired,
 * unreadable, or owned by a workflow of ours that has closed) and released (only by its owner).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { LocalWarehouseStore } from '../activities/storage/local-store';
import { acquirePipelineLock, DEFAULT_PIPELINE_LOCK_KEY, PipelineLockBusyError, releasePipelineLock } from '../activities/locking/pipeline-lock';
import { makeTempDir } from './helpers/temp-dirs';

const running = async () => undefined;

async function warehouseWithLock(body?: string): Promise<{ store: LocalWarehouseStore; file: string }> {
  const root = await makeTempDir('ec-pylock-unit');
  const file = path.join(root, DEFAULT_PIPELINE_LOCK_KEY);
  if (body !== undefined) {
    await fs.mkdir(path.dirname(file), { recursive: true });
    await fs.writeFile(file, body);
  }
  return { store: new LocalWarehouseStore(root), file };
}

function lockBody(owner: string, expiresInMs: number): string {
  return JSON.stringify({ owner, acquired_at: new Date().toISOString(), expires_at: new Date(Date.now() + expiresInMs).toISOString() });
}

async function ownerOf(file: string): Promise<string> {
  return (JSON.parse(await fs.readFile(file, 'utf8')) as { owner: string }).owner;
}

describe('pipeline lock object', () => {
  it('is created when absent and kept by its owner', async () => {
    const { store, file } = await warehouseWithLock();
    assert.equal(await acquirePipelineLock(store, 'wf-a', running), undefined);
    assert.equal(await ownerOf(file), 'wf-a');
    assert.equal(await acquirePipelineLock(store, 'wf-a', running), undefined, 'its owner takes it again without a note');
  });

  it('taken again by its owner, it is renewed: a new expiry, the first acquisition time kept', async () => {
    const { store, file } = await warehouseWithLock();
    await acquirePipelineLock(store, 'wf-a', running);
    const first = JSON.parse(await fs.readFile(file, 'utf8')) as { acquired_at: string; expires_at: string };
    await new Promise((r) => setTimeout(r, 20));
    await acquirePipelineLock(store, 'wf-a', running);
    const renewed = JSON.parse(await fs.readFile(file, 'utf8')) as { owner: string; acquired_at: string; expires_at: string };
    assert.equal(renewed.owner, 'wf-a');
    assert.equal(renewed.acquired_at, first.acquired_at);
    assert.ok(Date.parse(renewed.expires_at) > Date.parse(first.expires_at), `${renewed.expires_at} is later than ${first.expires_at}`);
  });

  it("honours a live owner: the Python pipeline's, or a running workflow's", async () => {
    const body = lockBody('python-ingest', 3600_000);
    const { store, file } = await warehouseWithLock(body);
    const asked: string[] = [];
    await assert.rejects(
      acquirePipelineLock(store, 'wf-b', async (owner) => void asked.push(owner)),
      (err: Error) => err instanceof PipelineLockBusyError && /held by python-ingest until/.test(err.message),
    );
    assert.deepEqual(asked, ['python-ingest'], 'the owner was looked up');
    assert.equal(await fs.readFile(file, 'utf8'), body, 'untouched');
  });

  it('takes over an expired, an unreadable, or an abandoned one, saying why', async () => {
    const expired = await warehouseWithLock(lockBody('python-ingest', -1000));
    assert.match((await acquirePipelineLock(expired.store, 'wf-c', running)) ?? '', /took over .*: expired at/);
    assert.equal(await ownerOf(expired.file), 'wf-c');

    const unreadable = await warehouseWithLock('not json');
    assert.match((await acquirePipelineLock(unreadable.store, 'wf-c', running)) ?? '', /: unreadable$/);
    assert.equal(await ownerOf(unreadable.file), 'wf-c');

    const abandoned = await warehouseWithLock(lockBody('wf-terminated', 3600_000));
    const note = await acquirePipelineLock(abandoned.store, 'wf-c', async (owner) => (owner === 'wf-terminated' ? 'TERMINATED' : undefined));
    assert.match(note ?? '', /its owner, workflow wf-terminated, is terminated/);
    assert.equal(await ownerOf(abandoned.file), 'wf-c');
  });

  it('is released by its owner only', async () => {
    const { store, file } = await warehouseWithLock(lockBody('python-ingest', 3600_000));
    await releasePipelineLock(store, 'wf-d');
    assert.equal(await ownerOf(file), 'python-ingest', "someone else's lock stays");
    await fs.writeFile(file, lockBody('wf-d', 3600_000));
    await releasePipelineLock(store, 'wf-d');
    await assert.rejects(fs.access(file), 'its own is removed');
    await releasePipelineLock(store, 'wf-d');
  });
});
