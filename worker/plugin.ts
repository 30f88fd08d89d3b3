/**
 * The Temporal plugin: registers the compaction workflows and activities on any worker.
 *
 *   const worker = await Worker.create({ connection, taskQueue: 'earthcatalog-compaction',
 *     plugins: [new EarthcatalogCompactionPlugin({ memoryBudgetMb: 2048 })] });
 *
 * While that worker runs, the plugin runs a second one beside it, on the bucket task queue
 * (bucketTaskQueue), with as many activity slots as the buckets its memory holds.
 *
 * A worker that has its own workflowsPath re-exports `earthcatalog-compaction/workflows` from its
 * workflows module and passes `registerWorkflows: false`.
 */
import * as os from 'node:os';
import * as path from 'node:path';
import { SimplePlugin } from '@temporalio/plugin';
import { Worker, type BundleOptions, type WorkerOptions } from '@temporalio/worker';
import { createActivities, DEFAULT_BUCKET_BUDGET_MB, defaultActivityResources, positiveWholeNumber, WorkerLocalResources, type ActivityResources } from '../activities';
import { HEARTBEAT_THROTTLE_MS } from '../activities/heartbeats';
import { bucketTaskQueue, DEFAULT_TASK_QUEUE } from '../workflows/contract';

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
 * Activity slots for lock, plan and catalog activities on the run's task queue, beside room for the
 * buckets of runs started before buckets had a queue of their own: such a bucket task waits there for a
 * bucket slot (BucketSlots), so memory stays within budget either way.
 */
const CONTROL_SLOTS = 4;

export function workflowsPath(): string {
  return require.resolve('../workflows');
}

type WebpackConfig = Parameters<NonNullable<BundleOptions['webpackConfigHook']>>[0];

/**
 * The workflow bundler's webpack config with this package's TypeScript compiled like the worker's own.
 * The SDK compiles `.ts` files outside node_modules only, and the package ships its TypeScript sources:
 * installed as a copy (from a registry, a tarball, `--install-links`), its workflows did not bundle.
 */
function compilingPackageSources(config: WebpackConfig, packageRoot: string): WebpackConfig {
  if (!packageRoot.split(path.sep).includes('node_modules')) return config;
  const rules = config.module?.rules ?? [];
  const sdkTypeScript = rules.find((r) => typeof r === 'object' && r !== null && r.test instanceof RegExp && r.test.test('workflow.ts'));
  if (typeof sdkTypeScript !== 'object' || sdkTypeScript === null || !sdkTypeScript.use) return config;
  const ours = { test: /\.ts$/, include: packageRoot + path.sep, exclude: path.join(packageRoot, 'node_modules') + path.sep, use: sdkTypeScript.use };
  return { ...config, module: { ...config.module, rules: [...rules, ours] } };
}

/** The smallest bucket budget: DuckDB gets half of it, and never less than 32 MB (duckdbMemoryLimitMb). */
export const MIN_BUCKET_BUDGET_MB = 64;
/** As many buckets as one run may have in flight (its maxParallelBuckets). */
export const MAX_CONCURRENT_BUCKETS = 1000;

/**
 * Why the worker's bucket settings cannot keep its promise of memory, if they cannot: a budget below
 * what DuckDB takes anyway, or above the worker's memory, or more buckets than that memory holds.
 * `names` says how the operator gave each setting (a flag, a variable, a plugin option).
 */
export function bucketSettingsProblem(
  s: { memoryBudgetMb: number; memoryMb?: number; maxConcurrentBuckets?: number },
  names: { memoryBudgetMb: string; memoryMb: string; maxConcurrentBuckets: string },
  budgetGiven: boolean,
): string | undefined {
  if (s.memoryBudgetMb < MIN_BUCKET_BUDGET_MB) {
    // Without a budget given, a budget this small is all of a --memory-mb below it: that is the setting to name.
    if (!budgetGiven && s.memoryMb !== undefined) {
      return `${names.memoryMb} ${s.memoryMb} is below ${MIN_BUCKET_BUDGET_MB}: not one bucket fits (DuckDB gets half of a bucket's budget and never less than 32 MB)`;
    }
    return `${names.memoryBudgetMb} ${s.memoryBudgetMb} is below ${MIN_BUCKET_BUDGET_MB}: DuckDB gets half of a bucket's budget and never less than 32 MB, so a bucket would use more than its budget`;
  }
  if (s.maxConcurrentBuckets !== undefined && s.maxConcurrentBuckets > MAX_CONCURRENT_BUCKETS) {
    return `${names.maxConcurrentBuckets} ${s.maxConcurrentBuckets} is more than ${MAX_CONCURRENT_BUCKETS}, the most buckets a run has in flight`;
  }
  if (s.memoryMb === undefined) return undefined;
  if (s.memoryBudgetMb > s.memoryMb) {
    return `${names.memoryBudgetMb} ${s.memoryBudgetMb} is more than ${names.memoryMb} ${s.memoryMb}: one bucket would get more memory than the worker may use`;
  }
  if (s.maxConcurrentBuckets !== undefined && s.maxConcurrentBuckets * s.memoryBudgetMb > s.memoryMb) {
    const budget = budgetGiven ? `${s.memoryBudgetMb} MB` : `${s.memoryBudgetMb} MB (no ${names.memoryBudgetMb} given)`;
    return (
      `${names.maxConcurrentBuckets} ${s.maxConcurrentBuckets} buckets of ${budget} need ${s.maxConcurrentBuckets * s.memoryBudgetMb} MB, more than ${names.memoryMb} ${s.memoryMb}: ` +
      `give a smaller budget or fewer buckets (without ${names.maxConcurrentBuckets} the worker runs memory / budget buckets at once)`
    );
  }
  return undefined;
}

/**
 * One bucket's budget: the one given (flag, variable or option), else the default (1 GB), or all of a
 * smaller memory given for the worker's buckets: told it may use 512 MB, a worker runs one bucket of 512 MB.
 */
export function bucketBudgetMb(given: number | undefined, memoryMb: number | undefined): number {
  return given ?? Math.min(DEFAULT_BUCKET_BUDGET_MB, memoryMb ?? DEFAULT_BUCKET_BUDGET_MB);
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

  /** Options of the bucket worker to run beside each worker this plugin configured, by its task queue. */
  private readonly bucketWorkers = new Map<string, WorkerOptions>();
  private readonly bucketActivities: Pick<ReturnType<typeof createActivities>, 'compactBucket'>;

  constructor(private readonly pluginOptions: CompactionPluginOptions = {}) {
    for (const option of ['memoryBudgetMb', 'memoryMb', 'maxConcurrentBuckets', 'duckdbThreads'] as const) {
      const value = pluginOptions[option];
      if (value !== undefined) positiveWholeNumber(`the plugin option ${option}`, value);
    }
    const defaults = defaultActivityResources();
    const budgetFromEnvironment = process.env.EARTHCATALOG_MEMORY_BUDGET_MB !== undefined ? defaults.memoryBudgetMb : undefined;
    const memoryBudgetMb = bucketBudgetMb(pluginOptions.memoryBudgetMb ?? budgetFromEnvironment, pluginOptions.memoryMb);
    const problem = bucketSettingsProblem(
      { ...pluginOptions, memoryBudgetMb },
      {
        memoryBudgetMb:
          pluginOptions.memoryBudgetMb !== undefined ? 'the plugin option memoryBudgetMb' : process.env.EARTHCATALOG_MEMORY_BUDGET_MB !== undefined ? 'EARTHCATALOG_MEMORY_BUDGET_MB' : 'memoryBudgetMb',
        memoryMb: 'the plugin option memoryMb',
        maxConcurrentBuckets: 'the plugin option maxConcurrentBuckets',
      },
      pluginOptions.memoryBudgetMb !== undefined || budgetFromEnvironment !== undefined,
    );
    if (problem) throw new Error(problem);
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
    const activities = createActivities(resources, local);
    super({
      name: 'earthcatalog-compaction',
      activities,
      ...(register && pluginOptions.workflowBundle ? { workflowBundle: pluginOptions.workflowBundle } : {}),
      ...(register && !pluginOptions.workflowBundle ? { workflowsPath: workflowsPath() } : {}),
    });
    this.resources = resources;
    this.concurrency = concurrency;
    this.local = local;
    this.bucketActivities = { compactBucket: activities.compactBucket };
  }

  override configureWorker(options: WorkerOptions): WorkerOptions {
    // A plugin on the connection is applied to the bucket worker too: it is left as it is.
    if ([...this.bucketWorkers.values()].some((o) => o.taskQueue === options.taskQueue)) return options;
    // The plugin's workflows would replace the worker's own without a word: its own workflows would never run.
    const own = options.workflowBundle ? 'a workflowBundle' : options.workflowsPath && options.workflowsPath !== workflowsPath() ? `workflowsPath ${options.workflowsPath}` : undefined;
    if (own && (this.pluginOptions.registerWorkflows ?? true)) {
      throw new Error(
        `the worker has workflows of its own (${own}), which the plugin's would replace: re-export ours from its workflows module ` +
          "(export * from 'earthcatalog-compaction/workflows') and pass registerWorkflows: false to the plugin",
      );
    }
    const configured = super.configureWorker(options);
    const taskQueue = configured.taskQueue || this.pluginOptions.taskQueue || DEFAULT_TASK_QUEUE;
    // Everything of the worker but its workflows, Nexus services, slots and other plugins (whose changes
    // the options already carry): the same connection, data converter and interceptors serve the buckets.
    const { workflowsPath: _path, workflowBundle: _bundle, nexusServices: _nexus, tuner: _tuner, plugins: _plugins, ...shared } = configured;
    this.bucketWorkers.set(taskQueue, {
      ...shared,
      taskQueue: bucketTaskQueue(taskQueue),
      activities: this.bucketActivities,
      maxConcurrentActivityTaskExecutions: this.concurrency,
      // The SDK sends heartbeats at most every 0.8 x the heartbeat timeout (24 s of the buckets' 30 s) by
      // default: every one of the activity's 10 s heartbeats is sent instead, so a cancel reaches a bucket
      // within ~10 s and a heartbeat delayed by a few seconds does not time a live bucket out.
      maxHeartbeatThrottleInterval: HEARTBEAT_THROTTLE_MS,
    });
    // The plan and the rebuild have the buckets' 30 s heartbeat timeout: their heartbeats are sent as the buckets' are.
    const control = { ...configured, taskQueue, maxHeartbeatThrottleInterval: configured.maxHeartbeatThrottleInterval ?? HEARTBEAT_THROTTLE_MS };
    // The SDK refuses a tuner together with slot counts; the tuner's slots then serve all activities and
    // BucketSlots alone keeps the buckets within memory.
    if (configured.tuner) return control;
    return { ...control, maxConcurrentActivityTaskExecutions: configured.maxConcurrentActivityTaskExecutions ?? this.concurrency + CONTROL_SLOTS };
  }

  override configureBundler(options: BundleOptions): BundleOptions {
    const configured = super.configureBundler(options);
    const previous = configured.webpackConfigHook;
    // From the resolved workflows, not __dirname: loaded as an ES module through tsx, this file's __dirname is `data:text`.
    const packageRoot = path.dirname(path.dirname(workflowsPath()));
    return { ...configured, webpackConfigHook: (config) => compilingPackageSources(previous ? previous(config) : config, packageRoot) };
  }

  /** The options of the bucket worker run beside the worker on `taskQueue` (once `configureWorker` has seen it). */
  bucketWorkerOptions(taskQueue: string): Readonly<WorkerOptions> | undefined {
    return this.bucketWorkers.get(taskQueue);
  }

  /**
   * Runs the bucket worker for as long as `worker` runs: either one stopping (a shutdown, a signal, a
   * fatal error) stops the other, and the first failure is rethrown.
   */
  override async runWorker(worker: Worker, next: (w: Worker) => Promise<void>): Promise<void> {
    const options = this.bucketWorkers.get(worker.options.taskQueue);
    if (!options) return super.runWorker(worker, next);
    const stop = (w: Worker) => {
      if (w.getState() === 'RUNNING') w.shutdown();
    };
    const main = super.runWorker(worker, next);
    // Handled from the start: a main worker failing while the bucket worker connects must not be an unhandled rejection.
    main.catch(() => undefined);
    let buckets: Worker;
    try {
      buckets = await Worker.create({ ...options });
    } catch (err) {
      stop(worker);
      await main.catch(() => undefined);
      throw err;
    }
    const bucketsRun = buckets.run();
    if (worker.getState() !== 'RUNNING') stop(buckets);
    const [a, b] = await Promise.allSettled([main.finally(() => stop(buckets)), bucketsRun.finally(() => stop(worker))]);
    if (a.status === 'rejected') throw a.reason;
    if (b.status === 'rejected') throw b.reason;
  }
}
