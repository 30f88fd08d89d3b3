/**
 * The self-contained demo: a dev server (unless TEMPORAL_ADDRESS names one), an in-process worker,
 * a generated sample warehouse, a compaction with a live progress bar, and the table read back.
 */
import { randomUUID } from 'node:crypto';
import * as path from 'node:path';
import * as os from 'node:os';
import { promises as fs } from 'node:fs';
import { parse, shellWord, UsageError, wholeNumberFlag } from '../cli-args';
import { resolveTarget, connectClient } from '../connection';
import { startDevServer, type DevServer } from '../temporal-cli';
import { WorkflowNotFoundError, type Client } from '@temporalio/client';
import { Runtime } from '@temporalio/worker';
import { createWorker, WorkerLogger } from '../../worker/worker';
import { generateSampleWarehouse } from '../demo/sample-warehouse';
import { readTableBack } from '../demo/read-table-back';
import { createProgressRenderer } from '../progress-bar';
import { followCompaction, startCompaction } from '../start-compaction';
import { exitCodeOf, formatSummary } from '../summary-format';

export const demoUsage = `earthcatalog-compact demo [--dir DIR] [--cells N] [--years N] [--generate-only]
    Generates a sample warehouse in DIR (default: a new temp dir) of N cells (1 to 6, default 4) and
    N years from 2022 (default 3), compacts it, reads the table back.
    With --generate-only it stops after the sample warehouse: compact it with your own worker and server.`;

/** The sample warehouse's cells: H3 ids of resolution 1. */
const DEMO_CELLS = ['8128bffffffffff', '8129bffffffffff', '812abffffffffff', '812bbffffffffff', '8130bffffffffff', '8131bffffffffff'];

export async function runDemoCommand(argv: string[]): Promise<number> {
  const { values } = parse(argv, { dir: { type: 'string' }, cells: { type: 'string' }, years: { type: 'string' }, 'generate-only': { type: 'boolean' } });
  // Counts here (compact's --cells is a list): checked before a server or worker starts.
  const cellCount = wholeNumberFlag('cells', values.cells, true) ?? 4;
  const yearCount = wholeNumberFlag('years', values.years, true) ?? 3;
  if (cellCount > DEMO_CELLS.length) throw new UsageError(`--cells ${cellCount}: the demo has ${DEMO_CELLS.length} cells`);
  // Years from 2022 on: past 9999 a year is no longer four digits, which the layout requires.
  if (2022 + yearCount - 1 > 9999) throw new UsageError(`--years ${yearCount}: the demo's years start at 2022 and end by 9999`);
  const dir = values.dir ? path.resolve(values.dir) : await fs.mkdtemp(path.join(os.tmpdir(), 'earthcatalog-demo-'));
  const warehouse = path.join(dir, 'warehouse');
  const catalog = path.join(dir, 'catalog.db');
  // Generated rows beside real ones would go into the table with the next compaction: a mistyped --dir must not add them.
  if (values.dir) await refuseNonEmpty(warehouse, catalog);
  const say = (line: string) => console.error(`demo: ${line}`);
  const cells = DEMO_CELLS.slice(0, cellCount);
  const years = Array.from({ length: yearCount }, (_, i) => 2022 + i);
  const generate = async () => {
    await fs.mkdir(warehouse, { recursive: true });
    const generated = await generateSampleWarehouse(warehouse, { cells, years, seed: 42 });
    say(`sample warehouse ${warehouse}: ${generated.buckets} buckets, ${generated.files} part files, ${generated.rows} rows`);
  };
  if (values['generate-only']) {
    await generate();
    // No catalog yet: the first compaction creates the table in it.
    console.log(`earthcatalog-compact --warehouse ${shellWord(warehouse)} --catalog ${shellWord(catalog)}`);
    return 0;
  }

  // The demo's own lines and the progress bar are the interesting output; the SDK speaks up only for warnings.
  Runtime.install({ logger: new WorkerLogger('WARN') });
  let server: DevServer | undefined;
  // A task queue of its own: with TEMPORAL_ADDRESS naming a shared server, the demo's worker must not
  // take production buckets, nor production workers the demo's (whose files are on this machine only).
  let target = { ...resolveTarget({}), taskQueue: `earthcatalog-demo-${randomUUID().slice(0, 8)}` };
  if (!process.env.TEMPORAL_ADDRESS) {
    say('starting a Temporal dev server (set TEMPORAL_ADDRESS to use your own)…');
    server = await startDevServer({ ui: true, log: say });
    target = { ...target, address: server.address, namespace: server.namespace, auth: {} };
    say(`Temporal at ${server.address}${server.uiUrl ? `, Web UI ${server.uiUrl}` : ''}`);
  }
  const { worker, connection, plugin } = await createWorker({ ...target, taskQueue: target.taskQueue, maxConcurrentBuckets: 4, memoryBudgetMb: 512 });
  const client = await connectClient(target);
  try {
    await generate();

    const summary = await worker.runUntil(async () => {
      const handle = await startCompaction(client, { warehouse, catalog }, { taskQueue: target.taskQueue });
      say(`workflow ${handle.workflowId}`);
      const bar = createProgressRenderer();
      try {
        return await followCompaction(handle, (p) => bar.update(p));
      } finally {
        bar.finish();
      }
    });
    // The demo's catalog is new by design: the warning that a run created its table would only alarm.
    console.log(formatSummary({ ...summary, catalogTableCreated: undefined }));
    console.log('');
    console.log(await readTableBack(catalog, warehouse));
    say(`files kept in ${dir}`);
    return exitCodeOf(summary);
  } finally {
    // On a shared server the run's lock workflows would close only after a minute idle, served by nobody
    // once the demo's worker is gone: they would stay Running there for ever.
    if (!server) await endWorkflowsOfQueue(client, target.taskQueue).catch((err: unknown) => say(`could not end the demo's workflows on task queue ${target.taskQueue}: ${(err as Error).message}`));
    await plugin.local.close();
    await client.connection.close();
    await connection.close();
    await server?.stop();
  }
}

async function refuseNonEmpty(warehouse: string, catalog: string): Promise<void> {
  const dir = path.dirname(warehouse);
  if ((await fs.stat(dir).catch(() => undefined))?.isDirectory() === false) throw new UsageError(`--dir: ${dir} is a file, not a folder for the demo`);
  const entries = await fs.readdir(warehouse).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return [];
    if (err.code === 'ENOTDIR') throw new UsageError(`--dir: ${warehouse} is a file, not a folder for the sample warehouse`);
    throw err;
  });
  if (entries.length) throw new UsageError(`--dir: ${warehouse} is not empty; the demo writes its sample warehouse only into a new or empty folder (choose another --dir)`);
  const catalogThere = await fs.lstat(catalog).then(() => true, () => false);
  if (catalogThere) throw new UsageError(`--dir: ${catalog} exists; the demo creates its catalog only where there is none (choose another --dir)`);
}

/** Terminates what still runs on the demo's own task queue (its lock workflows, or a run it stopped following), which no worker will serve again. */
async function endWorkflowsOfQueue(client: Client, taskQueue: string): Promise<void> {
  for await (const wf of client.workflow.list({ query: `TaskQueue = '${taskQueue}' AND ExecutionStatus = 'Running'` })) {
    await client.workflow
      .getHandle(wf.workflowId, wf.runId)
      .terminate('the demo ended; no worker serves its task queue any more')
      .catch((err: unknown) => {
        // Closed meanwhile (an idle lock's minute was up): nothing left to end.
        if (!(err instanceof WorkflowNotFoundError)) throw err;
      });
  }
}
