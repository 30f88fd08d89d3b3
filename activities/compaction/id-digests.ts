/** What verification compares before any input is deleted: the ids of the inputs and of the output. */
import { sqlString, sqlStringList, toNumber, type DuckSession } from './duckdb-session';
import type { LocalInput } from './input-schema';

/** What verification compares: how many distinct ids, and an order-independent digest of them. */
export interface IdDigest {
  rows: number;
  distinctIds: number;
  idHashSum: string;
  /** Rows without an id (inputs only; such a bucket cannot be compacted). */
  nullIds: number;
}

/** Digest of the distinct ids of the inputs (computed from the files, not from the winners table). */
export async function inputIdDigest(session: DuckSession, inputs: readonly LocalInput[]): Promise<IdDigest> {
  const [r] = await session.rows(
    `WITH ids AS (SELECT id, count(*) AS n FROM read_parquet(${sqlStringList(inputs.map((i) => i.path))},
                    union_by_name = true, hive_partitioning = false) GROUP BY id)
     SELECT coalesce(sum(n), 0) AS rows, count(id) AS distinct_ids, coalesce(sum(n) FILTER (WHERE id IS NULL), 0) AS null_ids,
            coalesce(sum(hash(id)::HUGEINT) FILTER (WHERE id IS NOT NULL), 0) AS h FROM ids`,
  );
  return {
    rows: toNumber(r?.rows),
    distinctIds: toNumber(r?.distinct_ids),
    idHashSum: String(r?.h ?? 0),
    nullIds: toNumber(r?.null_ids),
  };
}

/** Digest of a written output; `rows` counts rows, which must equal its distinct ids. */
export async function outputIdDigest(session: DuckSession, file: string): Promise<IdDigest> {
  const [r] = await session.rows(
    `SELECT count(*) AS rows, count(DISTINCT id) AS distinct_ids,
            count(*) FILTER (WHERE id IS NULL) AS null_ids, coalesce(sum(hash(id)::HUGEINT), 0) AS h
     FROM (SELECT id FROM read_parquet(${sqlString(file)}, hive_partitioning = false))`,
  );
  return {
    rows: toNumber(r?.rows),
    distinctIds: toNumber(r?.distinct_ids),
    idHashSum: String(r?.h ?? 0),
    nullIds: toNumber(r?.null_ids),
  };
}

/** How many distinct ids of the given inputs are absent from the output (0 when it covers them). */
export async function idsMissingFromOutput(
  session: DuckSession,
  inputs: readonly LocalInput[],
  file: string,
): Promise<number> {
  const [r] = await session.rows(
    `SELECT count(*) AS n FROM
       (SELECT DISTINCT id FROM read_parquet(${sqlStringList(inputs.map((i) => i.path))}, union_by_name = true, hive_partitioning = false)) i
     ANTI JOIN (SELECT id FROM read_parquet(${sqlString(file)}, hive_partitioning = false)) o ON i.id = o.id`,
  );
  return toNumber(r?.n);
}
