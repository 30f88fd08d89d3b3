/**
 * Reads only the footer of a Parquet file (a few range reads, never the data) for the catalog rebuild:
 * row count, top-level columns and key-value metadata.
 */
import { parquetMetadataAsync } from 'hyparquet';
import type { AsyncBuffer, FileMetaData, SchemaElement } from 'hyparquet';
import type { WarehouseStore } from '../storage/warehouse-store';

export interface FooterColumn {
  name: string;
  /** Parquet physical type; undefined for a group (struct, list, map). */
  physicalType?: string;
  /** Logical or converted type when the file declares one (STRING, TIMESTAMP(MICROS,UTC) ...). */
  logicalType?: string;
}

export interface ParquetFooter {
  numRows: number;
  columns: FooterColumn[];
  kv: Record<string, string>;
}

/** The file is not a readable Parquet file; the message names the key. */
export class ParquetFooterError extends Error {
  constructor(
    readonly key: string,
    readonly reason: string,
  ) {
    super(`cannot read the Parquet footer of ${key}: ${reason}`);
    this.name = 'ParquetFooterError';
  }
}

// "PAR1" at the start, then the footer: metadata, its 4-byte length and "PAR1" again.
const MIN_PARQUET_SIZE = 12;

/** `size` is the object's size from the listing (saves a stat per file). */
export async function readParquetFooter(store: WarehouseStore, key: string, size: number): Promise<ParquetFooter> {
  if (size === 0) throw new ParquetFooterError(key, 'the file is empty (0 bytes)');
  if (size < MIN_PARQUET_SIZE) throw new ParquetFooterError(key, `the file is truncated (${size} bytes)`);
  const buffer: AsyncBuffer = {
    byteLength: size,
    slice: async (start: number, end?: number) => {
      const stop = end ?? size;
      const bytes = await store.readRange(key, start, stop);
      if (bytes.length !== stop - start) {
        throw new ParquetFooterError(key, `the file is shorter than listed (read ${bytes.length} of ${stop - start} bytes at ${start})`);
      }
      return new Uint8Array(bytes).buffer;
    },
  };
  let meta: FileMetaData;
  try {
    const head = await store.readRange(key, 0, 4);
    if (Buffer.from(head).toString('latin1') !== 'PAR1') throw new ParquetFooterError(key, 'bad magic at the start (not a Parquet file)');
    meta = await parquetMetadataAsync(buffer, { geoparquet: false });
  } catch (err) {
    if (err instanceof ParquetFooterError) throw err;
    const msg = (err as Error).message;
    throw new ParquetFooterError(key, /PAR1/.test(msg) ? 'bad magic at the end (truncated or not a Parquet file)' : msg);
  }
  const numRows = Number(meta.num_rows);
  if (!Number.isSafeInteger(numRows) || numRows < 0) throw new ParquetFooterError(key, `implausible row count ${meta.num_rows}`);
  const kv: Record<string, string> = {};
  for (const { key: k, value } of meta.key_value_metadata ?? []) if (!(k in kv)) kv[k] = value ?? '';
  return { numRows, columns: topLevelColumns(meta.schema, key), kv };
}

/** The schema is a depth-first flattened tree; element 0 is the root, its children are the columns. */
function topLevelColumns(schema: SchemaElement[], key: string): FooterColumn[] {
  const root = schema[0];
  if (!root) throw new ParquetFooterError(key, 'the footer has no schema');
  const columns: FooterColumn[] = [];
  let i = 1;
  const skipSubtree = (): void => {
    const el = schema[i++];
    if (!el) throw new ParquetFooterError(key, 'the footer schema is truncated');
    for (let c = 0; c < (el.num_children ?? 0); c++) skipSubtree();
  };
  for (let c = 0; c < (root.num_children ?? 0); c++) {
    const el = schema[i];
    if (!el) throw new ParquetFooterError(key, 'the footer schema is truncated');
    columns.push({ name: el.name, physicalType: el.num_children ? undefined : el.type, logicalType: describeLogicalType(el) });
    skipSubtree();
  }
  return columns;
}

function describeLogicalType(el: SchemaElement): string | undefined {
  const lt = el.logical_type;
  if (lt) {
    if (lt.type === 'TIMESTAMP' || lt.type === 'TIME') return `${lt.type}(${lt.unit},${lt.isAdjustedToUTC ? 'UTC' : 'local'})`;
    if (lt.type === 'DECIMAL') return `DECIMAL(${lt.precision},${lt.scale})`;
    if (lt.type === 'INTEGER') return `INTEGER(${lt.bitWidth},${lt.isSigned ? 'signed' : 'unsigned'})`;
    return lt.type;
  }
  return el.converted_type;
}
