/**
 * Iceberg column metrics of a data file (counts, sizes, lower/upper bounds) from its Parquet footer, so
 * engines prune files by `datetime`, `platform` or `id` within a partition, as they could with the
 * tables pyiceberg's add_files wrote for the Python tool.
 *
 * A bound an engine trusts but that is too narrow silently drops rows from query results, so every
 * bound here is exact or wider, and a column whose statistics are missing, of a kind we do not map
 * exactly, or inconsistent gets counts only. Metrics modes follow the table's properties
 * (`write.metadata.metrics.default`, `write.metadata.metrics.column.<name>`: none, counts,
 * truncate(N), full; default truncate(16), as Iceberg's).
 */
import type { IcebergSchema } from './iceberg-schema';
import type { ColumnTotals, FooterColumn, ParquetNode, StatValue } from './parquet-footer';
import { compareStatValues } from './parquet-footer';
import { timesNamed } from './schema-evolution';

export interface ColumnMetrics {
  columnSizes: Map<number, bigint>;
  valueCounts: Map<number, bigint>;
  nullValueCounts: Map<number, bigint>;
  lowerBounds: Map<number, Buffer>;
  upperBounds: Map<number, Buffer>;
}

export type MetricsMode = { kind: 'none' } | { kind: 'counts' } | { kind: 'truncate'; length: number } | { kind: 'full' };

const DEFAULT_MODE_PROPERTY = 'write.metadata.metrics.default';
const COLUMN_MODE_PREFIX = 'write.metadata.metrics.column.';
const DEFAULT_MODE: MetricsMode = { kind: 'truncate', length: 16 };

function parseMode(text: string | undefined): MetricsMode | undefined {
  if (text === undefined) return undefined;
  const t = text.trim().toLowerCase();
  if (t === 'none' || t === 'counts' || t === 'full') return { kind: t };
  const m = /^truncate\((\d+)\)$/.exec(t);
  if (m && Number(m[1]) > 0) return { kind: 'truncate', length: Number(m[1]) };
  return undefined; // unknown: Iceberg falls back to the default too
}

/** The metrics mode of a top-level column of the table, by column name. */
export function metricsModes(properties: Record<string, string>): (name: string) => MetricsMode {
  const fallback = parseMode(properties[DEFAULT_MODE_PROPERTY]) ?? DEFAULT_MODE;
  return (name) => parseMode(properties[COLUMN_MODE_PREFIX + name]) ?? fallback;
}

function emptyMetrics(): ColumnMetrics {
  return { columnSizes: new Map(), valueCounts: new Map(), nullValueCounts: new Map(), lowerBounds: new Map(), upperBounds: new Map() };
}

function carriesFieldIds(node: ParquetNode): boolean {
  return node.fieldId !== undefined || (node.children ?? []).some(carriesFieldIds);
}

/**
 * Metrics of the table's top-level fields from a file's footer. A column speaks for the field of its name
 * only where every reader reads it as that field. Readers take a file's Parquet field ids over names (Java
 * whenever the file has any, reading a column without one as null; pyiceberg when it has them all), so in
 * a file with ids only a column carrying its field's id, and no other column carrying it, gets metrics:
 * bounds of a column a reader does not read as that field would prune files whose rows match.
 */
export function columnMetrics(
  columns: readonly FooterColumn[],
  schema: IcebergSchema,
  modeOf: (name: string) => MetricsMode,
  /** The name mapping's names of each field id: a renamed column's files carry an old name, which readers map to the field. */
  aliases: ReadonlyMap<number, readonly string[]> = new Map(),
): ColumnMetrics {
  const metrics = emptyMetrics();
  const fields = new Map(schema.fields.map((f) => [f.name, f]));
  for (const f of schema.fields) for (const alias of aliases.get(f.id) ?? []) if (!fields.has(alias)) fields.set(alias, f);
  // A file holding two names of one field is read as one of them, the other as null: neither speaks for it.
  const namings = new Map<number, number>();
  for (const { name } of columns) {
    const f = fields.get(name);
    if (f) namings.set(f.id, (namings.get(f.id) ?? 0) + 1);
  }
  const byId = columns.some((c) => carriesFieldIds(c.node));
  const idCarriers = new Map<number, number>();
  for (const { node } of columns) {
    if (node.fieldId !== undefined) idCarriers.set(node.fieldId, (idCarriers.get(node.fieldId) ?? 0) + 1);
  }
  const repeated = timesNamed(columns);
  for (const column of columns) {
    // A name the file repeats is read as no field (readers refuse the file).
    const candidate = repeated.has(column.name) ? undefined : fields.get(column.name);
    const named = candidate && namings.get(candidate.id) === 1 ? candidate : undefined;
    const own = column.node.fieldId;
    const readAsNamed = named && (!byId || (own === named.id && idCarriers.get(own) === 1));
    const field = readAsNamed ? named : undefined;
    const totals = column.totals;
    // Iceberg's per-column metrics modes are set by the field's current name.
    const mode = modeOf(field?.name ?? column.name);
    if (!field || !totals || typeof field.type !== 'string' || mode.kind === 'none') continue;
    metrics.columnSizes.set(field.id, BigInt(totals.compressedBytes));
    metrics.valueCounts.set(field.id, BigInt(totals.valueCount));
    if (totals.nullCount !== undefined) metrics.nullValueCounts.set(field.id, BigInt(totals.nullCount));
    if (mode.kind === 'counts') continue;
    const bounds = icebergBounds(field.type, column, totals, mode.kind === 'truncate' ? mode.length : undefined);
    if (bounds?.lower) metrics.lowerBounds.set(field.id, bounds.lower);
    if (bounds?.upper) metrics.upperBounds.set(field.id, bounds.upper);
  }
  return metrics;
}

interface Bounds {
  lower?: Buffer;
  upper?: Buffer;
}

/** Iceberg's single-value serialization of the file's min/max, or undefined where it would not be exact or wider. */
function icebergBounds(type: string, column: FooterColumn, totals: ColumnTotals, truncateTo: number | undefined): Bounds | undefined {
  const { min, max } = totals;
  if (min === undefined || max === undefined) return undefined;
  const order = compareStatValues(min, max);
  if (order === undefined || order > 0) return undefined;
  const logical = column.logicalType ?? '';
  switch (type) {
    case 'string':
      if (!(min instanceof Uint8Array && max instanceof Uint8Array) || column.physicalType !== 'BYTE_ARRAY') return undefined;
      if (logical && !['STRING', 'UTF8', 'JSON', 'ENUM'].includes(logical)) return undefined;
      return stringBounds(min, max, truncateTo);
    case 'long':
    case 'int': {
      if (column.physicalType !== 'INT32' && column.physicalType !== 'INT64') return undefined;
      // Unsigned 64-bit values may exceed a long; every other integer annotation fits one.
      if (logical && !/^(INTEGER\((8|16|32|64),signed\)|INT_(8|16|32|64)|INTEGER\((8|16|32),unsigned\)|UINT_(8|16|32))$/.test(logical)) return undefined;
      const lo = toBigInt(min);
      const hi = toBigInt(max);
      if (lo === undefined || hi === undefined) return undefined;
      if (type === 'long') return { lower: int64(lo), upper: int64(hi) };
      return lo >= -(2n ** 31n) && hi < 2n ** 31n ? { lower: int32(lo), upper: int32(hi) } : undefined;
    }
    case 'double':
    case 'float': {
      if (typeof min !== 'number' || typeof max !== 'number') return undefined; // NaN is unordered: refused above
      if (type === 'float' && column.physicalType !== 'FLOAT') return undefined;
      // Parquet writers may store 0 for either sign of zero: widen to -0 .. +0.
      const lo = min === 0 ? -0 : min;
      const hi = max === 0 ? 0 : max;
      return type === 'double' ? { lower: float64(lo), upper: float64(hi) } : { lower: float32(lo), upper: float32(hi) };
    }
    case 'boolean':
      return typeof min === 'boolean' && typeof max === 'boolean' ? { lower: Buffer.from([Number(min)]), upper: Buffer.from([Number(max)]) } : undefined;
    case 'date':
      return logical === 'DATE' && typeof min === 'number' && typeof max === 'number' ? { lower: int32(BigInt(min)), upper: int32(BigInt(max)) } : undefined;
    case 'timestamp':
    case 'timestamptz': {
      const unit = timestampUnit(logical);
      if (!unit || typeof min !== 'bigint' || typeof max !== 'bigint') return undefined;
      if (unit === 'MICROS') return { lower: int64(min), upper: int64(max) };
      // Nanoseconds round outwards; milliseconds scale exactly, unless beyond a long's micros (as an
      // "end of time" sentinel may be): no bound then.
      if (unit === 'NANOS') return { lower: int64(floorDiv(min, 1000n)), upper: int64(-floorDiv(-max, 1000n)) };
      const [lower, upper] = [min * 1000n, max * 1000n];
      return fitsInt64(lower) && fitsInt64(upper) ? { lower: int64(lower), upper: int64(upper) } : undefined;
    }
    default:
      return undefined; // binary (WKB geometry bounds prune nothing), decimal, uuid, time, nanosecond types
  }
}

type TimestampUnit = 'MILLIS' | 'MICROS' | 'NANOS';

function timestampUnit(logical: string): TimestampUnit | undefined {
  const m = /^TIMESTAMP\((MILLIS|MICROS|NANOS),|^TIMESTAMP_(MILLIS|MICROS)$/.exec(logical);
  const unit = m?.[1] ?? m?.[2];
  return unit === 'MILLIS' || unit === 'MICROS' || unit === 'NANOS' ? unit : undefined;
}

const PER_MILLISECOND: Record<TimestampUnit, bigint> = { MILLIS: 1n, MICROS: 1000n, NANOS: 1_000_000n };

/**
 * The millisecond a timestamp in `unit` falls in, floored before 1970 too, so the date is in the
 * value's own UTC year: BigInt division truncates toward zero and moved the last instants of a year
 * before 1970 into the next one.
 */
export function timestampAsDate(value: bigint, unit: TimestampUnit): Date {
  return new Date(Number(floorDiv(value, PER_MILLISECOND[unit])));
}

/**
 * An instant as ISO text, or where it lies when a Date cannot hold it: DuckDB stores `infinity` as the
 * largest long of micros, ~17,000 years beyond a Date's range, and toISOString throws on it.
 */
export function instantText(d: Date): string {
  return Number.isNaN(d.getTime()) ? 'an instant outside the years -271821 to 275760' : d.toISOString();
}

/**
 * A timestamp column's smallest and largest value from the file's statistics, at the column's own
 * precision: the Iceberg upper bound of nanoseconds is rounded up, and the last nanosecond of a year
 * would read as the next year.
 */
export function timestampRange(column: FooterColumn): { from: Date; to: Date } | undefined {
  const unit = timestampUnit(column.logicalType ?? '');
  const min = column.totals?.min;
  const max = column.totals?.max;
  if (!unit || typeof min !== 'bigint' || typeof max !== 'bigint') return undefined;
  return { from: timestampAsDate(min, unit), to: timestampAsDate(max, unit) };
}

function toBigInt(v: StatValue): bigint | undefined {
  if (typeof v === 'bigint') return v;
  if (typeof v === 'number' && Number.isInteger(v)) return BigInt(v);
  return undefined;
}

function floorDiv(a: bigint, b: bigint): bigint {
  const q = a / b;
  return a % b !== 0n && a < 0n ? q - 1n : q;
}

function int32(v: bigint): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32LE(Number(v));
  return b;
}

function fitsInt64(v: bigint): boolean {
  return v >= -(2n ** 63n) && v < 2n ** 63n;
}

function int64(v: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigInt64LE(v);
  return b;
}

function float32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeFloatLE(v); // exact: the value was read as a FLOAT
  return b;
}

function float64(v: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeDoubleLE(v);
  return b;
}

/** A file's actual minimum or maximum, as `verify` reads it: micros for timestamps, text for strings. */
export type ActualValue = bigint | number | string;

/**
 * Whether a serialized bound holds a file's actual minimum (lower) or maximum (upper); undefined for
 * types this module writes no bounds for, or a value of another kind.
 */
export function boundHolds(type: string, side: 'lower' | 'upper', bound: Buffer, value: ActualValue): boolean | undefined {
  const order = compareBound(type, bound, value);
  if (order === undefined) return undefined;
  return side === 'lower' ? order <= 0 : order >= 0;
}

/**
 * A serialized bound as the kind of value `verify` reads: text for strings (lossy if the bound is not
 * UTF-8: for display only), micros for timestamps, bigint for integers, number for doubles.
 */
export function decodeBound(type: string, bound: Buffer): ActualValue | undefined {
  switch (type) {
    case 'string':
      return bound.toString('utf8');
    case 'long':
    case 'timestamp':
    case 'timestamptz':
      return bound.length === 8 ? bound.readBigInt64LE() : undefined;
    case 'int':
    case 'date':
      return bound.length === 4 ? BigInt(bound.readInt32LE()) : undefined;
    case 'double':
      return bound.length === 8 ? bound.readDoubleLE() : undefined;
    default:
      return undefined;
  }
}

function compareBound(type: string, bound: Buffer, value: ActualValue): number | undefined {
  // Strings compare as bytes: a bound another writer incremented byte-wise need not be UTF-8.
  if (type === 'string') return typeof value === 'string' ? Buffer.compare(bound, Buffer.from(value, 'utf8')) : undefined;
  const decoded = decodeBound(type, bound);
  if (decoded === undefined || typeof decoded !== typeof value) return undefined;
  return decoded < value ? -1 : decoded > value ? 1 : 0;
}

const UTF8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Strings are truncated to `truncateTo` code points: the lower bound is the prefix, the upper bound the
 * prefix with its last code point incremented (no upper bound when none can be).
 */
function stringBounds(min: Uint8Array, max: Uint8Array, truncateTo: number | undefined): Bounds | undefined {
  let lo: string;
  let hi: string;
  try {
    lo = UTF8.decode(min);
    hi = UTF8.decode(max);
  } catch {
    return undefined; // not UTF-8: byte order and code point order could differ
  }
  const loPoints = [...lo];
  const hiPoints = [...hi];
  const lower = truncateTo === undefined ? lo : loPoints.slice(0, truncateTo).join('');
  if (truncateTo === undefined || hiPoints.length <= truncateTo) return { lower: Buffer.from(lower, 'utf8'), upper: Buffer.from(hi, 'utf8') };
  const upper = incrementedPrefix(hiPoints.slice(0, truncateTo));
  return { lower: Buffer.from(lower, 'utf8'), upper: upper === undefined ? undefined : Buffer.from(upper, 'utf8') };
}

const MAX_CODE_POINT = 0x10ffff;
const SURROGATES = { first: 0xd800, last: 0xdfff };

function incrementedPrefix(points: string[]): string | undefined {
  for (let i = points.length - 1; i >= 0; i--) {
    let next = points[i]!.codePointAt(0)! + 1;
    if (next >= SURROGATES.first && next <= SURROGATES.last) next = SURROGATES.last + 1;
    if (next <= MAX_CODE_POINT) return points.slice(0, i).join('') + String.fromCodePoint(next);
  }
  return undefined;
}
