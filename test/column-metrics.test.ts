/**
 * Column metrics for the Iceberg manifests: footer statistics summed over row groups (real DuckDB
 * files), and the conversion to Iceberg bounds, which must be exact or wider (an engine that trusts a
 * too-narrow bound drops rows from query results) and absent where that cannot be guaranteed.
 * catalog-rebuild.test.ts checks the result end to end through pyiceberg.
 */
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { openDuckSession } from '../activities/compaction/duckdb-session';
import { LocalWarehouseStore } from '../activities/storage/local-store';
import { readParquetFooter, type ColumnTotals, type FooterColumn } from '../activities/catalog/parquet-footer';
import { boundHolds, columnMetrics, metricsModes } from '../activities/catalog/column-metrics';
import type { IcebergSchema } from '../activities/catalog/iceberg-schema';
import { makeTempDir } from './helpers/temp-dirs';

let dir: string;

before(async () => {
  dir = await makeTempDir('ec-metrics');
});

function schemaOf(fields: Array<[string, string]>): IcebergSchema {
  return { type: 'struct', 'schema-id': 0, fields: fields.map(([name, type], i) => ({ id: i + 1, name, type, required: false })) };
}

const enc = (s: string) => new Uint8Array(Buffer.from(s, 'utf8'));
const counts: ColumnTotals = { valueCount: 10, nullCount: 1, compressedBytes: 100 };

function col(name: string, physicalType: string, logicalType: string | undefined, min: ColumnTotals['min'], max: ColumnTotals['max']): FooterColumn {
  return { name, node: { name, physicalType, logicalType }, physicalType, logicalType, totals: { ...counts, min, max } };
}

function bounds(column: FooterColumn, type: string, properties: Record<string, string> = {}) {
  const m = columnMetrics([column], schemaOf([[column.name, type]]), metricsModes(properties));
  return { lower: m.lowerBounds.get(1), upper: m.upperBounds.get(1), counted: m.valueCounts.get(1), nulls: m.nullValueCounts.get(1), size: m.columnSizes.get(1) };
}

describe('footer statistics over row groups', () => {
  test('min and max across row groups, nulls summed, an all-null row group ignored for bounds', async () => {
    const duck = await openDuckSession({ tempDir: path.join(dir, 'spill') });
    try {
      await duck.exec(`COPY (SELECT i AS n, CASE WHEN i < 2048 THEN NULL ELSE 'v' || lpad(i::VARCHAR, 5, '0') END AS s,
                              make_timestamp(1600000000000000 + i * 1000001) AS t
                         FROM range(5000) r(i)) TO '${path.join(dir, 'rg.parquet')}' (FORMAT parquet, ROW_GROUP_SIZE 2048)`);
    } finally {
      duck.close();
    }
    const store = new LocalWarehouseStore(dir);
    const footer = await readParquetFooter(store, 'rg.parquet', (await fs.stat(path.join(dir, 'rg.parquet'))).size);
    const by = new Map(footer.columns.map((c) => [c.name, c.totals!]));
    assert.equal(by.get('n')!.valueCount, 5000);
    assert.deepEqual([by.get('n')!.min, by.get('n')!.max], [0n, 4999n]);
    assert.equal(by.get('s')!.nullCount, 2048);
    assert.deepEqual([Buffer.from(by.get('s')!.min as Uint8Array).toString(), Buffer.from(by.get('s')!.max as Uint8Array).toString()], ['v02048', 'v04999']);
    assert.deepEqual([by.get('t')!.min, by.get('t')!.max], [1600000000000000n, 1600000000000000n + 4999n * 1000001n], 'timestamps kept in microseconds');
    const metrics = columnMetrics(footer.columns, schemaOf([['n', 'long'], ['s', 'string'], ['t', 'timestamptz']]), metricsModes({}));
    assert.equal(metrics.upperBounds.get(3)!.readBigInt64LE(), 1600000000000000n + 4999n * 1000001n);
    assert.equal(metrics.nullValueCounts.get(2), 2048n);
  });
  test('a NaN min or max in any row group (first or later, float or double) leaves the column with counts only', async () => {
    // DuckDB and pyarrow write no NaN statistics, but older writers (DuckDB, parquet-mr before
    // PARQUET-1246) ordered NaN greatest and stored it as a row group's min or max: the NaN is patched
    // into the footer in place of the extreme it stands for, byte for byte, so the footer stays valid.
    const file = path.join(dir, 'nan.parquet');
    const duck = await openDuckSession({ tempDir: path.join(dir, 'spill') });
    try {
      // Two row groups of 2,048 rows: the first holds 1..5, the second one extreme of its own per column.
      await duck.exec(`COPY (SELECT CASE WHEN i < 2048 THEN 1 + i % 5 WHEN i = 3000 THEN 987.625 ELSE -100.5 END::DOUBLE AS later_max,
                                    CASE WHEN i < 2048 THEN 1 + i % 5 WHEN i = 3000 THEN -123.375 ELSE 50 END::FLOAT AS later_min,
                                    CASE WHEN i = 10 THEN 777.125 WHEN i < 2048 THEN 2 ELSE 1 + i % 5 END::DOUBLE AS first_max,
                                    (1 + i % 5)::DOUBLE AS clean
                               FROM range(4096) r(i)) TO '${file}' (FORMAT parquet, ROW_GROUP_SIZE 2048)`);
    } finally {
      duck.close();
    }
    const double = (v: number) => Buffer.from(new Float64Array([v]).buffer);
    const float = (v: number) => Buffer.from(new Float32Array([v]).buffer);
    const bytes = await fs.readFile(file);
    const footer = bytes.subarray(bytes.length - 8 - bytes.readUInt32LE(bytes.length - 8), bytes.length - 8);
    for (const [extreme, nan] of [[double(987.625), double(Number.NaN)], [float(-123.375), float(Number.NaN)], [double(777.125), double(Number.NaN)]]) {
      let at = footer.indexOf(extreme!);
      assert.ok(at >= 0, 'the extreme is a statistic of the footer');
      for (; at >= 0; at = footer.indexOf(extreme!, at + 1)) nan!.copy(footer, at); // min_value/max_value and the legacy min/max alike
    }
    await fs.writeFile(file, bytes);
    const read = await readParquetFooter(new LocalWarehouseStore(dir), 'nan.parquet', bytes.length);
    const schema = schemaOf([['later_max', 'double'], ['later_min', 'float'], ['first_max', 'double'], ['clean', 'double']]);
    const metrics = columnMetrics(read.columns, schema, metricsModes({}));
    for (const [id, name] of [[1, 'later_max'], [2, 'later_min'], [3, 'first_max']] as const) {
      assert.deepEqual([metrics.lowerBounds.get(id), metrics.upperBounds.get(id), metrics.valueCounts.get(id)], [undefined, undefined, 4096n], `${name}: counts only`);
    }
    assert.deepEqual([metrics.lowerBounds.get(4)!.readDoubleLE(), metrics.upperBounds.get(4)!.readDoubleLE()], [1, 5], 'a column without NaN keeps its bounds');
  });
});

describe('Iceberg bounds', () => {
  test('strings: truncated to 16 code points, the upper bound incremented', () => {
    const b = bounds(col('s', 'BYTE_ARRAY', 'STRING', enc('abcdefghijklmnopqrs'), enc('abcdefghijklmnopzz')), 'string');
    assert.equal(b.lower!.toString(), 'abcdefghijklmnop');
    assert.equal(b.upper!.toString(), 'abcdefghijklmnoq');
    const short = bounds(col('s', 'BYTE_ARRAY', 'STRING', enc('a'), enc('b')), 'string');
    assert.deepEqual([short.lower!.toString(), short.upper!.toString()], ['a', 'b']);
    const multi = bounds(col('s', 'BYTE_ARRAY', 'STRING', enc('é'.repeat(20)), enc('é'.repeat(20))), 'string');
    assert.equal(multi.upper!.toString(), 'é'.repeat(15) + 'ê', 'code points, not bytes');
  });

  test('no upper bound when no code point can be incremented; none for bytes that are not UTF-8', () => {
    const top = String.fromCodePoint(0x10ffff).repeat(17);
    const b = bounds(col('s', 'BYTE_ARRAY', 'STRING', enc('a'), enc(top)), 'string');
    assert.equal(b.lower!.toString(), 'a');
    assert.equal(b.upper, undefined);
    const bad = bounds(col('s', 'BYTE_ARRAY', 'STRING', new Uint8Array([0x61]), new Uint8Array([0xff, 0xfe])), 'string');
    assert.deepEqual([bad.lower, bad.upper, bad.counted], [undefined, undefined, 10n], 'counts without bounds');
  });

  test('timestamps: micros as stored, millis scaled, nanos rounded outwards', () => {
    const micros = bounds(col('t', 'INT64', 'TIMESTAMP(MICROS,UTC)', 5n, 7n), 'timestamptz');
    assert.deepEqual([micros.lower!.readBigInt64LE(), micros.upper!.readBigInt64LE()], [5n, 7n]);
    const millis = bounds(col('t', 'INT64', 'TIMESTAMP_MILLIS', 5n, 7n), 'timestamp');
    assert.deepEqual([millis.lower!.readBigInt64LE(), millis.upper!.readBigInt64LE()], [5000n, 7000n]);
    const nanos = bounds(col('t', 'INT64', 'TIMESTAMP(NANOS,UTC)', -1500n, 1500n), 'timestamptz');
    assert.deepEqual([nanos.lower!.readBigInt64LE(), nanos.upper!.readBigInt64LE()], [-2n, 2n]);
    // An "end of time" sentinel in millis is beyond a long's micros: counts only, not a RangeError
    // that failed every attempt of the rebuild.
    const sentinel = bounds(col('t', 'INT64', 'TIMESTAMP(MILLIS,UTC)', 0n, 2n ** 62n), 'timestamptz');
    assert.deepEqual([sentinel.lower, sentinel.upper, sentinel.counted], [undefined, undefined, 10n]);
    const plain = bounds(col('t', 'INT64', undefined, 5n, 7n), 'timestamptz');
    assert.equal(plain.lower, undefined, 'an unannotated INT64 is not a timestamp');
  });

  test('integers and floats: widened where exact, absent where not', () => {
    const int32AsLong = bounds(col('n', 'INT32', undefined, -3, 9), 'long');
    assert.deepEqual([int32AsLong.lower!.readBigInt64LE(), int32AsLong.upper!.readBigInt64LE()], [-3n, 9n]);
    assert.equal(bounds(col('n', 'INT64', 'INTEGER(64,unsigned)', 0n, 2n ** 63n), 'long').upper, undefined, 'unsigned 64-bit may not fit');
    assert.equal(bounds(col('n', 'INT64', undefined, 0n, 2n ** 40n), 'int').upper, undefined, 'out of int range');
    const asInt = bounds(col('n', 'INT32', undefined, -3, 9), 'int');
    assert.deepEqual([asInt.lower!.readInt32LE(), asInt.upper!.readInt32LE()], [-3, 9]);
    assert.equal(bounds(col('x', 'DOUBLE', undefined, Number.NaN, 1), 'double').lower, undefined);
    const zeros = bounds(col('x', 'DOUBLE', undefined, 0, 0), 'double');
    assert.ok(Object.is(zeros.lower!.readDoubleLE(), -0) && Object.is(zeros.upper!.readDoubleLE(), 0), 'both signs of zero');
    assert.equal(bounds(col('x', 'DOUBLE', undefined, 1, 2), 'float').lower, undefined, 'a double is not narrowed to a float');
    assert.equal(bounds(col('d', 'FIXED_LEN_BYTE_ARRAY', 'DECIMAL(10,2)', new Uint8Array([1]), new Uint8Array([2])), 'decimal(10,2)').lower, undefined);
  });

  test('a column without statistics in some row group gets counts only', () => {
    const c: FooterColumn = { name: 'p', node: { name: 'p', physicalType: 'BYTE_ARRAY', logicalType: 'STRING' }, physicalType: 'BYTE_ARRAY', logicalType: 'STRING', totals: { ...counts } };
    const b = bounds(c, 'string');
    assert.deepEqual([b.lower, b.upper, b.counted, b.nulls, b.size], [undefined, undefined, 10n, 1n, 100n]);
  });

  test("a column gets metrics only where readers read it as the field of its name: in a file with Parquet field ids, it carries its field's id and no other column does", () => {
    const withId = (name: string, fieldId: number | undefined, v: string): FooterColumn => {
      const c = col(name, 'BYTE_ARRAY', 'STRING', enc(v), enc(v));
      return { ...c, node: { ...c.node, fieldId } };
    };
    const schema = schemaOf([['a', 'string'], ['b', 'string']]);
    const boundsOf = (columns: FooterColumn[]) => {
      const m = columnMetrics(columns, schema, metricsModes({}));
      return [1, 2].map((id) => [m.lowerBounds.get(id)?.toString(), m.valueCounts.get(id)]);
    };
    assert.deepEqual(boundsOf([withId('a', undefined, 'x'), withId('b', undefined, 'y')]), [['x', 10n], ['y', 10n]], 'no ids: by name');
    assert.deepEqual(boundsOf([withId('a', 1, 'x'), withId('b', 2, 'y')]), [['x', 10n], ['y', 10n]], "the table's ids");
    assert.deepEqual(boundsOf([withId('a', 2, 'x'), withId('b', 1, 'y')]), [[undefined, undefined], [undefined, undefined]], 'swapped ids: a reader reads b as a');
    assert.deepEqual(boundsOf([withId('a', undefined, 'x'), withId('b', 1, 'y')]), [[undefined, undefined], [undefined, undefined]], "a's id on b: Java reads b as a");
    assert.deepEqual(boundsOf([withId('a', 1, 'x'), withId('b', undefined, 'y')]), [['x', 10n], [undefined, undefined]], 'without an id in a file with ids, Java reads b as null');
    assert.deepEqual(boundsOf([withId('a', 1, 'x'), withId('a', 1, 'z')]).slice(0, 1), [[undefined, undefined]], 'two columns with one id');
    assert.deepEqual(boundsOf([withId('a', undefined, 'x'), withId('a', undefined, 'z'), withId('b', undefined, 'y')]), [[undefined, undefined], ['y', 10n]], 'a name the file repeats: readers refuse the file');
    const nestedIds: FooterColumn = { ...withId('b', undefined, 'y'), node: { name: 'b', children: [{ name: 'element', physicalType: 'BYTE_ARRAY', fieldId: 7 }] } };
    assert.deepEqual(boundsOf([withId('a', undefined, 'x'), nestedIds]), [[undefined, undefined], [undefined, undefined]], 'ids only in a nested field: still a file with ids');
  });

  test("a renamed column's files, which carry an old name the name mapping keeps, get metrics for its field; a file holding the old and the new name gets none for it", () => {
    const text = (name: string, v: string) => col(name, 'BYTE_ARRAY', 'STRING', enc(v), enc(v));
    const schema = schemaOf([['id', 'string'], ['sat_platform', 'string']]);
    const aliases = new Map([[2, ['platform', 'sat_platform']]]);
    const platformOf = (columns: FooterColumn[], modes: Record<string, string> = {}) =>
      columnMetrics(columns, schema, metricsModes(modes), aliases).lowerBounds.get(2)?.toString();
    assert.equal(platformOf([text('id', 'a'), text('platform', 'landsat-8')]), 'landsat-8', 'the old name');
    assert.equal(platformOf([text('id', 'a'), text('sat_platform', 'sentinel-2')]), 'sentinel-2', 'the new name');
    assert.equal(platformOf([text('id', 'a'), text('platform', 'landsat-8'), text('sat_platform', 'sentinel-2')]), undefined, 'both names');
    assert.equal(platformOf([text('id', 'a'), text('platform', 'landsat-8')], { 'write.metadata.metrics.column.sat_platform': 'counts' }), undefined, "the mode of the field's current name");
  });

  test('metrics modes from the table properties', () => {
    const c = col('s', 'BYTE_ARRAY', 'STRING', enc('abcdefghijklmnopqrs'), enc('abcdefghijklmnopzz'));
    const counted = bounds(c, 'string', { 'write.metadata.metrics.default': 'counts' });
    assert.deepEqual([counted.lower, counted.counted], [undefined, 10n]);
    const full = bounds(c, 'string', { 'write.metadata.metrics.default': 'counts', 'write.metadata.metrics.column.s': 'full' });
    assert.equal(full.upper!.toString(), 'abcdefghijklmnopzz');
    const four = bounds(c, 'string', { 'write.metadata.metrics.default': 'truncate(4)' });
    assert.deepEqual([four.lower!.toString(), four.upper!.toString()], ['abcd', 'abce']);
    const none = bounds(c, 'string', { 'write.metadata.metrics.column.s': 'none' });
    assert.deepEqual([none.lower, none.counted, none.size], [undefined, undefined, undefined]);
  });

  test('a written bound holds the values it was written from (what verify checks)', () => {
    const id = bounds(col('id', 'BYTE_ARRAY', 'STRING', enc('ITSLIVE_2020_C0_000000'), enc('ITSLIVE_2020_C0_000019')), 'string');
    assert.equal(boundHolds('string', 'lower', id.lower!, 'ITSLIVE_2020_C0_000000'), true);
    assert.equal(boundHolds('string', 'upper', id.upper!, 'ITSLIVE_2020_C0_000019'), true);
    assert.equal(boundHolds('string', 'upper', id.upper!, 'ITSLIVE_2020_C1'), false, 'a larger value escapes the upper bound');
    const t = bounds(col('t', 'INT64', 'TIMESTAMP(MICROS,UTC)', 5n, 7n), 'timestamptz');
    assert.deepEqual([boundHolds('timestamptz', 'lower', t.lower!, 5n), boundHolds('timestamptz', 'lower', t.lower!, 4n)], [true, false]);
    assert.deepEqual([boundHolds('timestamptz', 'upper', t.upper!, 7n), boundHolds('timestamptz', 'upper', t.upper!, 8n)], [true, false]);
    assert.equal(boundHolds('timestamptz', 'upper', t.upper!, '7'), undefined, 'a value of another kind is not judged');
    assert.equal(boundHolds('binary', 'upper', Buffer.from([1]), 'x'), undefined);
  });
});
