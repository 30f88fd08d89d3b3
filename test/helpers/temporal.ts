/**
 * A real Temporal dev server for the tests (the installed `temporal` CLI, else the SDK's download),
 * in-process workers with a bundle built once per test file, and worker processes for crash tests.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as path from 'node:path';
import { bundleWorkflowCode, Worker, Runtime, DefaultLogger, type WorkflowBundleWithSourceMap } from '@temporalio/worker';
import { WorkerLogger } from '../../worker/worker';
import type { Client } from '@temporalio/client';
import { startDevServer, type DevServer } from '../../client/temporal-cli';
import { EarthcatalogCompactionPlugin, type CompactionPluginOptions } from '../../worker/plugin';
import { createLockActivities } from '../../activities/locking/lock-activities';
import { bucketTaskQueue } from '../../workflows/contract';

export const REPO_ROOT = path.resolve(__dirname, '..', '..');

let runtimeInstalled = false;
function quietRuntime(): void {
  if (runtimeInstalled) return;
  runtimeInstalled = true;
  Runtime.install({ logger: new WorkerLogger('WARN') });
}

export interface TemporalHarness {
  server: DevServer;
  client: Client;
  address: string;
  namespace: string;
  bundle(): Promise<WorkflowBundleWithSourceMap>;
  stop(): Promise<void>;
}

export async function startTemporal(): Promise<TemporalHarness> {
  quietRuntime();
  const server = await startDevServer();
  let bundle: Promise<WorkflowBundleWithSourceMap> | undefined;
  return {
    server,
    client: server.env.client,
    address: server.address,
    namespace: server.namespace,
    bundle: () => (bundle ??= bundleWorkflowCode({ workflowsPath: require.resolve('../../workflows'), logger: new DefaultLogger('WARN') })),
    stop: () => server.stop(),
  };
}

export interface RunningWorker {
  worker: Worker;
  stop(): Promise<void>;
}

let probeBundle: Promise<WorkflowBundleWithSourceMap> | undefined;

/** A worker of the bucket task queue of `taskQueue`, for tests that run a worker without the plugin. */
export function createBucketWorker(h: TemporalHarness, taskQueue: string, compactBucket: unknown): Promise<Worker> {
  return Worker.create({ connection: h.server.env.nativeConnection, namespace: h.namespace, taskQueue: bucketTaskQueue(taskQueue), activities: { compactBucket } });
}

/**
 * A worker for test/workflows' probes: lockProbe (which holds a lock the way an ingest workflow would)
 * and the lock workflows it starts, with the lock activities and no compaction activities unless the
 * test passes the activities its probe calls. Given a compactBucket, it serves the bucket task queue too.
 */
export async function startProbeWorker(h: TemporalHarness, taskQueue: string, activities: object = createLockActivities()): Promise<RunningWorker> {
  probeBundle ??= bundleWorkflowCode({ workflowsPath: path.join(__dirname, '..', 'workflows', 'index.ts'), logger: new DefaultLogger('WARN') });
  const worker = await Worker.create({ connection: h.server.env.nativeConnection, namespace: h.namespace, taskQueue, workflowBundle: await probeBundle, activities });
  const workers = [worker];
  if ('compactBucket' in activities) workers.push(await createBucketWorker(h, taskQueue, activities.compactBucket));
  const running = Promise.all(workers.map((w) => w.run()));
  return {
    worker,
    stop: async () => {
      for (const w of workers) if (w.getState() === 'RUNNING') w.shutdown();
      await running;
    },
  };
}

/** An in-process worker on its own task queue; stops when `stop` is called. */
export async function startWorker(
  h: TemporalHarness,
  taskQueue: string,
  opts: CompactionPluginOptions = {},
): Promise<RunningWorker> {
  const code = await h.bundle();
  const plugin = new EarthcatalogCompactionPlugin({ memoryBudgetMb: 256, duckdbThreads: 1, maxConcurrentBuckets: 4, workflowBundle: code, ...opts });
  const worker = await Worker.create({
    connection: h.server.env.nativeConnection,
    namespace: h.namespace,
    taskQueue,
    plugins: [plugin],
  });
  const running = worker.run();
  return {
    worker,
    stop: async () => {
      if (worker.getState() === 'RUNNING') worker.shutdown();
      await running.finally(() => plugin.local.close());
    },
  };
}

export interface WorkerProcess {
  child: ChildProcess;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  output(): string;
  stop(): Promise<void>;
}

/** A worker in its own OS process (the real CLI), so a test can SIGKILL it. */
export function spawnWorkerProcess(h: Pick<TemporalHarness, 'address' | 'namespace'>, taskQueue: string, env: Record<string, string> = {}, args: string[] = []): WorkerProcess {
  const child = spawn(
    process.execPath,
    [path.join(REPO_ROOT, 'bin', 'earthcatalog-compact'), 'worker', '--address', h.address, '--namespace', h.namespace, '--task-queue', taskQueue, '--memory-budget-mb', '256', '--duckdb-threads', '1', ...args],
    { cwd: REPO_ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('exit', (code, signal) => resolve({ code, signal })),
  );
  return {
    child,
    exited,
    output: () => out,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}

let queueCounter = 0;
export function uniqueTaskQueue(name: string): string {
  return `${name}-${process.pid}-${++queueCounter}`;
}
