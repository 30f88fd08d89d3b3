/**
 * PROTOTYPE measurement for the engine owner: what a tiny bucket costs in compactBucket against a
 * fast path that (1) reuses one DuckDB session across buckets and (2) dedups, sorts and writes in ONE
 * statement (QUALIFY row_number() ...) when the bucket is far below the memory budget. Both run
 * sequentially on the same tiny buckets, in this process.
 *
 *   node --import tsx bench/prototype/small-bucket.ts [buckets]
 */
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { compactBucket } from '../../activities/compaction/compact-bucket';
import { openDuckSession, sqlString, sqlStringList, type DuckSession } from '../../activities/compaction/duckdb-session';
import { inputIdDigest, outputIdDigest } from '../../activities/compaction/merge-bucket';
import { LocalWarehouseStore } from '../../activities/storage/local-store';
import { bucketPrefix, type BucketRef } from '../../workflows/contract';
import { layOutTinyBuckets, TINY_ROWS_OUT, writeTinyTemplates } from '../tiny-buckets';

/** One statement: winners by (updated DESC NULLS LAST, later input, later row), in output order, with the first input's `geo`. */
export async function compactSmallBucket(session: DuckSession, files: readonly string[], outFile: string): Promise<number> {
  await session.rows(`SELECT file_name, name, type FROM parquet_schema(${sqlStringList(files)})`);
  const kv = await session.rows(`SELECT file_name, key, value FROM parquet_kv_metadata(${sqlStringList(files)})`);
  const geo = kv.find((r) => r.file_name === files[0] && Buffer.from(r.key as Uint8Array).toString('utf8') === 'geo');
  const geoClause = geo ? `, KV_METADATA {geo: from_hex(${sqlString(Buffer.from(geo.value as Uint8Array).toString('hex'))})}` : '';
  const fileIndex = files.map((f, i) => `(${i}, ${sqlString(f)})`).join(', ');
  await session.exec(
    `COPY (
       SELECT * EXCLUDE (filename, file_row_number, __ec_fi) FROM (
         SELECT r.*, f.fi AS __ec_fi
         FROM read_parquet(${sqlStringList(files)}, union_by_name = true, hive_partitioning = false, filename = true, file_row_number = true) r
         JOIN (VALUES ${fileIndex}) f(fi, filename) ON f.filename = r.filename)
       QUALIFY row_number() OVER (PARTITION BY id ORDER BY updated DESC NULLS LAST, __ec_fi DESC, file_row_number DESC) = 1
       ORDER BY platform ASC NULLS LAST, datetime ASC NULLS LAST, id ASC
     ) TO ${sqlString(outFile)} (FORMAT parquet, COMPRESSION zstd${geoClause})`,
  );
  const expected = await inputIdDigest(session, files.map((f) => ({ key: f, path: f, size: 0 })));
  const actual = await outputIdDigest(session, outFile);
  if (actual.rows !== expected.distinctIds || actual.idHashSum !== expected.idHashSum) {
    throw new Error(`${outFile}: ${actual.rows} rows, expected ${expected.distinctIds} distinct ids`);
  }
  return actual.rows;
}

async function timed(label: string, n: number, work: () => Promise<void>): Promise<void> {
  const started = performance.now();
  const cpu = process.cpuUsage();
  await work();
  const used = process.cpuUsage(cpu);
  process.stdout.write(
    `${label}: ${((performance.now() - started) / n).toFixed(1)} ms/bucket wall, ${((used.user + used.system) / 1000 / n).toFixed(1)} ms/bucket CPU\n`,
  );
}

async function main(): Promise<void> {
  const n = Number(process.argv[2] ?? 100);
  const root = await fs.mkdtemp(path.join(os.tmpdir(), 'ec-small-bucket-'));
  try {
    const templates = await writeTinyTemplates(root);
    const sizes = await Promise.all(templates.map(async (t) => (await fs.stat(t)).size));
    const engineWarehouse = path.join(root, 'engine');
    const fastWarehouse = path.join(root, 'fast');
    const engineBuckets = await layOutTinyBuckets(engineWarehouse, templates, n);
    const fastBuckets = await layOutTinyBuckets(fastWarehouse, templates, n);
    const store = new LocalWarehouseStore(engineWarehouse);
    const keysOf = (b: BucketRef) => templates.map((t, i) => ({ key: `${bucketPrefix(b)}/${path.basename(t)}`, size: sizes[i]! }));

    await timed('compactBucket (session per bucket, ~22 statements)', n, async () => {
      for (const b of engineBuckets) {
        await compactBucket(
          store,
          { bucket: b, inputs: keysOf(b), warehouse: engineWarehouse, planId: 'proto' },
          { scratchDir: path.join(root, 'scratch'), memoryLimitMb: 512, threads: 1, heartbeat: () => undefined },
        );
      }
    });

    const session = await openDuckSession({ memoryLimitMb: 512, threads: 1, tempDir: path.join(root, 'spill') });
    try {
      await timed('fast path (one session, 5 statements, publish + delete)', n, async () => {
        for (const b of fastBuckets) {
          const dir = path.join(fastWarehouse, bucketPrefix(b));
          const files = keysOf(b).map((k) => path.join(fastWarehouse, k.key));
          const tmp = path.join(dir, '.earthcatalog-tmp-proto.parquet');
          const rows = await compactSmallBucket(session, files, tmp);
          if (rows !== TINY_ROWS_OUT) throw new Error(`${dir}: ${rows} rows`);
          await fs.link(tmp, path.join(dir, 'compacted_proto.parquet'));
          await fs.rm(tmp);
          for (const f of files) await fs.unlink(f);
        }
      });
    } finally {
      session.close();
    }
  } finally {
    await fs.rm(root, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
});
