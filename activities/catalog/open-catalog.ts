/**
 * Picks the catalog backend for a normalized `catalog` location (see workflows/contract.ts):
 * an absolute path to catalog.db, s3://.../catalog.db, or an S3 Tables table-bucket ARN.
 * Credentials come from the worker's environment, never from the location.
 */
import { constants as fsConstants, promises as fs } from 'node:fs';
import * as path from 'node:path';
import type { IcebergCatalogBackend } from './catalog-backend';
import { StorageError } from '../storage/warehouse-store';
import { SqliteCatalogBackend } from './sqlite-catalog';
import { isS3TablesCatalog } from '../../workflows/contract';

/**
 * Whether `catalog` is a local catalog.db that does not exist yet. Opening one creates it, so whatever
 * only looks (verify, the run's pre-flight) asks first: a run that then fails, say on a mistyped
 * warehouse, must not leave an empty catalog behind.
 */
export async function isAbsentLocalCatalog(catalog: string): Promise<boolean> {
  return catalog.startsWith('/') && !(await fs.stat(catalog).catch(() => undefined));
}

/**
 * The pre-flight of a catalog.db that does not exist yet: the rebuild creates it (and its folders), which a
 * read-only filesystem or a folder of another owner refuses only then, after every bucket deleted its
 * inputs. The nearest existing folder must be writable; nothing is created to find out.
 */
export async function assertLocalCatalogCreatable(catalog: string): Promise<void> {
  let dir = path.dirname(catalog);
  while (path.dirname(dir) !== dir && !(await fs.stat(dir).then(() => true, () => false))) dir = path.dirname(dir);
  await fs.access(dir, fsConstants.W_OK).catch((err: NodeJS.ErrnoException) => {
    throw new StorageError(`catalog ${catalog} cannot be created: ${dir} is not writable (${err.code ?? err.message})`, 'denied');
  });
}

/**
 * `scratchDir`: where a catalog.db kept in S3 is worked on (a worker passes its own scratch claim, which
 * the next worker sweeps if this one is killed; else the system's temporary directory). `readOnly`: for
 * what only reads (verify): a catalog.db is neither created nor given tables, and an absent one is
 * CatalogAbsentError.
 */
export async function openCatalogBackend(
  catalog: string,
  warehouseRoot: string,
  catalogName: string,
  opts: { scratchDir?: string; readOnly?: boolean } = {},
): Promise<IcebergCatalogBackend> {
  // Loaded on first use, like the S3 warehouse store: a purely local worker never loads the AWS SDK.
  if (catalog.startsWith('s3://')) {
    const { S3CatalogDbBackend } = require('./s3-catalog-db') as typeof import('./s3-catalog-db');
    return S3CatalogDbBackend.open(catalog, warehouseRoot, catalogName, { scratchDir: opts.scratchDir, readOnly: opts.readOnly });
  }
  if (isS3TablesCatalog(catalog)) {
    const { S3TablesCatalogBackend } = require('./s3tables-catalog') as typeof import('./s3tables-catalog');
    return S3TablesCatalogBackend.open(catalog);
  }
  if (warehouseRoot.startsWith('s3://') && catalog.startsWith('/')) {
    const { LocalCatalogDbWithS3Metadata } = require('./s3-catalog-db') as typeof import('./s3-catalog-db');
    return LocalCatalogDbWithS3Metadata.open(catalog, warehouseRoot, catalogName, { readOnly: opts.readOnly });
  }
  if (!catalog.startsWith('/')) throw new Error(`catalog must be an absolute path to catalog.db, s3://.../catalog.db or an S3 Tables ARN: ${catalog}`);
  return new SqliteCatalogBackend({ catalogDbPath: catalog, catalogName, warehouseRootUri: warehouseRoot, readOnly: opts.readOnly });
}
