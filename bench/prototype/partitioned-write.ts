/**
 * PROTOTYPE for the engine owner (not used by the engine): a drop-in alternative to merge-bucket's
 * writeOrdered for buckets larger than one in-memory sort, measured by bench/prototype/compare-writers.ts.
 *
 * writeOrdered materializes all winners in table part_0 and splits it recursively with filter scans
 * (fan-out 8), so the wide rows are written to and read back from DuckDB's spill storage once per
 * level and scanned `fanout` times per level. Here the wide rows are scattered ONCE into rank-range
 * chunk files by `COPY ... PARTITION_BY`, each chunk (small enough for one in-memory sort) is sorted
 * into a file, and the sorted files are concatenated in rank order as writeOrdered does.
 *
 * Memory: every open partition file buffers a row group; ROW_GROUP_SIZE_BYTES caps each, and the
 * per-thread partition buffers are flushed after `partitioned_write_flush_threshold` rows.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { sqlString, sqlStringList, type DuckSession } from '../../activities/compaction/duckdb-session';
import type { LocalInput } from '../../activities/compaction/input-schema';
import { OUTPUT_ROW_GROUP_ROWS, type WritePlan } from '../../activities/compaction/merge-bucket';
import type { KvEntry } from '../../activities/compaction/output-metadata';

/** Same as merge-bucket's private constant: file index in the high bits of a row position. */
const POSITION_SHIFT = 40;
const MIN_ROW_GROUP_ROWS = 2048;

function hexOf(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');
}

function kvClause(kv: readonly KvEntry[]): string {
  if (!kv.length) return '';
  return `, KV_METADATA {${kv.map((e) => `${sqlString(e.key)}: from_hex(${sqlString(hexOf(e.value))})`).join(', ')}}`;
}

/** The winners with their rank, as merge-bucket's winnerRows(inputs, true) (needs computeWinners' tables). */
function rankedWinners(inputs: readonly LocalInput[]): string {
  return `SELECT o.rank AS __ec_rank, r.* EXCLUDE (filename, file_row_number)
          FROM read_parquet(${sqlStringList(inputs.map((i) => i.path))}, union_by_name = true, hive_partitioning = false,
                            filename = true, file_row_number = true) r
          JOIN input_files f ON f.filename = r.filename
          JOIN ordered o ON o.pos = (f.fi << ${POSITION_SHIFT}) | r.file_row_number`;
}

export interface PartitionedWriteStats {
  chunks: number;
  chunkRows: number;
  /** Seconds of the scatter pass, the chunk sorts, and the final concatenation. */
  scatterSeconds: number;
  sortSeconds: number;
  concatSeconds: number;
}

export async function writeOrderedPartitioned(
  session: DuckSession,
  inputs: readonly LocalInput[],
  rowsOut: number,
  outFile: string,
  kv: readonly KvEntry[],
  plan: WritePlan & { memoryBytes: number; threads: number },
): Promise<PartitionedWriteStats> {
  const rg = Math.max(MIN_ROW_GROUP_ROWS, Math.min(OUTPUT_ROW_GROUP_ROWS, Math.floor(plan.rowGroupBytes / plan.rowBytes)));
  const chunkRows = Math.max(MIN_ROW_GROUP_ROWS, Math.floor(plan.sortBudgetBytes / plan.rowBytes));
  const chunks = Math.max(1, Math.ceil(rowsOut / chunkRows));
  const scatterDir = path.join(plan.workDir, 'scatter');
  const sortedDir = path.join(plan.workDir, 'sorted');
  await fs.mkdir(sortedDir, { recursive: true });
  const clock = () => performance.now() / 1000;

  // Open partition files together buffer at most a quarter of the budget, the thread buffers an eighth.
  const perFileBytes = Math.max(256 * 1024, Math.floor(plan.memoryBytes / 4 / chunks));
  const flushRows = Math.max(MIN_ROW_GROUP_ROWS, Math.floor(plan.memoryBytes / 8 / plan.threads / plan.rowBytes));
  let t = clock();
  await session.exec(`SET partitioned_write_max_open_files = ${chunks + 1}`);
  await session.exec(`SET partitioned_write_flush_threshold = ${flushRows}`);
  await session.exec(
    `COPY (SELECT __ec_rank // ${chunkRows} AS __ec_chunk, * FROM (${rankedWinners(inputs)})) TO ${sqlString(scatterDir)}
       (FORMAT parquet, COMPRESSION lz4, PARTITION_BY (__ec_chunk), ROW_GROUP_SIZE ${MIN_ROW_GROUP_ROWS},
        ROW_GROUP_SIZE_BYTES ${perFileBytes})`,
  );
  await session.exec('DROP TABLE ordered');
  const scatterSeconds = clock() - t;

  t = clock();
  const sorted: string[] = [];
  for (let k = 0; k < chunks; k++) {
    const dir = path.join(scatterDir, `__ec_chunk=${k}`);
    const file = path.join(sortedDir, `chunk_${String(k).padStart(6, '0')}.parquet`);
    await session.exec(
      `COPY (SELECT * EXCLUDE (__ec_rank) FROM read_parquet(${sqlString(path.join(dir, '*.parquet'))}, hive_partitioning = false)
             ORDER BY __ec_rank)
         TO ${sqlString(file)} (FORMAT parquet, COMPRESSION lz4, ROW_GROUP_SIZE ${rg}, ROW_GROUP_SIZE_BYTES ${Math.floor(plan.rowGroupBytes)})`,
    );
    await fs.rm(dir, { recursive: true, force: true });
    sorted.push(file);
    plan.onChunk?.(k + 1, chunks);
  }
  const sortSeconds = clock() - t;

  t = clock();
  await session.exec('SET preserve_insertion_order = true');
  try {
    await session.exec(
      `COPY (SELECT * FROM read_parquet(${sqlStringList(sorted)}, hive_partitioning = false)) TO ${sqlString(outFile)}
         (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE ${rg}${kvClause(kv)})`,
    );
  } finally {
    await session.exec('SET preserve_insertion_order = false');
  }
  for (const f of sorted) await fs.rm(f, { force: true });
  return { chunks, chunkRows, scatterSeconds, sortSeconds, concatSeconds: clock() - t };
}
