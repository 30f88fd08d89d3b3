import type { BucketTask } from '../../workflows/contract';
import { ParquetFooterError, readParquetFooter, type ParquetNode } from '../catalog/parquet-footer';
import { groupShape, NoIcebergType } from '../catalog/schema-evolution';
import { isOutputKey } from '../storage/warehouse-layout';
import { forEachBounded, isNotFound, StorageError, type WarehouseStore } from '../storage/warehouse-store';
import { convertibleToTableType, type TableNumberTypes } from './table-types';

/** Footer reads in flight (one or two small ranged GETs each on S3). */
const FOOTER_READS_IN_FLIGHT = 16;

/** Buckets below the threshold that compaction makes readable, by what their delivered files hold. */
export interface UnreadableBuckets {
  /** A top-level column or a struct field of Parquet's Null type. */
  nullTyped: Set<BucketTask>;
  /** A number column the table types otherwise (convertibleToTableType), and no Null type. */
  retyped: Set<BucketTask>;
}

/**
 * The buckets among `tasks` holding a delivered file that readers cannot read as the table and that
 * compacting the bucket repairs. The table registers such a file with a schema mismatch and every
 * pyiceberg scan that reaches it fails, week after week when nothing else lands in its bucket.
 * - A top-level column or a struct field of Parquet's Null type (pyarrow writes it for a column, or a
 *   Landsat band's `unit`, that held no value in a batch): Iceberg has no such type. Compaction leaves the
 *   column or field out (valuelessParts) and the table then reads it as null; a contract column is written
 *   as its type, all nulls.
 * - A number column the table types otherwise (pandas' float64 for a `long` column): compaction writes
 *   the table's type where no value changes (tableTypeCasts).
 * Delivered files are read. An output of this tool has no Null type, and was written with (or checked
 * against) the table types of its time: it is read only when `outputTypes` names columns whose type is
 * new since then (a column the rebuild added: an earlier output of one bucket may hold it as long where
 * the table took double from another), and only for those. So a weekly run reads the footers
 * of the few buckets below the threshold that received a file, and all of them once after such a change.
 * `onRead` is called after every footer (the planner heartbeats).
 */
export async function bucketsReadersCannotRead(
  store: WarehouseStore,
  tasks: readonly BucketTask[],
  tableTypes: TableNumberTypes | undefined,
  outputTypes: (task: BucketTask) => TableNumberTypes,
  onRead: () => void,
): Promise<UnreadableBuckets> {
  const files = tasks.flatMap((task) => {
    const forOutputs = outputTypes(task);
    const readOutputs = Object.keys(forOutputs).length > 0;
    return task.inputs.filter((i) => readOutputs || !isOutputKey(i.key)).map((input) => ({ task, input, types: isOutputKey(input.key) ? forOutputs : (tableTypes ?? {}) }));
  });
  const found: UnreadableBuckets = { nullTyped: new Set(), retyped: new Set() };
  await forEachBounded(files, FOOTER_READS_IN_FLIGHT, async ({ task, input, types }) => {
    if (!found.nullTyped.has(task)) {
      const problem = await readersProblem(store, input, types, !isOutputKey(input.key));
      if (problem === 'null-typed') {
        found.nullTyped.add(task);
        found.retyped.delete(task);
      } else if (problem === 'retyped') found.retyped.add(task);
    }
    onRead();
  });
  return found;
}

/** A column of the Null type counts whatever it is: compaction leaves it out, or writes a contract column (`platform`, say) as its type. */
async function readersProblem(
  store: WarehouseStore,
  input: { key: string; size: number },
  tableTypes: TableNumberTypes,
  nullTypes: boolean,
): Promise<'null-typed' | 'retyped' | undefined> {
  try {
    const footer = await readParquetFooter(store, input.key, input.size);
    if (nullTypes && footer.columns.some((c) => c.logicalType === 'NULL' || hasNullTypedStructField(c.node))) return 'null-typed';
    return footer.columns.some((c) => convertibleToTableType(c, tableTypes)) ? 'retyped' : undefined;
  } catch (err) {
    // Not Parquet, gone since the listing, denied or archived: left to the threshold, as before this
    // check (the rebuild names such a file); one file must not fail the planning of the whole run.
    if (err instanceof ParquetFooterError || err instanceof StorageError || isNotFound(err)) return undefined;
    throw err;
  }
}

/**
 * A struct field of the Null type within `node`, at any depth, that compaction leaves out: it keeps a
 * struct's last field, a list's element and a map's value (an empty list's element type, say), so a file
 * with only those would be rewritten unchanged every week.
 */
function hasNullTypedStructField(node: ParquetNode): boolean {
  let shape;
  try {
    shape = groupShape(node);
  } catch (err) {
    if (err instanceof NoIcebergType) return false;
    throw err;
  }
  switch (shape.kind) {
    case 'primitive':
      return false;
    case 'list':
      return hasNullTypedStructField(shape.element);
    case 'map':
      return hasNullTypedStructField(shape.value);
    case 'struct': {
      const isNull = (f: ParquetNode) => !f.children && f.logicalType === 'NULL';
      return (shape.fields.some(isNull) && !shape.fields.every(isNull)) || shape.fields.some(hasNullTypedStructField);
    }
  }
}
