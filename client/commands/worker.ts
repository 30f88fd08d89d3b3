import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { connectionFlags, parse, UsageError, wholeNumberFlag } from '../cli-args';
import { resolveTarget } from '../connection';
import { defaultActivityResources } from '../../activities';
import { runWorker } from '../../worker/worker';
import { bucketBudgetMb, bucketSettingsProblem } from '../../worker/plugin';

export const workerUsage = `earthcatalog-compact worker [--memory-budget-mb N] [--memory-mb N] [--max-concurrent-buckets N]
    [--scratch-dir DIR] [--duckdb-threads N] [--shutdown-grace SECONDS] [--metrics-bind host:port]
    [--address host:port] [--namespace NS] [--task-queue Q]`;

export async function runWorkerCommand(argv: string[]): Promise<number> {
  const { values } = parse(argv, {
    ...connectionFlags,
    'memory-budget-mb': { type: 'string' },
    'memory-mb': { type: 'string' },
    'max-concurrent-buckets': { type: 'string' },
    'scratch-dir': { type: 'string' },
    'duckdb-threads': { type: 'string' },
    'shutdown-grace': { type: 'string' },
    'metrics-bind': { type: 'string' },
  });
  const num = (k: keyof typeof values) => {
    const v = values[k];
    return wholeNumberFlag(k, typeof v === 'string' ? v : undefined, true);
  };
  const budget = num('memory-budget-mb');
  const memory = num('memory-mb');
  const grace = flagOrVariable(values['shutdown-grace'], '--shutdown-grace', 'EARTHCATALOG_SHUTDOWN_GRACE_SECONDS');
  if (grace.raw !== undefined && !/^\d+$/.test(grace.raw)) {
    throw new UsageError(`${grace.source} must be a whole number of seconds >= 0, got ${JSON.stringify(grace.raw)}`);
  }
  const shutdownGraceSeconds = grace.raw === undefined ? undefined : Number(grace.raw);
  const metrics = flagOrVariable(values['metrics-bind'], '--metrics-bind', 'EARTHCATALOG_METRICS_BIND');
  // An empty variable means unset (as a deployment template leaves it); an empty flag is a mistake.
  const metricsBindAddress = metrics.source === '--metrics-bind' ? metrics.raw : metrics.raw || undefined;
  const metricsSocket = metricsBindAddress === undefined ? undefined : await socketAddress(metrics.source, metricsBindAddress);
  let fromEnvironment;
  try {
    // The settings from the environment are read by the plugin; a bad one is the operator's, like a bad flag.
    fromEnvironment = defaultActivityResources();
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const budgetGiven = flagOrVariable(values['memory-budget-mb'], '--memory-budget-mb', 'EARTHCATALOG_MEMORY_BUDGET_MB');
  const maxConcurrentBuckets = num('max-concurrent-buckets');
  const problem = bucketSettingsProblem(
    { memoryBudgetMb: bucketBudgetMb(budgetGiven.raw !== undefined ? (budget ?? fromEnvironment.memoryBudgetMb) : undefined, memory), memoryMb: memory, maxConcurrentBuckets },
    { memoryBudgetMb: budgetGiven.raw !== undefined ? budgetGiven.source : '--memory-budget-mb', memoryMb: '--memory-mb', maxConcurrentBuckets: '--max-concurrent-buckets' },
    budgetGiven.raw !== undefined,
  );
  if (problem) throw new UsageError(problem);
  const target = resolveTarget({ address: values.address, namespace: values.namespace, taskQueue: values['task-queue'] });
  await runWorker({
    ...target,
    memoryBudgetMb: budget,
    memoryMb: memory,
    maxConcurrentBuckets,
    duckdbThreads: num('duckdb-threads'),
    scratchDir: values['scratch-dir'],
    shutdownGraceSeconds,
    metricsBindAddress: metricsSocket,
  });
  return 0;
}

/** A setting from its flag, else its environment variable; `source` names whichever gave it, for errors. */
function flagOrVariable(flagValue: string | undefined, flag: string, variable: string): { raw: string | undefined; source: string } {
  return flagValue !== undefined ? { raw: flagValue, source: flag } : { raw: process.env[variable], source: variable };
}

/**
 * `host:port` as the socket address the metrics exporter takes (an IP address and a port): a host name
 * (`localhost`) is resolved here, since the exporter takes none.
 */
async function socketAddress(source: string, value: string): Promise<string> {
  const m = /^(\[([0-9a-fA-F:.]+)\]|[^\s:/[\]]+):(\d{1,5})$/.exec(value);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port < 1 || port > 65535) throw new UsageError(`${source} must be host:port with a port from 1 to 65535 (e.g. 0.0.0.0:9464), got ${JSON.stringify(value)}`);
  const host = m[2] ?? m[1]!;
  const ip = isIP(host) ? host : await lookup(host).then(
    (found) => found.address,
    (err: NodeJS.ErrnoException) => {
      throw new UsageError(`${source} ${value}: the host ${host} does not resolve (${err.code ?? err.message})`);
    },
  );
  return isIP(ip) === 6 ? `[${ip}]:${port}` : `${ip}:${port}`;
}
