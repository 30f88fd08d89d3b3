/**
 * The Temporal plugin: registers the compaction workflows and activities on any worker.
 *
 *   const worker = await Worker.create({ connection, taskQueue: 'earthcatalog-compaction',
 *     plugins: [new EarthcatalogCompactionPlugin({ memoryBudgetMb: 2048 })] });
 *
 * A worker that has its own workflowsPath re-exports `earthcatalog-compaction/workflows` from its
 * workflows module and passes `registerWorkflows: false`.
 */
import * as os from 'node:os';
import { SimplePlugin } from '@temporalio/plugin';
import type { WorkerOptions } from '@temporalio/worker';
import { createActivities, defaultActivityResources, WorkerLocalResources, type ActivityResources } from '../activities';
import { DEFAULT_TASK_QUEUE } from '../workflows/contract';

export interface CompactionPluginOptions extends Partial<ActivityResources> {
  /** Task queue when the worker options name none. */
  taskQueue?: string;
  /** Memory this worker may spend on bucket activities; concurrency = memoryMb / memoryBudgetMb. Default: half of RAM. */
  memoryMb?: number;
  /** Overrides the concurrency derived from memory. */
  maxConcurrentBuckets?: number;
  /** false when the worker bundles the workflows itself (they must re-export ../workflows). */
  registerWorkflows?: boolean;
  /** A prebuilt workflow bundle (tests and fast restarts); default bundles ../workflows at start. */
  workflowBundle?: { code: string };
}

/** Activity slots for lock and plan activities beside the bucket activities. */
const CONTROL_SLOTS = 4;

export function workflowsPath(): string {
  return require.resolve('../workflows');
}

export function bucketConcurrency(opts: CompactionPluginOptions, memoryBudgetMb: number): number {
  if (opts.maxConcurrentBuckets) return opts.maxConcurrentBuckets;
  const memoryMb = opts.memoryMb ?? Math.floor(os.totalmem() / 1024 / 1024 / 2);
  return Math.max(1, Math.floor(memoryMb / memoryBudgetMb));
}

export class EarthcatalogCompactionPlugin extends SimplePlugin {
  readonly resources: ActivityResources;
  readonly concurrency: number;
  /** The worker's scratch claim and DuckDB sessions; `local.close()` after the worker has stopped. */
  readonly local: WorkerLocalResources;

  constructor(private readonly pluginOptions: CompactionPluginOptions = {}) {
    const defaults = defaultActivityResources();
    const memoryBudgetMb = pluginOptions.memoryBudgetMb ?? defaults.memoryBudgetMb;
    const concurrency = bucketConcurrency(pluginOptions, memoryBudgetMb);
    const resources: ActivityResources = {
      scratchDir: pluginOptions.scratchDir ?? defaults.scratchDir,
      memoryBudgetMb,
      duckdbThreads: pluginOptions.duckdbThreads ?? defaults.duckdbThreads,
      // One per concurrent bucket: every attempt finds a session already open.
      idleDuckdbSessions: concurrency,
    };
    const register = pluginOptions.registerWorkflows ?? true;
    const local = new WorkerLocalResources(resources);
    super({
      name: 'earthcatalog-compaction',
      activities: createActivities(resources, local),
      ...(register && pluginOptions.workflowBundle ? { workflowBundle: pluginOptions.workflowBundle } : {}),
      ...(register && !pluginOptions.workflowBundle ? { workflowsPath: workflowsPath() } : {}),
    });
    this.resources = resources;
    this.concurrency = concurrency;
    this.local = local;
  }

  override configureWorker(options: WorkerOptions): WorkerOptions {
    const configured = super.configureWorker(options);
    return {
      ...configured,
      taskQueue: configured.taskQueue || this.pluginOptions.taskQueue || DEFAULT_TASK_QUEUE,
      maxConcurrentActivityTaskExecutions: configured.maxConcurrentActivityTaskExecutions ?? this.concurrency + CONTROL_SLOTS,
    };
  }
}
