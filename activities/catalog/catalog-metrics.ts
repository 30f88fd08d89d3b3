/**
 * What a worker's Prometheus endpoint tells about the rebuilds it committed: a run whose table registers
 * files readers cannot use ends with exit 3 for the CLI that follows it, but a scheduled run has no such
 * CLI, so these counters are what an alert watches (`increase(…[8d]) > 0` over a weekly schedule).
 * Counters, not gauges: with several workers, each rebuild is counted once, by the worker that ran it.
 */
import type { MetricMeter } from '@temporalio/common';
import type { CatalogResult } from '../../workflows/contract';

type ProblemCounts = Pick<
  CatalogResult,
  'unreadable' | 'unreadableTotal' | 'schemaMismatches' | 'schemaMismatchesTotal' | 'partitionMismatches' | 'partitionMismatchesTotal' | 'droppedRegistrations' | 'droppedRegistrationsTotal'
>;

const KINDS = ['unreadable', 'schema_mismatch', 'partition_mismatch', 'dropped_registration'] as const;

const rebuilds = (meter: MetricMeter) => meter.createCounter('earthcatalog_catalog_rebuilds', 'rebuilds', 'Catalog rebuilds committed');
const problemFiles = (meter: MetricMeter) =>
  meter.createCounter(
    'earthcatalog_catalog_problem_files',
    'files',
    'Data files a committed rebuild found readers cannot use as the table, by kind: unreadable and dropped_registration (not listed), schema_mismatch and partition_mismatch (listed)',
  );

/**
 * Every series at 0 when the worker starts, with the tags the rebuild activity's meter gives them
 * (`meter`): Prometheus' increase() takes a series' first sample as its start, so a series that first
 * appears at 3 would hide the problems of the first rebuild after each worker start.
 */
export function startCatalogMetrics(meter: MetricMeter): void {
  rebuilds(meter).add(0);
  const files = problemFiles(meter);
  for (const kind of KINDS) files.add(0, { kind });
}

export function recordCatalogRebuild(meter: MetricMeter, r: ProblemCounts): void {
  rebuilds(meter).add(1);
  const files = problemFiles(meter);
  const kinds: [(typeof KINDS)[number], number][] = [
    ['unreadable', r.unreadableTotal ?? r.unreadable.length],
    ['schema_mismatch', r.schemaMismatchesTotal ?? r.schemaMismatches?.length ?? 0],
    ['partition_mismatch', r.partitionMismatchesTotal ?? r.partitionMismatches?.length ?? 0],
    ['dropped_registration', r.droppedRegistrationsTotal ?? r.droppedRegistrations?.length ?? 0],
  ];
  for (const [kind, n] of kinds) if (n > 0) files.add(n, { kind });
}
