/** A worker process: connects, registers the plugin, runs until SIGINT/SIGTERM. */
import { inspect } from 'node:util';
import { NativeConnection, Worker, Runtime, DefaultLogger, type LogEntry, type LogLevel, type LogMetadata } from '@temporalio/worker';
import { ActivityFailure, ApplicationFailure } from '@temporalio/common';
import { startCatalogMetrics } from '../activities/catalog/catalog-metrics';
import { firstLine } from '../activities/error-text';
import { checkAuth, describeTarget, unreachable, type ConnectionAuth } from '../client/connection';
import { EarthcatalogCompactionPlugin, type CompactionPluginOptions } from './plugin';
import { bucketTaskQueue, DEFAULT_TASK_QUEUE, HEARTBEAT_TIMEOUT_MS } from '../workflows/contract';

export interface WorkerProcessOptions extends CompactionPluginOptions {
  address: string;
  namespace: string;
  taskQueue: string;
  /** TLS, API key and gRPC metadata for the connection (client/connection.ts resolves them); never printed. */
  auth?: ConnectionAuth;
  logLevel?: LogLevel;
  /**
   * On SIGTERM/SIGINT, how long buckets in flight may run on before they are cancelled (they then stop
   * at their next step and are retried elsewhere). Default 0: keep it below the grace period of whatever
   * stops the process, or a SIGKILL lands mid-bucket and its retry waits for the heartbeat timeout.
   */
  shutdownGraceSeconds?: number;
  /**
   * host:port for a Prometheus endpoint (`/metrics`): the SDK's worker metrics (slots, schedule-to-start
   * latency, failures by activity type) and the buckets' own (activities/compaction/bucket-metrics.ts).
   */
  metricsBindAddress?: string;
}

/**
 * The SDK's console logger, with three changes. No warning that the plugin's bucket worker registers no
 * workflows: that worker serves the bucket task queue only, on purpose. No activity task token on any
 * line: it is enough to complete or fail the activity from outside. And an activity that failed with an
 * ApplicationFailure (what this worker's activities throw for every failure they classify, e.g. a bad
 * input file) is one line naming its type and message: the SDK printed its stack and failure object,
 * some 40 lines per failed bucket, at every attempt; a failed run (`Workflow failed`) is one line of its
 * messages. Errors of any other kind keep their stack, since
 * nothing here expected them. Webpack's report of the workflow bundle is DEBUG, and no line has colour codes.
 * Each entry is one line (the SDK's console format spreads a line's attributes over a dozen), so a log
 * shipper takes it as one event; a stack keeps its own lines.
 */
export class WorkerLogger extends DefaultLogger {
  constructor(level: LogLevel = 'INFO', logFunction: (entry: LogEntry) => void = oneLineEntry) {
    super(level, logFunction);
  }

  override log(level: LogLevel, message: string, meta?: LogMetadata): void {
    const queue = meta?.taskQueue;
    if (message.startsWith('No workflows registered') && typeof queue === 'string' && queue.endsWith(bucketTaskQueue(''))) return;
    // Webpack's report of the workflow bundle (a dozen lines of modules) is for debugging the bundle; the
    // SDK's one line `Workflow bundle created` follows it. Webpack's errors stay errors.
    if (level === 'INFO' && WEBPACK_REPORT.test(message)) return super.log('DEBUG', message, meta);
    if (!meta) return super.log(level, message, meta);
    if (meta.sdkComponent === 'core') return this.logCore(level, message, meta);
    const { taskToken: _token, ...rest } = meta;
    const classified = classifiedFailure(rest.error);
    if (classified) {
      const { failure, activityType } = classified;
      rest.error = `${failure.type ?? 'ApplicationFailure'}${failure.nonRetryable ? ' (not retried)' : ''}: ${firstLine(failure)}${activityType ? ` (in activity ${activityType})` : ''}`;
    }
    // A run's failure crosses from the workflow's thread as a plain Error (its class and type stay behind),
    // and it is in the run's history in full: its messages, outermost first, are enough here.
    else if (message === 'Workflow failed' && rest.error instanceof Error) rest.error = messageChain(rest.error);
    super.log(level, message, rest);
  }

  /** When each of the core's messages (of each run) was last logged, and how many like it were left out since. */
  private readonly coreRepeats = new Map<string, { at: number; left: number }>();

  /**
   * The core's own lines: while the server is unreachable it warns about every retried poll (over 100
   * lines a minute), so one message is logged at most every CORE_REPEAT_MS with how many like it were left
   * out, and its gRPC status is the status's message and code, not Rust's dump of it.
   */
  private logCore(level: LogLevel, raw: string, meta: LogMetadata): void {
    const now = Date.now();
    // The dump may be in the message itself ('Error when recording heartbeat: Status { … }').
    const message = withoutStatusDump(raw);
    // Alike whatever their counts ('retried 6 times', '… 7 times'); one workflow's failing task must not hide another's.
    const alike = message.replace(/\d+/g, 'N');
    const key = typeof meta.runId === 'string' ? `${alike} ${meta.runId}` : alike;
    const seen = this.coreRepeats.get(key);
    if (seen && now - seen.at < CORE_REPEAT_MS) {
      seen.left += 1;
      return;
    }
    if (this.coreRepeats.size >= 1000) this.coreRepeats.clear();
    this.coreRepeats.set(key, { at: now, left: 0 });
    const rest: LogMetadata = {};
    for (const [key, value] of Object.entries(meta)) if (value !== undefined) rest[key] = typeof value === 'string' ? withoutStatusDump(value) : value;
    if (seen?.left) rest.repeated = `${seen.left} more like it in the last ${Math.round((now - seen.at) / 1000)} s`;
    super.log(level, message, rest);
  }
}

/** How often one of the core's messages is logged at most (WorkerLogger.logCore). */
const CORE_REPEAT_MS = 30_000;

/** One of the worker's own lines, in the log's format: a shipper that splits entries at their timestamp takes it as one. */
function workerLine(level: LogLevel, message: string): void {
  oneLineEntry({ level, timestampNanos: BigInt(Date.now()) * 1_000_000n, message });
}

/** The first line of each message along an error's causes, outermost first. */
function messageChain(error: Error): string {
  const parts: string[] = [];
  for (let e: unknown = error; e instanceof Error && parts.length < 5; e = e.cause) parts.push(firstLine(e));
  return parts.join(': ');
}

/** The ApplicationFailure that `error` is or that ended the activity it wraps, and that activity's type. */
function classifiedFailure(error: unknown): { failure: ApplicationFailure; activityType?: string } | undefined {
  if (error instanceof ApplicationFailure) return { failure: error };
  if (error instanceof ActivityFailure && error.cause instanceof ApplicationFailure) return { failure: error.cause, activityType: error.activityType };
  return undefined;
}

const WEBPACK_REPORT = /^(\x1b\[[0-9;]*m)*asset workflow-bundle-/;
/** Terminal colour codes, which the SDK's core puts in some of its warnings (`[TMPRL1104] …`); a log file shows them as noise. */
const COLOUR_CODES = /\x1b\[[0-9;]*m/g;

export function oneLineEntry({ level, timestampNanos, message, meta }: LogEntry): void {
  const when = new Date(Number(timestampNanos / 1_000_000n)).toISOString();
  process.stderr.write(`${when} [${level}] ${message.replace(COLOUR_CODES, '')}${meta === undefined ? '' : ` ${inspect(meta, { breakLength: Infinity, depth: 4 })}`}\n`);
}

export async function createWorker(opts: WorkerProcessOptions): Promise<{ worker: Worker; connection: NativeConnection; plugin: EarthcatalogCompactionPlugin }> {
  // The scratch directory first: a worker created before it fails holds the connection, whose close
  // would then fail in place of the error that names the directory.
  const plugin = new EarthcatalogCompactionPlugin(opts);
  let connection: NativeConnection;
  try {
    await plugin.local.ready;
  } catch (err) {
    await plugin.local.close();
    throw err;
  }
  try {
    checkAuth(opts.auth ?? {}, 'options');
    connection = await NativeConnection.connect({ address: opts.address, ...opts.auth });
  } catch (err) {
    await plugin.local.close();
    // The core's own message (tonic transport errors) names neither the server nor how it was reached.
    throw unreachable({ ...opts, auth: opts.auth ?? {} }, err);
  }
  let worker: Worker;
  try {
    worker = await Worker.create({
      connection,
      namespace: opts.namespace,
      taskQueue: opts.taskQueue || DEFAULT_TASK_QUEUE,
      plugins: [plugin],
      ...(opts.shutdownGraceSeconds ? { shutdownGraceTime: opts.shutdownGraceSeconds * 1000 } : {}),
    });
  } catch (err) {
    await plugin.local.close();
    await connection.close();
    // A namespace the server does not know comes back as the core's debug dump of a gRPC status (its bytes included).
    throw new Error(`cannot start a worker on ${describeTarget({ ...opts, auth: opts.auth ?? {} })}: ${withoutStatusDump((err as Error).message)}`);
  }
  return { worker, connection, plugin };
}

/** `message` with a Rust `Status { code: C, message: "M", details: b"…", … }` dump shortened to `M (C)`. */
export function withoutStatusDump(message: string): string {
  return message.replace(/Status \{ code: (\w+), message: "((?:[^"\\]|\\.)*)".*$/s, (_all, code: string, text: string) => `${text} (${code})`);
}

export async function runWorker(opts: WorkerProcessOptions): Promise<void> {
  try {
    Runtime.install({
      logger: new WorkerLogger(opts.logLevel ?? 'INFO'),
      shutdownSignals: [...STOP_SIGNALS],
      telemetryOptions: {
        // The core's own warnings through the same logger: by default it prints them itself, in colour and another format.
        logging: { forward: {} },
        ...(opts.metricsBindAddress ? { metrics: { prometheus: { bindAddress: opts.metricsBindAddress, countersTotalSuffix: true } } } : {}),
      },
    });
  } catch (err) {
    // The core names neither the setting nor the address (a port in use, an address this host lacks).
    if (!opts.metricsBindAddress) throw err;
    throw new Error(`cannot serve metrics on ${opts.metricsBindAddress} (--metrics-bind, EARTHCATALOG_METRICS_BIND): ${(err as Error).message}`);
  }
  // Before the worker is created: a stop delivered twice while it bundles would otherwise end the
  // process by Node's default, leaving its scratch directory behind.
  // The runtime's log collector holds lines for ~100 ms: flushed, the last ones before a second signal are not lost.
  const stopHandling = handleRepeatedStops((code) => {
    Runtime.instance().flushLogs();
    process.exit(code);
  });
  let created: Awaited<ReturnType<typeof createWorker>>;
  try {
    created = await createWorker(opts);
  } catch (err) {
    stopHandling();
    throw err;
  }
  const { worker, connection, plugin } = created;
  if (opts.metricsBindAddress) {
    startCatalogMetrics(Runtime.instance().metricMeter.withTags({ namespace: worker.options.namespace, taskQueue: worker.options.taskQueue, activityType: 'rebuildCatalog' }));
  }
  try {
    const { scratch } = await plugin.local.ready;
    workerLine(
      'INFO',
      `worker: task queue ${worker.options.taskQueue} on ${describeTarget({ ...opts, auth: opts.auth ?? {} })}; ` +
        `${plugin.concurrency} concurrent bucket(s) of ${plugin.resources.memoryBudgetMb} MB on ${bucketTaskQueue(worker.options.taskQueue)}; scratch ${scratch.dir}` +
        `; shutdown grace ${opts.shutdownGraceSeconds ?? 0} s` +
        (opts.metricsBindAddress ? `; metrics on http://${opts.metricsBindAddress}/metrics` : ''),
    );
    for (const s of scratch.swept) {
      workerLine('INFO', `worker: removed ${s.dir} (${(s.bytes / 1048576).toFixed(1)} MB) left by a worker that is gone (${s.reason})`);
    }
    await worker.run();
  } finally {
    stopHandling();
    await plugin.local.close();
    await connection.close();
  }
}

const STOP_SIGNALS = ['SIGINT', 'SIGTERM'] as const;
/** `timeout` sends its two signals microseconds apart; a person asks again seconds later. */
const SAME_STOP_MS = 1_000;

/**
 * The SDK's handler starts the shutdown on the first SIGINT or SIGTERM and then stops listening, so Node's
 * default would end the process on the next one, which may be the same stop delivered twice: coreutils
 * `timeout` signals the worker and then its process group, as does a supervisor that signals both. Such a
 * repeat, within SAME_STOP_MS, is ignored (the worker drains within its grace); a later one stops the worker
 * at once, as before. Returns the function that stops listening.
 */
export function handleRepeatedStops(exit: (code: number) => void = (code) => process.exit(code)): () => void {
  let firstAt: number | undefined;
  const onSignal = (signal: NodeJS.Signals) => {
    const now = Date.now();
    if (firstAt === undefined) firstAt = now;
    else if (now - firstAt >= SAME_STOP_MS) {
      workerLine(
        'WARN',
        `worker: a second ${signal}: stopping at once, without the shutdown grace; the buckets in flight are retried by another worker ` +
          `after the ${HEARTBEAT_TIMEOUT_MS / 1000} s heartbeat timeout, and its scratch is removed by the next worker on this machine`,
      );
      exit(signal === 'SIGINT' ? 130 : 143);
    }
  };
  for (const s of STOP_SIGNALS) process.on(s, onSignal);
  return () => {
    for (const s of STOP_SIGNALS) process.off(s, onSignal);
  };
}
