/**
 * Appending Parquet files by their row groups (the out-of-core write's last step): the Thrift footer
 * codec is lossless on DuckDB's footers, and an appended file is read in full and in order by DuckDB
 * and by pyarrow, with its statistics and bloom filters still pointing at the right bytes.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { openDuckSession, sqlString, sqlStringList, type DuckSession } from '../activities/compaction/duckdb-session';
import { appendParquetFiles } from '../activities/compaction/parquet-append';
import { readThriftStruct, writeThriftStruct } from '../activities/compaction/thrift-compact';
import { REPO_ROOT } from './helpers/temporal';
import { pythonExecutable } from '../client/temporal-cli';
import { makeTempDir } from './helpers/temp-dirs';

const run = promisify(execFile);
let dir: string;
let session: DuckSession;

before(async () => {
  dir = await makeTempDir('ec-append');
  session = await openDuckSession({ tempDir: path.join(dir, 'spill') });
});

after(async () => {
  session.close();
});

/** A DuckDB-written part: ids from..to, a dictionary column (bloom filters), several row groups, KV. */
async function part(name: string, from: number, to: number): Promise<string> {
  const file = path.join(dir, name);
  await session.exec(
    `COPY (SELECT 'id-' || lpad(i::VARCHAR, 7, '0') AS id, 'platform-' || (i % 5) AS platform, repeat('x', 50) || i AS payload
           FROM range(${from}, ${to}) t(i) ORDER BY i)
     TO ${sqlString(file)} (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 4096, KV_METADATA {writer: 'part ${name}'})`,
  );
  return file;
}

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from }, (_, i) => from + i);
}

async function footerBytes(file: string): Promise<Uint8Array> {
  const buf = await fs.readFile(file);
  const length = buf.readUInt32LE(buf.length - 8);
  return buf.subarray(buf.length - 8 - length, buf.length - 8);
}

describe('appendParquetFiles', () => {
  test('the Thrift compact codec writes a DuckDB footer back byte for byte', async () => {
    const bytes = await footerBytes(await part('roundtrip.parquet', 0, 10_000));
    assert.deepEqual(Buffer.from(writeThriftStruct(readThriftStruct(bytes))), Buffer.from(bytes));
  });

  test('appended files read back complete and in order, by DuckDB and by pyarrow, with bloom filters intact', async () => {
    const parts = [await part('a.parquet', 0, 9_000), await part('b.parquet', 9_000, 9_100), await part('c.parquet', 9_100, 20_000)];
    const out = path.join(dir, 'appended.parquet');
    await appendParquetFiles(parts, out, [{ key: 'geo', value: Buffer.from('{"version":"1.1.0"}') }]);

    const rows = await session.rows(`SELECT id FROM read_parquet(${sqlString(out)}, file_row_number = true) ORDER BY file_row_number`);
    const expected = await session.rows(`SELECT id FROM read_parquet(${sqlStringList(parts)}, file_row_number = true, filename = true) ORDER BY filename, file_row_number`);
    assert.equal(rows.length, 20_000);
    assert.deepEqual(rows.map((r) => r.id), expected.map((r) => r.id));
    const [hit] = await session.rows(`SELECT count(*) AS n FROM read_parquet(${sqlString(out)}) WHERE platform = 'platform-3'`);
    // DuckDB consults the moved statistics and bloom filters for an equality filter: wrong offsets
    // would prune row groups or fail to read.
    assert.equal(Number(hit!.n), 4_000, 'an equality filter finds every row');

    const python = pythonExecutable();
    const { stdout } = await run(python, [path.join(REPO_ROOT, 'test', 'py', 'parquet_read.py'), out, 'platform', 'platform-3']);
    const arrow = JSON.parse(stdout) as { rows: number; row_groups: number[]; kv: Record<string, string>; ids: string[]; filtered: number; expected_filtered: number };
    assert.equal(arrow.rows, 20_000);
    assert.equal(arrow.row_groups.reduce((a, b) => a + b, 0), 20_000);
    assert.ok(arrow.row_groups.length >= 6, `row groups of every part kept (${arrow.row_groups.length})`);
    assert.deepEqual(arrow.kv, { geo: '{"version":"1.1.0"}' }, 'exactly the given key-value metadata');
    assert.deepEqual(arrow.ids, expected.map((r) => String(r.id)));
    assert.equal(arrow.filtered, arrow.expected_filtered);
    assert.equal(arrow.filtered, 4_000);
  });

  test('runs of row groups taken out of a file read back in order, their bloom filters moved with them', async () => {
    const a = await part('runs-a.parquet', 0, 20_000);
    const b = await part('runs-b.parquet', 20_000, 20_100);
    const out = path.join(dir, 'runs.parquet');
    // Row groups of 4,096 rows: [1, 3) is rows 4096..12287, [4, 5) rows 16384..19999.
    await appendParquetFiles([{ path: a, from: 1, to: 3 }, b, { path: a, from: 4, to: 5 }], out, []);

    const ids = (await session.rows(`SELECT id FROM read_parquet(${sqlString(out)}, file_row_number = true) ORDER BY file_row_number`)).map((r) => String(r.id));
    const want = [...range(4096, 12288), ...range(20_000, 20_100), ...range(16_384, 20_000)].map((i) => `id-${String(i).padStart(7, '0')}`);
    assert.deepEqual(ids, want);
    const platform3 = want.filter((id) => Number(id.slice(3)) % 5 === 3).length;
    const [hit] = await session.rows(`SELECT count(*) AS n FROM read_parquet(${sqlString(out)}) WHERE platform = 'platform-3'`);
    assert.equal(Number(hit!.n), platform3, 'an equality filter (statistics, bloom filters) finds every row');
    for (const id of [want[0]!, want[5000]!, want[want.length - 1]!]) {
      const [one] = await session.rows(`SELECT count(*) AS n FROM read_parquet(${sqlString(out)}) WHERE id = ${sqlString(id)}`);
      assert.equal(Number(one!.n), 1, `${id} found by a point lookup`);
    }
    const python = pythonExecutable();
    const { stdout } = await run(python, [path.join(REPO_ROOT, 'test', 'py', 'parquet_read.py'), out, 'platform', 'platform-3']);
    const arrow = JSON.parse(stdout) as { rows: number; ids: string[]; filtered: number; expected_filtered: number };
    assert.deepEqual(arrow.ids, want, 'pyarrow reads the same rows');
    assert.equal(arrow.filtered, platform3);

    await assert.rejects(appendParquetFiles([{ path: a, from: 4, to: 6 }], path.join(dir, 'bad-run.parquet'), []), /has 5 row groups; cannot take \[4, 6\)/);
  });

  test('files of different schemas are refused, naming the file', async () => {
    const a = await part('s1.parquet', 0, 100);
    const b = path.join(dir, 's2.parquet');
    await session.exec(`COPY (SELECT 1 AS other) TO ${sqlString(b)} (FORMAT parquet)`);
    await assert.rejects(appendParquetFiles([a, b], path.join(dir, 'bad.parquet'), []), /s2\.parquet has another schema/);
  });
});
