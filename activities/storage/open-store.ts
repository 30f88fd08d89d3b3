import type { WarehouseStore } from './warehouse-store';
import { LocalWarehouseStore } from './local-store';

/**
 * Opens the backend for a normalized warehouse location. Credentials come from the process
 * environment of the worker (the SDK's default chain), never from the location or the workflow input.
 */
export async function openWarehouseStore(location: string): Promise<WarehouseStore> {
  if (location.startsWith('s3://')) {
    // Loaded on first use: a worker of local warehouses never pays for loading the AWS SDK.
    const { S3WarehouseStore } = require('./s3-store') as typeof import('./s3-store');
    return S3WarehouseStore.fromUri(location);
  }
  if (!location.startsWith('/')) throw new Error(`warehouse must be an absolute path or s3:// URI: ${location}`);
  return new LocalWarehouseStore(location);
}
