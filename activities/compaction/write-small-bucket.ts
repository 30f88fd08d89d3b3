/**
 * The write path of nearly every bucket: one far below the memory budget is deduplicated, sorted and
 * written by one statement. A tiny bucket's cost is the number of statements, not the data.
 */
import { columnOr, OUTPUT_ORDER, scanInputs, WINNER_ORDER } from './bucket-sql';
import { sqlString, type DuckSession } from './duckdb-session';
import { outputStar, type InputSchema, type LocalInput, type OutputColumns } from './input-schema';
import type { KvEntry } from './output-metadata';
import { finalWriteOptions, type RowGroupSize } from './output-format';

/**
 * Dedup, sort and write in one statement, for a bucket whose rows fit in memory several times over:
 * the window over all input rows and the sort of the winners both hold wide rows, which is what fails
 * under a small memory_limit for a big bucket (so the caller reserves this for small ones).
 */
export async function writeSmallBucket(
  session: DuckSession,
  inputs: readonly LocalInput[],
  schemas: readonly InputSchema[],
  outFile: string,
  kv: readonly KvEntry[],
  rg: RowGroupSize,
  /** How the output's columns differ from the union (valuelessParts, tableTypeCasts). */
  output: OutputColumns,
): Promise<void> {
  const winner = WINNER_ORDER(columnOr(schemas, 'updated', 'TIMESTAMPTZ', 'w'), 'w.__ec_fi', 'w.file_row_number');
  const order = OUTPUT_ORDER(columnOr(schemas, 'platform', 'VARCHAR', 'w'), columnOr(schemas, 'datetime', 'TIMESTAMPTZ', 'w'), 'w.id');
  await session.exec(
    `COPY (
       SELECT ${outputStar('w', ['file_row_number', '__ec_fi'], output)}
       FROM (SELECT r.*, r.file_index AS __ec_fi FROM ${scanInputs(inputs)} r) w
       QUALIFY row_number() OVER (PARTITION BY w.id ORDER BY ${winner}) = 1
       ORDER BY ${order}
     ) TO ${sqlString(outFile)} (${finalWriteOptions(rg, kv)})`,
  );
}
