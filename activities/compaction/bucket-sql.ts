/**
 * SQL fragments every write path shares: how a bucket's inputs are read, how a row is addressed, and
 * the two orders of the contract (which row of an id wins, and the output order).
 */
import { sqlIdent, sqlStringList } from './duckdb-session';
import { anyHasColumn, type InputSchema, type LocalInput } from './input-schema';
import { POSITION_SHIFT } from './presorted-inputs';

/** Every row of the inputs with its file_index and file_row_number; the files carry their partition columns. */
export function scanInputs(inputs: readonly LocalInput[]): string {
  return `read_parquet(${sqlStringList(inputs.map((i) => i.path))}, union_by_name = true, hive_partitioning = false, file_row_number = true)`;
}

/** A column of the union, or a typed NULL when no input has it (old parts may lack `platform`). */
export function columnOr(schemas: readonly InputSchema[], name: string, type: string, alias = 'r'): string {
  return anyHasColumn(schemas, name) ? `${alias}.${sqlIdent(name)}` : `CAST(NULL AS ${type})`;
}

/** The winner order within one id: greatest `updated` (NULL loses), then later input, then later row. */
export const WINNER_ORDER = (updated: string, fileIndex: string, row: string): string =>
  `${updated} DESC NULLS LAST, ${fileIndex} DESC, ${row} DESC`;

/** The output order; ids are unique among winners, so it is total: the same on every retry. */
export const OUTPUT_ORDER = (platform: string, datetime: string, id: string): string =>
  `${platform} ASC NULLS LAST, ${datetime} ASC NULLS LAST, ${id} ASC`;

/**
 * A row's position: input index (plan order) in the high bits, row number in the file in the low 40.
 * read_parquet's file_index numbers the files in list order, which is plan order.
 */
export function rowPosition(alias: string): string {
  return `(${alias}.file_index::BIGINT << ${POSITION_SHIFT}) | ${alias}.file_row_number`;
}

