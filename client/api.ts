/**
 * The TypeScript API, as the Python tool had one:
 *
 *   const summary = await compactWarehouse({ warehouse: '/data/wh', catalog: '/data/catalog.db', threshold: 2 });
 *
 * It starts the `compactWarehouse` workflow on the Temporal service named by the options or the
 * TEMPORAL_* variables and waits for its summary; a worker must be running on the task queue.
 */
import type { CompactionInput, CompactionSummary } from '../workflows/contract';
import type { CompactionProgress } from '../workflows/progress';
import { connectClient, resolveTarget } from './connection';
import { followCompaction, startCompaction } from './start-compaction';

export interface CompactWarehouseOptions {
  address?: string;
  namespace?: string;
  taskQueue?: string;
  workflowId?: string;
  /** About twice a second while the run goes on, and once more with phase `done` when it completed. */
  onProgress?: (p: CompactionProgress) => void;
}

export async function compactWarehouse(input: CompactionInput, opts: CompactWarehouseOptions = {}): Promise<CompactionSummary> {
  const target = resolveTarget(opts);
  const client = await connectClient(target);
  try {
    const handle = await startCompaction(client, input, { taskQueue: target.taskQueue, workflowId: opts.workflowId });
    return await followCompaction(handle, opts.onProgress);
  } finally {
    await client.connection.close();
  }
}
