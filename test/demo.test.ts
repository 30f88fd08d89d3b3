/**
 * The README's first command: `earthcatalog-compact demo` on its embedded defaults, with a dev server of its
 * own (no TEMPORAL_ADDRESS), read back by pyiceberg.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { REPO_ROOT, startTemporal } from './helpers/temporal';
import { makeTempDir } from './helpers/temp-dirs';
import { waitFor } from './helpers/wait';
import { byBucket, listFiles, pyicebergScan } from './helpers/warehouse-fixtures';

const execFileP = promisify(execFile);

test('the demo starts its own dev server, compacts its sample warehouse, prints the summary and the table, and pyiceberg reads the same rows', async () => {
  const dir = await makeTempDir('ec-demo');
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.TEMPORAL_ADDRESS;
  delete env.TEMPORAL_NAMESPACE;
  const { stdout, stderr } = await execFileP(process.execPath, [path.join(REPO_ROOT, 'bin', 'earthcatalog-compact'), 'demo', '--dir', dir, '--cells', '2', '--years', '2'], {
    cwd: REPO_ROOT,
    env,
    timeout: 300_000,
    maxBuffer: 16 * 1024 * 1024,
  });

  const figures = new Map([...stdout.matchAll(/^([a-z_]+):\s+(\S+)$/gm)].map((m) => [m[1]!, m[2]!]));
  const figure = (name: string) => {
    assert.ok(figures.has(name), `the summary prints ${name}:\n${stdout}`);
    return Number(figures.get(name));
  };
  assert.equal(figure('buckets_scanned'), 4, '2 cells x 2 years');
  assert.equal(figure('buckets_compacted'), 4);
  assert.equal(figure('files_after'), 4, 'one file per bucket');
  assert.equal(figure('failed_buckets'), 0);
  assert.ok(figure('duplicates_removed') > 0, 'the sample repeats ids across part files');
  assert.equal(figure('rows_after'), figure('rows_before') - figure('duplicates_removed'));
  assert.equal(figure('catalog_rows'), figure('rows_after'), 'the table lists every compacted row');
  assert.doesNotMatch(stdout, /did not exist .* and was created/, "the demo's new table is no cause for a warning");
  assert.match(stdout, new RegExp(`^  files     4, rows ${figure('rows_after')}$`, 'm'), 'the table read back through the catalog');
  const groups = [...stdout.matchAll(/ rows (\d+) distinct ids (\d+)$/gm)];
  assert.ok(groups.length > 0, 'rows by partition and platform');
  for (const [line, rows, ids] of groups) assert.equal(rows, ids, `no id twice: ${line}`);
  assert.match(stderr, /demo: Temporal at 127\.0\.0\.1:\d+/, 'it started a dev server of its own');
  // The progress (a line per phase off a terminal) ends with the run's end, not the phase polled last.
  const bars = stderr.split('\n').filter((l) => /^\[[#.]+\] /.test(l));
  assert.match(bars.at(-1) ?? '', new RegExp(`^\\[#+\\] 4/4 buckets · rows ${figure('rows_before')}→${figure('rows_after')} · failed 0 · done$`), stderr);

  const scan = await pyicebergScan(path.join(dir, 'catalog.db'));
  assert.equal(scan.error, undefined);
  assert.equal(scan.row_count, figure('rows_after'));
  assert.equal(new Set(scan.ids).size, scan.ids!.length, 'pyiceberg sees each id once per cell');
});

test('demo --generate-only writes the sample warehouse and prints the command that compacts it, without a server, a worker or a table', async () => {
  const dir = path.join(await makeTempDir('ec-demo-generate'), 'a sample');
  const { stdout, stderr } = await execFileP(process.execPath, [path.join(REPO_ROOT, 'bin', 'earthcatalog-compact'), 'demo', '--generate-only', '--dir', dir, '--cells', '2', '--years', '1'], {
    cwd: REPO_ROOT,
    env: { ...process.env, TEMPORAL_ADDRESS: '127.0.0.1:1' },
    timeout: 120_000,
  });
  const warehouse = path.join(dir, 'warehouse');
  assert.equal(stdout, `earthcatalog-compact --warehouse '${warehouse}' --catalog '${path.join(dir, 'catalog.db')}'\n`);
  assert.match(stderr, new RegExp(`^demo: sample warehouse ${warehouse}: 2 buckets, \\d+ part files, \\d+ rows$`, 'm'));
  assert.doesNotMatch(stderr, /Temporal at/);
  const buckets = byBucket(await listFiles(warehouse));
  assert.deepEqual([...buckets.keys()].sort(), ['grid_partition=8128bffffffffff/year=2022', 'grid_partition=8129bffffffffff/year=2022']);
  for (const [bucket, files] of buckets) assert.ok(files.length >= 3, `${bucket} has part files to compact`);
  await assert.rejects(fs.stat(path.join(dir, 'catalog.db')), 'no table before the first compaction');

  // A --dir that already holds a warehouse (a mistyped one in a script) is refused: sample rows beside
  // real ones would go into the table with the next compaction. So is one that holds a catalog.
  const filesBefore = await listFiles(warehouse);
  const again = (into: string) =>
    execFileP(process.execPath, [path.join(REPO_ROOT, 'bin', 'earthcatalog-compact'), 'demo', '--generate-only', '--dir', into], { cwd: REPO_ROOT, timeout: 120_000 });
  await assert.rejects(again(dir), (err: { code?: number; stderr?: string }) => {
    assert.equal(err.code, 64);
    assert.match(err.stderr ?? '', new RegExp(`--dir: ${warehouse} is not empty`));
    return true;
  });
  assert.deepEqual(await listFiles(warehouse), filesBefore, 'nothing added');
  const withCatalog = await makeTempDir('ec-demo-catalog');
  await fs.writeFile(path.join(withCatalog, 'catalog.db'), 'a catalog');
  await assert.rejects(again(withCatalog), (err: { code?: number; stderr?: string }) => err.code === 64 && /catalog\.db exists/.test(err.stderr ?? ''));
  await assert.rejects(fs.stat(path.join(withCatalog, 'warehouse')), 'no sample warehouse beside it');
});

test('on a shared server (TEMPORAL_ADDRESS) the demo leaves nothing running: its lock workflows would wait there for a worker that is gone', async () => {
  const h = await startTemporal();
  const spills = async () => (await fs.readdir(os.tmpdir())).filter((name) => name.startsWith('earthcatalog-demo-duckdb'));
  const spillsBefore = await spills();
  try {
    const dir = await makeTempDir('ec-demo-shared');
    const { stdout } = await execFileP(process.execPath, [path.join(REPO_ROOT, 'bin', 'earthcatalog-compact'), 'demo', '--dir', dir, '--cells', '1', '--years', '1'], {
      cwd: REPO_ROOT,
      env: { ...process.env, TEMPORAL_ADDRESS: h.address, TEMPORAL_NAMESPACE: h.namespace },
      timeout: 300_000,
      maxBuffer: 16 * 1024 * 1024,
    });
    assert.match(stdout, /^buckets_compacted:\s+1$/m);
    const locks = async () => {
      const ran: { workflowId: string; status: string }[] = [];
      for await (const wf of h.client.workflow.list({ query: `WorkflowType = 'resourceLock'` })) ran.push({ workflowId: wf.workflowId, status: wf.status.name });
      return ran;
    };
    assert.ok((await locks()).length >= 2, 'the run took its warehouse and catalog locks');
    // Visibility may show a termination a moment late; left running, they would never close.
    const running = await waitFor('no lock workflow running', async () => {
      const left = (await locks()).filter((wf) => wf.status === 'RUNNING');
      return left.length === 0 ? left : undefined;
    }, 15_000).catch(async () => (await locks()).filter((wf) => wf.status === 'RUNNING'));
    assert.deepEqual(running, [], 'no lock workflow is left running');
    assert.deepEqual(await spills(), spillsBefore, 'nor a DuckDB spill folder of its read-back');
  } finally {
    await h.stop();
  }
});
