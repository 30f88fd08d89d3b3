/**
 * An outage of the Temporal server itself (a restart, an upgrade, a network cut): the dev server is
 * stopped mid-run for longer than the SDK's own ~20 s of retries, then started again on the same
 * database and port. The run waits on the server and completes; `compact` and `status --watch` must
 * wait with it, not exit 1 (which told cron a compaction had failed that then completed).
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ConnectionLike } from '@temporalio/client';
import { startDevServer, type DevServer } from '../client/temporal-cli';
import { connectClient, resolveTarget } from '../client/connection';
import { serverAnswers, ServerUnreachableError, throughOutages } from '../client/server-outages';
import type { CompactionSummary } from '../workflows/contract';
import { freePort } from './helpers/moto-server';
import { makeTempDir } from './helpers/temp-dirs';
import { REPO_ROOT, spawnWorkerProcess, uniqueTaskQueue, type WorkerProcess } from './helpers/temporal';
import { waitFor } from './helpers/wait';
import { makeFixture } from './helpers/warehouse-fixtures';

interface CliProcess {
  exited: Promise<number | null>;
  running(): boolean;
  stdout(): string;
  stderr(): string;
  kill(): void;
}

function startCli(args: string[]): CliProcess {
  const child = spawn(process.execPath, [path.join(REPO_ROOT, 'bin', 'earthcatalog-compact'), ...args], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return {
    exited,
    running: () => child.exitCode === null && child.signalCode === null,
    stdout: () => out,
    stderr: () => err,
    kill: () => child.kill('SIGKILL'),
  };
}

/** Longer than the SDK's retries of one call (~20 s), after which both commands used to give up. */
const OUTAGE_MS = 35_000;

describe('an outage of the Temporal server', () => {
  let server: DevServer | undefined;
  let connection: ConnectionLike | undefined;
  let worker: WorkerProcess | undefined;
  const clis: CliProcess[] = [];

  after(async () => {
    for (const c of clis) if (c.running()) c.kill();
    await worker?.stop();
    await connection?.close();
    await server?.stop();
  });

  it('compact and status --watch wait through it, and the run completes once the server is back', async () => {
    const dir = await makeTempDir('ec-outage-server');
    const dbFilename = path.join(dir, 'temporal.db');
    const port = await freePort();
    server = await startDevServer({ dbFilename, port });
    const { address, namespace } = server;
    const fx = await makeFixture('outage');
    const taskQueue = uniqueTaskQueue('outage');
    const conn = ['--address', address, '--namespace', namespace, '--task-queue', taskQueue];
    const workflowId = `outage-${process.pid}`;

    // No worker until the server is back: the run waits for one, so the outage falls in its middle.
    const compact = startCli(['--warehouse', fx.warehouse, '--catalog', fx.catalog, '--json', '--workflow-id', workflowId, ...conn]);
    clis.push(compact);
    // The commands' own connection settings (a process-wide grpc subchannel of default settings would still be
    // backing off when the test's server harness reconnects to the restarted server).
    const client = await connectClient(resolveTarget({ address, namespace }));
    connection = client.connection;
    const handle = client.workflow.getHandle(workflowId);
    await waitFor('the run has started', () => handle.describe().then(() => true, () => undefined));
    const watch = startCli(['status', '--watch', '--workflow-id', workflowId, ...conn]);
    clis.push(watch);
    await sleep(2_000);

    await server.stop();
    server = undefined;
    const downSince = Date.now();
    assert.equal(await serverAnswers(client.connection), false, 'nothing answers while the server is down');
    await assert.rejects(
      throughOutages(() => handle.describe(), { giveUp: 'the test stopped waiting', limitMs: 1 }),
      (err: unknown) => err instanceof ServerUnreachableError && /^the Temporal server has not answered for \d+ s \(.+\); the test stopped waiting$/.test(err.message),
      'past its limit a follower gives up with the error that says so',
    );
    const notice = await waitFor('compact says the server does not answer', async () => compact.stderr().split('\n').find((l) => l.includes('Temporal server')));
    assert.match(notice, new RegExp(`the Temporal server at ${address}/${namespace} has not answered for over 15 s \\(.+\\); the compaction goes on once it is back\\. Still waiting \\(up to 15 minutes\\)\\.`));
    assert.doesNotMatch(compact.stderr(), /is a worker running/, 'the workers are not to blame for an outage of the server');
    await sleep(Math.max(0, OUTAGE_MS - (Date.now() - downSince)));
    assert.ok(compact.running(), `compact still waits after ${OUTAGE_MS / 1000} s without the server: ${compact.stderr()}`);
    assert.ok(watch.running(), `status --watch still waits after ${OUTAGE_MS / 1000} s without the server: ${watch.stderr()}`);
    assert.match(watch.stderr(), new RegExp(`the Temporal server does not answer \\(.+\\); still waiting for ${workflowId} \\(up to 15 minutes\\)`));

    server = await startDevServer({ dbFilename, port });
    worker = spawnWorkerProcess({ address, namespace }, taskQueue);
    assert.equal(await compact.exited, 0, `compact exits 0 once the run completes: ${compact.stderr()}`);
    const summary = JSON.parse(compact.stdout()) as CompactionSummary;
    assert.equal(summary.failedBuckets.length, 0);
    assert.equal(summary.bucketsCompacted, 6, 'every bucket of the fixture');
    assert.equal(await watch.exited, 0, `status --watch exits 0: ${watch.stderr()}`);
    assert.match(watch.stdout(), new RegExp(`${workflowId} COMPLETED`));
    assert.equal(await serverAnswers(client.connection), true, 'the same connection reaches the restarted server');
  });
});
