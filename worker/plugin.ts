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
import { createActivities, defaultActivityResources, positiveWholeNumber, WorkerLocalResources, type ActivityResources } from '../activities';
import { DEFAULT_TASK_QUEUE } from '../workflows/contract';

export interface CompactionPluginOptions extends Partial<ActivityResources> {
  /** Task queue when the worker options name none. */
  taskQueue?: string;
  /**
   * Memory this worker may spend on bucket activities; concurrency = memoryMb / memoryBudgetMb.
   * Default: half of the memory the process may use (a container's limit where there is one, else RAM).
   */
  memoryMb?: number;
  /** Overrides the concurrency derived from memory. */
  maxConcurrentBuckets?: number;
  /** false when the worker bundles the workflows itself (they must re-export ../workflows). */
  registerWorkflows?: boolean;
  /** A prebuilt workflow bundle (tests and fast restarts); default bundles ../workflows at start. */
  workflowBundle?: { code: string };
}

/**
 * Activity slots for lock, plan and catalog activities beside the bucket activities. A bucket task the
 * server hands to one of them waits for a bucket slot (BucketSlots), so memory stays within budget.
 */
const CONTROL_SLOTS = 4;

export function workflowsPath(): string {
  return require.resolve('../workflows');
}

export function bucketConcurrency(opts: CompactionPluginOptions, memoryBudgetMb: number): number {
  if (opts.maxConcurrentBuckets) return opts.maxConcurrentBuckets;
  const memoryMb = opts.memoryMb ?? Math.floor(availableMemoryBytes() / 1024 / 1024 / 2);
  return Math.max(1, Math.floor(memoryMb / memoryBudgetMb));
}

/** RAM, or the cgroup's memory limit when the process runs in a container with a smaller one. */
export function availableMemoryBytes(constrained: number | undefined = process.constrainedMemory?.(), total = os.totalmem()): number {
  // Without a limit Node reports undefined, 0 or a huge sentinel (2^64 - 1, rounded to a page) depending on version.
  return constrained && constrained > 0 && constrained < total ? constrained : total;
}

export class EarthcatalogCompactionPlugin extends SimplePlugin {
  readonly resources: ActivityResources;
  readonly concurrency: number;
  /** The worker's scratch claim and DuckDB sessions; `local.close()` after the worker has stopped. */
  readonly local: WorkerLocalResources;

  constructor(private readonly pluginOptions: CompactionPluginOptions = {}) {
    for (const option of ['memoryBudgetMb', 'memoryMb', 'maxConcurrentBuckets', 'duckdbThreads'] as const) {
      const value = pluginOptions[option];
      if (value !== undefined) positiveWholeNumber(`the plugin option ${option}`, value);
    }
    const defaults = defaultActivityResources();
    const memoryBudgetMb = pluginOptions.memoryBudgetMb ?? defaults.memoryBudgetMb;
    const concurrency = bucketConcurrency(pluginOptions, memoryBudgetMb);
    const resources: ActivityResources = {
      scratchDir: pluginOptions.scratchDir ?? defaults.scratchDir,
      memoryBudgetMb,
      duckdbThreads: pluginOptions.duckdbThreads ?? defaults.duckdbThreads,
      // One per concurrent bucket: every attempt finds a session already open.
      idleDuckdbSessions: concurrency,
      concurrentBuckets: concurrency,
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
    const taskQueue = configured.taskQueue || this.pluginOptions.taskQueue || DEFAULT_TASK_QUEUE;
    // The SDK refuses a tuner together with slot counts; the tuner's slots then serve all activities and
    // BucketSlots alone keeps the buckets within memory.
    if (configured.tuner) return { ...configured, taskQueue };
    return { ...configured, taskQueue, maxConcurrentActivityTaskExecutions: configured.maxConcurrentActivityTaskExecutions ?? this.concurrency + CONTROL_SLOTS };
  }
}
