/**
 * What a worker's Prometheus endpoint (`worker --metrics-bind`) tells about its buckets, beside the
 * SDK's own task metrics (slots used, schedule-to-start latency, failures per activity type): rows and
 * bytes through the engine, duplicates dropped, out-of-memory failures, and bucket tasks that wait for
 * this worker's memory, the sign that a run asks for more parallel buckets than the fleet holds. The
 * activity context's meter tags them with the task queue and activity type; without an exporter it
 * records nothing.
 */
import type { MetricMeter } from '@temporalio/common';
import type { BucketResult } from '../../workflows/contract';

export function recordBucketResult(meter: MetricMeter, r: BucketResult): void {
  const tags = { outcome: r.outcome };
  meter.createCounter('earthcatalog_buckets', 'buckets', 'Buckets finished, by outcome').add(1, tags);
  // Counted once per bucket: a bucket found already compacted read and wrote nothing in this attempt.
  if (r.outcome !== 'compacted') return;
  meter.createCounter('earthcatalog_bucket_rows_in', 'rows', 'Rows read from bucket inputs').add(r.rowsIn);
  meter.createCounter('earthcatalog_bucket_rows_out', 'rows', 'Rows written to compacted outputs').add(r.rowsOut);
  meter.createCounter('earthcatalog_bucket_bytes_in', 'bytes', 'Bytes of bucket inputs').add(r.bytesIn);
  meter.createCounter('earthcatalog_bucket_bytes_out', 'bytes', 'Bytes of compacted outputs').add(r.bytesOut);
}

/**
 * A bucket attempt that failed, by failure type and whether it is retried: `retryable="false"` ends the
 * bucket (bad data, a missing input, denied storage), the run then counting it failed, which asks for a
 * person; retried attempts (a transient storage error, a worker's memory) show a struggling fleet.
 */
export function recordBucketFailure(meter: MetricMeter, type: string, retryable: boolean): void {
  meter.createCounter('earthcatalog_bucket_failures', 'attempts', 'Bucket attempts that failed, by failure type and whether they are retried').add(1, { type, retryable: String(retryable) });
}

export function recordMemoryFailure(meter: MetricMeter): void {
  meter.createCounter('earthcatalog_bucket_out_of_memory', 'attempts', 'Bucket attempts that ran DuckDB out of its memory limit').add(1);
}

export function recordWaitingForMemory(meter: MetricMeter, waiting: number): void {
  meter.createGauge('earthcatalog_bucket_tasks_waiting', 'int', 'tasks', 'Bucket tasks on this worker waiting for a bucket slot (its memory)').set(waiting);
}
