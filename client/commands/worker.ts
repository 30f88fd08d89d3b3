import { connectionFlags, parse, UsageError } from '../cli-args';
import { resolveTarget } from '../connection';
import { runWorker } from '../../worker/worker';

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
    if (v === undefined || typeof v !== 'string') return undefined;
    const n = Number(v);
    if (!Number.isInteger(n) || n <= 0) throw new UsageError(`--${k} must be a positive whole number`);
    return n;
  };
  const graceFlag = values['shutdown-grace'];
  const graceRaw = graceFlag ?? process.env.EARTHCATALOG_SHUTDOWN_GRACE_SECONDS;
  if (graceRaw !== undefined && !/^\d+$/.test(graceRaw)) {
    const source = graceFlag !== undefined ? '--shutdown-grace' : 'EARTHCATALOG_SHUTDOWN_GRACE_SECONDS';
    throw new UsageError(`${source} must be a whole number of seconds >= 0, got ${JSON.stringify(graceRaw)}`);
  }
  const shutdownGraceSeconds = graceRaw === undefined ? undefined : Number(graceRaw);
  const metricsFlag = values['metrics-bind'];
  const metricsBindAddress = metricsFlag ?? (process.env.EARTHCATALOG_METRICS_BIND || undefined);
  if (metricsBindAddress !== undefined && !/^(\[[0-9a-fA-F:.]+\]|[^\s:/]+):\d{1,5}$/.test(metricsBindAddress)) {
    const source = metricsFlag !== undefined ? '--metrics-bind' : 'EARTHCATALOG_METRICS_BIND';
    throw new UsageError(`${source} must be host:port (e.g. 0.0.0.0:9464), got ${JSON.stringify(metricsBindAddress)}`);
  }
  const target = resolveTarget({ address: values.address, namespace: values.namespace, taskQueue: values['task-queue'] });
  await runWorker({
    ...target,
    memoryBudgetMb: num('memory-budget-mb'),
    memoryMb: num('memory-mb'),
    maxConcurrentBuckets: num('max-concurrent-buckets'),
    duckdbThreads: num('duckdb-threads'),
    scratchDir: values['scratch-dir'],
    shutdownGraceSeconds,
    metricsBindAddress,
  });
  return 0;
}
