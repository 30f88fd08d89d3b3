/** How the client processes find Temporal: flags first, then the standard TEMPORAL_* variables. */
import { Client, Connection } from '@temporalio/client';
import { DEFAULT_TASK_QUEUE } from '../workflows/contract';

export interface TemporalTarget {
  address: string;
  namespace: string;
  taskQueue: string;
}

export function resolveTarget(flags: { address?: string; namespace?: string; taskQueue?: string }): TemporalTarget {
  return {
    address: flags.address ?? process.env.TEMPORAL_ADDRESS ?? 'localhost:7233',
    namespace: flags.namespace ?? process.env.TEMPORAL_NAMESPACE ?? 'default',
    taskQueue: flags.taskQueue ?? process.env.EARTHCATALOG_TASK_QUEUE ?? DEFAULT_TASK_QUEUE,
  };
}

export async function connectClient(target: TemporalTarget): Promise<Client> {
  try {
    const connection = await Connection.connect({ address: target.address, connectTimeout: '10 seconds' });
    return new Client({ connection, namespace: target.namespace });
  } catch (err) {
    throw new Error(`cannot reach Temporal at ${target.address}: ${(err as Error).message}`);
  }
}
