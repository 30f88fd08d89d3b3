/**
 * Picks the catalog backend for a normalized `catalog` location (see workflows/contract.ts):
 * an absolute path to catalog.db, s3://.../catalog.db, or an S3 Tables table-bucket ARN.
 * Credentials come from the worker's environment, never from the location.
 */
import type { IcebergCatalogBackend } from './catalog-backend';
import { SqliteCatalogBackend } from './sqlite-catalog';

const S3TABLES_ARN = /^arn:aws[a-z-]*:s3tables:/;

export async function openCatalogBackend(catalog: string, warehouseRoot: string, catalogName: string): Promise<IcebergCatalogBackend> {
  // ---- S3 backends: filled in by the S3 implementation ----------------------------------------------
  // catalog.db kept in S3:   const { S3CatalogDbBackend } = await import('./s3-catalog-db'); return S3CatalogDbBackend...(catalog, warehouseRoot, catalogName)
  // Amazon S3 Tables:        const { S3TablesCatalogBackend } = await import('./s3tables-catalog'); return ...
  // A local catalog.db with an s3:// warehouse needs an S3 MetadataFileIO passed as `io` to SqliteCatalogBackend.
  if (catalog.startsWith('s3://')) throw new Error(`a catalog.db kept in S3 (${catalog}) is not supported yet`);
  if (S3TABLES_ARN.test(catalog)) throw new Error(`Amazon S3 Tables catalogs (${catalog}) are not supported yet`);
  if (warehouseRoot.startsWith('s3://')) throw new Error(`a local catalog.db with an S3 warehouse (${warehouseRoot}) is not supported yet`);
  // ------------------------------------------------------------------------------------------------------
  if (!catalog.startsWith('/')) throw new Error(`catalog must be an absolute path to catalog.db, s3://.../catalog.db or an S3 Tables ARN: ${catalog}`);
  return new SqliteCatalogBackend({ catalogDbPath: catalog, catalogName, warehouseRootUri: warehouseRoot });
}
