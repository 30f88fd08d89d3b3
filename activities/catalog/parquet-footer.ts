/**
 * Reads only the footer of a Parquet file (a few range reads, never the data) for the catalog rebuild:
 * row count, top-level columns with their statistics over all row groups, and key-value metadata.
 */
import { parquetMetadataAsync } from 'hyparquet';
import type { AsyncBuffer, ColumnMetaData, FileMetaData, ParquetParsers, SchemaElement, Statistics } from 'hyparquet';
import type { WarehouseStore } from '../storage/warehouse-store';

/** A statistics value as stored: integers, floats, booleans, or the raw bytes of a byte array. */
export type StatValue = bigint | number | boolean | Uint8Array;

/** A column's chunks summed over the file's row groups. */
export interface ColumnTotals {
  /** Values including nulls. */
  valueCount: number;
  /** Undefined when a row group does not say. */
  nullCount?: number;
  compressedBytes: number;
  /** Smallest and largest non-null value; undefined unless every row group with values has both, neither NaN and min <= max. */
  min?: StatValue;
  max?: StatValue;
}

/** A column's node in the file's schema tree, for the Iceberg type it reads as (schema-evolution.ts). */
export interface ParquetNode {
  name: string;
  repetition?: 'REQUIRED' | 'OPTIONAL' | 'REPEATED';
  /** Undefined for a group. */
  physicalType?: string;
  logicalType?: string;
  typeLength?: number;
  /** The Parquet field id an Iceberg writer gave the column; readers match it before any name. */
  fieldId?: number;
  children?: ParquetNode[];
}

export interface FooterColumn {
  name: string;
  node: ParquetNode;
  /** Parquet physical type; undefined for a group (struct, list, map). */
  physicalType?: string;
  /** Logical or converted type when the file declares one (STRING, TIMESTAMP(MICROS,UTC) ...). */
  logicalType?: string;
  /** Statistics of a primitive top-level column. */
  totals?: ColumnTotals;
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

/** First read from a file's end (hyparquet's default is 512 KB, most of a small part file). */
const FOOTER_FETCH_BYTES = 64 * 1024;

/** `size` is the object's size from the listing (saves a stat per file). */
export async function readParquetFooter(store: WarehouseStore, key: string, size: number): Promise<ParquetFooter> {
  if (size === 0) throw new ParquetFooterError(key, 'the file is empty (0 bytes)');
  if (size < MIN_PARQUET_SIZE) throw new ParquetFooterError(key, `the file is truncated (${size} bytes)`);
  // A failed read (throttled, denied, gone) is the store's error, not damage of the file: it is thrown as
  // it is, whatever the Parquet reader makes of it, so that callers retry or name it as such.
  let readFailure: { err: unknown } | undefined;
  const readRange = (start: number, stop: number): Promise<Uint8Array> =>
    store.readRange(key, start, stop).catch((err: unknown) => {
      readFailure ??= { err };
      throw err;
    });
  const buffer: AsyncBuffer = {
    byteLength: size,
    slice: async (start: number, end?: number) => {
      const stop = end ?? size;
      const bytes = await readRange(start, stop);
      if (bytes.length !== stop - start) {
        throw new ParquetFooterError(key, `the file is shorter than listed (read ${bytes.length} of ${stop - start} bytes at ${start})`);
      }
      return new Uint8Array(bytes).buffer;
    },
  };
  let meta: FileMetaData;
  try {
    // The leading magic and the footer are read at once: a weekly rebuild reads every file of the warehouse,
    // and one round trip per file instead of two is most of its time on S3.
    // 64 KB holds the footer of a typical part; a compacted file's larger footer takes a second read of its exact size.
    const [head, footer] = await Promise.allSettled([
      readRange(0, 4),
      parquetMetadataAsync(buffer, { geoparquet: false, parsers: RAW_STATISTICS, initialFetchSize: FOOTER_FETCH_BYTES }),
    ]);
    if (head.status === 'rejected') throw head.reason;
    if (Buffer.from(head.value).toString('latin1') !== 'PAR1') throw new ParquetFooterError(key, 'bad magic at the start (not a Parquet file)');
    if (footer.status === 'rejected') throw footer.reason;
    meta = footer.value;
  } catch (err) {
    if (readFailure) throw readFailure.err;
    if (err instanceof ParquetFooterError) throw err;
    const msg = (err as Error).message;
    throw new ParquetFooterError(key, /PAR1/.test(msg) ? 'bad magic at the end (truncated or not a Parquet file)' : msg);
  }
  const numRows = Number(meta.num_rows);
  if (!Number.isSafeInteger(numRows) || numRows < 0) throw new ParquetFooterError(key, `implausible row count ${meta.num_rows}`);
  const kv: Record<string, string> = {};
  for (const { key: k, value } of meta.key_value_metadata ?? []) if (!(k in kv)) kv[k] = value ?? '';
  const columns = topLevelColumns(meta.schema, key);
  const totals = columnTotals(meta, columns);
  for (const c of columns) if (c.physicalType) c.totals = totals.get(c.name);
  return { numRows, columns, kv };
}

/**
 * Statistics are kept as stored: the default parsers turn timestamps into Dates (losing micro- and
 * nanoseconds) and bytes into strings, and catalog bounds must be exact or wider.
 */
const RAW_STATISTICS: Partial<ParquetParsers> = {
  timestampFromMilliseconds: (v) => v,
  timestampFromMicroseconds: (v) => v,
  timestampFromNanoseconds: (v) => v,
  dateFromDays: (v) => v,
  stringFromBytes: (v) => v,
  jsonFromBytes: (v) => v,
  geometryFromBytes: (v) => v,
  geographyFromBytes: (v) => v,
  uuidFromBytes: (v) => v,
};

function asStatValue(v: Statistics['min_value']): StatValue | undefined {
  return typeof v === 'string' || v instanceof Date ? undefined : v;
}

/**
 * Unsigned byte order for byte arrays (Parquet's and Iceberg's order for strings and binary);
 * undefined for values of different kinds, or NaN, which no bound may be derived from. NaN is no
 * smaller and no greater than any number, so ordered as equal it would neither widen nor void a bound
 * (a row group with a NaN maximum after one with 5 kept the bound at 5, whatever its rows held): some
 * writers order NaN greatest and store it as a min or max in place of the row group's real extreme.
 */
export function compareStatValues(a: StatValue, b: StatValue): number | undefined {
  if (a instanceof Uint8Array && b instanceof Uint8Array) return Buffer.compare(a, b);
  if (typeof a === 'bigint' && typeof b === 'bigint') return a < b ? -1 : a > b ? 1 : 0;
  if (typeof a === 'number' && typeof b === 'number') return Number.isNaN(a) || Number.isNaN(b) ? undefined : a < b ? -1 : a > b ? 1 : 0;
  if (typeof a === 'boolean' && typeof b === 'boolean') return Number(a) - Number(b);
  return undefined;
}

/**
 * min_value/max_value, or for numbers the deprecated min/max (written with signed comparison, which is
 * right for signed numbers only; byte arrays and unsigned integers were ordered wrongly by old writers).
 */
function chunkBounds(md: ColumnMetaData, unsigned: boolean): { min?: StatValue; max?: StatValue } {
  const st = md.statistics;
  if (!st) return {};
  const legacyOk = !unsigned && md.type !== 'BYTE_ARRAY' && md.type !== 'FIXED_LEN_BYTE_ARRAY';
  return {
    min: asStatValue(st.min_value) ?? (legacyOk ? asStatValue(st.min) : undefined),
    max: asStatValue(st.max_value) ?? (legacyOk ? asStatValue(st.max) : undefined),
  };
}

function columnTotals(meta: FileMetaData, columns: readonly FooterColumn[]): Map<string, ColumnTotals> {
  const unsigned = new Set(columns.filter((c) => /unsigned\)$|^UINT_/.test(c.logicalType ?? '')).map((c) => c.name));
  const out = new Map<string, ColumnTotals & { boundsKnown: boolean }>();
  for (const rg of meta.row_groups) {
    for (const chunk of rg.columns) {
      const md = chunk.meta_data;
      if (!md || md.path_in_schema.length !== 1) continue; // nested leaves get no file-level metrics
      const name = md.path_in_schema[0]!;
      const t = out.get(name) ?? { valueCount: 0, nullCount: 0, compressedBytes: 0, boundsKnown: true };
      const values = Number(md.num_values);
      const nulls = md.statistics?.null_count;
      t.valueCount += values;
      t.compressedBytes += Number(md.total_compressed_size);
      t.nullCount = t.nullCount === undefined || nulls === undefined ? undefined : t.nullCount + Number(nulls);
      if (nulls === undefined || Number(nulls) < values) {
        const { min, max } = chunkBounds(md, unsigned.has(name));
        // A row group's own min and max must be ordered too: a NaN in the first one would otherwise become the running bound.
        const own = min === undefined || max === undefined ? undefined : compareStatValues(min, max);
        const lower = min === undefined || t.min === undefined ? 0 : compareStatValues(min, t.min);
        const upper = max === undefined || t.max === undefined ? 0 : compareStatValues(max, t.max);
        if (own === undefined || own > 0 || lower === undefined || upper === undefined) t.boundsKnown = false;
        else {
          if (t.min === undefined || lower < 0) t.min = min;
          if (t.max === undefined || upper > 0) t.max = max;
        }
      }
      out.set(name, t);
    }
  }
  const totals = new Map<string, ColumnTotals>();
  for (const [name, { boundsKnown, min, max, ...counts }] of out) totals.set(name, boundsKnown ? { ...counts, min, max } : counts);
  return totals;
}


/** The schema is a depth-first flattened tree; element 0 is the root, its children are the columns. */
function topLevelColumns(schema: SchemaElement[], key: string): FooterColumn[] {
  const root = schema[0];
  if (!root) throw new ParquetFooterError(key, 'the footer has no schema');
  const columns: FooterColumn[] = [];
  let i = 1;
  const subtree = (depth: number): ParquetNode => {
    const el = schema[i++];
    if (!el) throw new ParquetFooterError(key, 'the footer schema is truncated');
    // A schema nested this deep is damage, not data (and would exhaust the stack).
    if (depth > 64) throw new ParquetFooterError(key, 'the footer schema is nested more than 64 levels deep');
    const node: ParquetNode = { name: el.name, repetition: el.repetition_type, logicalType: describeLogicalType(el) };
    if (el.num_children) node.children = Array.from({ length: el.num_children }, () => subtree(depth + 1));
    else node.physicalType = el.type;
    if (el.type_length !== undefined) node.typeLength = el.type_length;
    if (el.field_id !== undefined) node.fieldId = el.field_id;
    return node;
  };
  for (let c = 0; c < (root.num_children ?? 0); c++) {
    const node = subtree(1);
    columns.push({ name: node.name, node, physicalType: node.physicalType, logicalType: node.logicalType });
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
  if (el.converted_type === 'DECIMAL') return `DECIMAL(${el.precision ?? 0},${el.scale ?? 0})`;
  return el.converted_type;
}
