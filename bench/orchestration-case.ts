/**
 * Many tiny buckets through the real `compactWarehouse` workflow: a Temporal dev server, an in-process
 * worker with the plugin, one workflow run. The phases are read back from the workflow histories
 * (every run of the continue-as-new chain), so planning and the catalog rebuild are reported apart
 * from the bucket activities.
 */
import * as path from 'node:path';
import { bundleWorkflowCode, DefaultLogger, Runtime, Worker } from '@temporalio/worker';
import { WorkerLogger } from '../worker/worker';
import type { Client } from '@temporalio/client';
import { startDevServer } from '../client/temporal-cli';
import { EarthcatalogCompactionPlugin, workflowsPath } from '../worker/plugin';
import type { CompactionSummary } from '../workflows/contract';
import type { ChildJob } from './child-jobs';
import type { Measured } from './measure';

interface Span {
  first: number;
  last: number;
}

interface HistoryTimestamp {
  seconds?: { toString(): string } | number | null;
  nanos?: number | null;
}

function toMs(ts: HistoryTimestamp | null | undefined): number {
  if (!ts) return 0;
  return Number(String(ts.seconds ?? 0)) * 1000 + (ts.nanos ?? 0) / 1e6;
}

/** Scheduled-to-completed span of every activity type across all runs of the workflow id. */
async function activitySpans(client: Client, workflowId: string): Promise<Map<string, Span>> {
  const spans = new Map<string, Span>();
  for await (const run of client.workflow.list({ query: `WorkflowId = '${workflowId}'` })) {
    const history = await client.workflow.getHandle(workflowId, run.runId).fetchHistory();
    const typeOf = new Map<string, string>();
    for (const e of history.events ?? []) {
      const at = toMs(e.eventTime);
      const scheduled = e.activityTaskScheduledEventAttributes;
      const done = e.activityTaskCompletedEventAttributes ?? e.activityTaskFailedEventAttributes;
      let type: string | undefined;
      if (scheduled) {
        type = scheduled.activityType?.name ?? 'unknown';
        typeOf.set(String(e.eventId), type);
      } else if (done) {
        type = typeOf.get(String(done.scheduledEventId));
      }
      if (!type) continue;
      const span = spans.get(type);
      if (!span) spans.set(type, { first: at, last: at });
      else {
        span.first = Math.min(span.first, at);
        span.last = Math.max(span.last, at);
      }
    }
  }
  return spans;
}

export async function runOrchestration(job: Extract<ChildJob, { kind: 'orchestration' }>, m: Measured): Promise<void> {
  Runtime.install({ logger: new WorkerLogger('WARN') });
  const server = await startDevServer();
  try {
    const workflowBundle = await bundleWorkflowCode({ workflowsPath: workflowsPath(), logger: new DefaultLogger('WARN') });
    const taskQueue = `bench-${process.pid}`;
    const worker = await Worker.create({
      connection: server.env.nativeConnection,
      namespace: server.namespace,
      taskQueue,
      plugins: [
        new EarthcatalogCompactionPlugin({
          memoryBudgetMb: job.settings.memoryMb,
          duckdbThreads: job.settings.threads,
          maxConcurrentBuckets: job.parallel,
          scratchDir: path.join(job.settings.scratch, 'activities'),
          workflowBundle,
        }),
      ],
    });
    const running = worker.run();
    const workflowId = `bench-tiny-${Date.now()}`;
    let summary: CompactionSummary | undefined;
    try {
      summary = await m.time(
        () =>
          server.env.client.workflow.execute('compactWarehouse', {
            taskQueue,
            workflowId,
            args: [{ warehouse: job.warehouse, catalog: job.catalog, maxParallelBuckets: job.parallel }],
            workflowExecutionTimeout: '2 hours',
          }) as Promise<CompactionSummary>,
      );
    } finally {
      worker.shutdown();
      await running;
    }
    const spans = await activitySpans(server.env.client, workflowId);
    const seconds = (type: string): number => {
      const s = spans.get(type);
      return s ? (s.last - s.first) / 1000 : 0;
    };
    m.set({
      rowsIn: summary.rowsBefore,
      rowsOut: summary.rowsAfter,
      buckets: summary.bucketsCompacted,
      bucketsFailed: summary.failedBucketsTotal,
      workflowRuns: summary.workflowRuns,
      phases: [
        ['plan', seconds('planCompaction')],
        ['buckets', seconds('compactBucket')],
        ['catalog', seconds('rebuildCatalog')],
      ],
    });
  } finally {
    await server.stop();
  }
}
