/** The command line's own parsing: subcommand help, resume's --plan in both spellings, a resume's refusal of a new selection. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { location, shellWord, UsageError } from '../client/cli-args';
import { resumeArgs, runResumeCommand } from '../client/commands/resume';
import { resolveTarget } from '../client/connection';
import { DEFAULT_TASK_QUEUE } from '../workflows/contract';
import { REPO_ROOT } from './helpers/temporal';
import { makeTempDir } from './helpers/temp-dirs';

const execFileP = promisify(execFile);

test('every subcommand answers --help with its own usage and exit 0, without contacting a server', async () => {
  for (const [command, expected] of [
    ['worker', /^usage: earthcatalog-compact worker \[--memory-budget-mb N\]/],
    ['schedule', /^usage: earthcatalog-compact schedule create\|describe\|update/],
    ['resume', /^usage: earthcatalog-compact resume --warehouse W --catalog C \[--plan PLAN_ID\]/],
    ['status', /^usage: earthcatalog-compact status/],
  ] as const) {
    const { stdout } = await execFileP(process.execPath, [path.join(REPO_ROOT, 'bin', 'earthcatalog-compact'), command, '--help'], {
      cwd: REPO_ROOT,
      env: { ...process.env, TEMPORAL_ADDRESS: '127.0.0.1:1' },
    });
    assert.match(stdout, expected, `${command} --help`);
  }
});

test('resume takes --plan ID and --plan=ID out of the compaction flags; --plan without an id is a usage error', () => {
  assert.deepEqual(resumeArgs(['--warehouse', '/w', '--plan', 'p1', '--catalog', '/c']), { planId: 'p1', rest: ['--warehouse', '/w', '--catalog', '/c'] });
  assert.deepEqual(resumeArgs(['--plan=p2', '--warehouse', '/w']), { planId: 'p2', rest: ['--warehouse', '/w'] });
  assert.deepEqual(resumeArgs(['--warehouse', '/w']), { planId: undefined, rest: ['--warehouse', '/w'] });
  for (const bad of [['--plan'], ['--plan', '--warehouse', '/w'], ['--plan=']]) {
    assert.throws(() => resumeArgs(bad), (err: unknown) => err instanceof UsageError && /--plan needs a plan id/.test(err.message));
  }
});

test('resume refuses --threshold, --cells and --years before contacting a server: the plan keeps its own', async () => {
  for (const flag of [['--threshold', '3'], ['--cells=a1'], ['--years', '2026']]) {
    await assert.rejects(runResumeCommand(['--warehouse', '/w', '--catalog', '/c.db', ...flag, '--address', '127.0.0.1:1']), (err: unknown) => {
      assert.ok(err instanceof UsageError, String(err));
      assert.match(err.message, new RegExp(`^a resume finishes its plan as it was made \\(its threshold, cells and years\\): leave out ${flag[0]!.split('=')[0]}$`));
      return true;
    });
  }
});

/** Runs the CLI; resolves with its exit code and output whatever the code. */
async function cli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return execFileP(process.execPath, [path.join(REPO_ROOT, 'bin', 'earthcatalog-compact'), ...args], {
    cwd: REPO_ROOT,
    env: { ...process.env, TEMPORAL_ADDRESS: '127.0.0.1:1', ...env },
  }).then(
    ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
    (err: { code: number; stdout: string; stderr: string }) => ({ code: err.code, stdout: err.stdout, stderr: err.stderr }),
  );
}

test('a flag given empty (a script\'s unset variable) is refused as a usage error, not dropped: --cells "" would compact every cell, --table "" the default table, --lock-timeout= wait 0 s', async () => {
  const base = ['--warehouse', '/w', '--catalog', '/c.db', '--dry-run'];
  for (const flag of ['--cells', '--years', '--table', '--iceberg-namespace', '--threshold', '--lock-timeout', '--workflow-id', '--task-queue', '--namespace']) {
    for (const args of [[flag, ''], [`${flag}=`]]) {
      const r = await cli([...base, ...args]);
      assert.equal(r.code, 64, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, new RegExp(`^earthcatalog-compact: ${flag} was given empty: give it a value or leave it out\n`));
      assert.match(r.stderr, /\nusage: earthcatalog-compact --warehouse W --catalog C/, 'the usage of the command at fault');
    }
  }
  const schedule = await cli(['schedule', 'delete', '--schedule-id', '']);
  assert.equal(schedule.code, 64, schedule.stderr);
  assert.match(schedule.stderr, /--schedule-id was given empty/);
});

test('a stray word is refused naming it, before any server is contacted: "dry-run" without its dashes would compact for real, "schedule delete other" delete the default schedule', async () => {
  for (const [args, word] of [
    [['--warehouse', '/w', '--catalog', '/c.db', 'dry-run'], 'dry-run'],
    [['schedule', 'delete', 'other-sched'], 'other-sched'],
    [['cancel', '--no-wait', 'some-run'], 'some-run'],
    [['status', '--workflow-id', 'run-1', 'typo'], 'typo'],
    [['verify', '--warehouse', '/w', '--catalog', '/c.db', 'extra'], 'extra'],
    [['resume', '--warehouse', '/w', '--catalog', '/c.db', 'now'], 'now'],
  ] as const) {
    const r = await cli([...args]);
    assert.equal(r.code, 64, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, new RegExp(`^earthcatalog-compact: Unexpected argument '${word}'`), args.join(' '));
    assert.doesNotMatch(r.stderr, /connect|127\.0\.0\.1:1/, 'refused before connecting');
  }
});

test('whole numbers are decimal digits: 1e3, 2024.0 and 0x7e8 are refused; a negative value is taken as the value it is and refused naming the flag and what it takes', async () => {
  const base = ['--warehouse', '/w', '--catalog', '/c.db', '--dry-run'];
  for (const years of ['1e3', '2024.0', '0x7e8']) {
    const r = await cli([...base, '--years', years]);
    assert.equal(r.code, 64, `--years ${years}: ${r.stderr}`);
    assert.match(r.stderr, new RegExp(`--years must be a whole number, got "${years}"`));
  }
  // Node's parser alone answers `--threshold -1` with its hint about spelling `--threshold=-XYZ`.
  for (const [flag, takes] of [
    ['--max-parallel', /at least 1 \(bucket activities in flight\)/],
    ['--threshold', /at least 1 \(a bucket with that many data files or more is compacted; 1 takes every bucket\)/],
    ['--lock-timeout', /at least 0 \(0: run now or not at all\)/],
  ] as const) {
    const negative = await cli([...base, flag, '-1']);
    assert.equal(negative.code, 64, negative.stderr);
    assert.match(negative.stderr, new RegExp(`^earthcatalog-compact: invalid compaction input: ${flag}: .*${takes.source}`));
  }
  const year = await cli([...base, '--years', '-2024']);
  assert.match(year.stderr, /^earthcatalog-compact: invalid compaction input: --years item 1: a year has four digits \(1000 to 9999\), got -2024/);
});

test('bad values are usage errors (exit 64) whether the flag parser or the input schema finds them, before any server is contacted', async () => {
  const base = ['--warehouse', '/w', '--catalog', '/c.db'];
  for (const args of [[...base, '--threshold', '0'], [...base, '--years', '26'], [...base, '--cells', ','], [...base, '--threshold', 'abc'], ['resume', ...base, '--dry-run']]) {
    const r = await cli(args);
    assert.equal(r.code, 64, `${args.join(' ')}: ${r.stderr}`);
    assert.doesNotMatch(r.stderr, /connect|127\.0\.0\.1:1/, 'refused before connecting');
  }
  // A name S3 Tables does not allow, with an S3 Tables catalog: refused like any bad name, not by the run's pre-flight.
  const tableBucket = 'arn:aws:s3tables:us-east-1:123456789012:bucket/ec-tables';
  const s3TablesName = await cli(['--warehouse', 's3://wh-bucket/w', '--catalog', tableBucket, '--iceberg-namespace', 'awsns']);
  assert.equal(s3TablesName.code, 64, s3TablesName.stderr);
  assert.match(s3TablesName.stderr, /namespace "awsns" is not allowed in S3 Tables .*not beginning with "aws"/);
  assert.doesNotMatch(s3TablesName.stderr, /connect|127\.0\.0\.1:1/, 'refused before connecting');
  const lockId = await cli([...base, '--workflow-id', 'earthcatalog-lock:warehouse:/w']);
  assert.equal(lockId.code, 64, lockId.stderr);
  assert.match(lockId.stderr, /--workflow-id: the workflow id earthcatalog-lock:warehouse:\/w is of the form of a lock workflow's/);
  // A list with an empty item ("$A,$B" with B unset) is refused, not read as the items that are there.
  for (const [command, flag, list] of [['compact', '--cells', 'a1,,b2'], ['verify', '--cells', 'a1,'], ['schedule', '--years', '2024,,2025']] as const) {
    const args = command === 'schedule' ? ['schedule', 'create', '--every', '7d', ...base, flag, list] : command === 'verify' ? ['verify', ...base, flag, list] : [...base, flag, list];
    const r = await cli(args);
    assert.equal(r.code, 64, `${args.join(' ')}: ${r.stderr}`);
    const item = list.split(',').indexOf('') + 1;
    assert.match(r.stderr, new RegExp(`^earthcatalog-compact: ${flag} item ${item} of "${list}" is empty: list the ${flag.slice(2)} separated by single commas$`, 'm'));
  }
  const year = await cli([...base, '--years', '2024,26']);
  assert.match(year.stderr, /^earthcatalog-compact: invalid compaction input: --years item 2: a year has four digits \(1000 to 9999\), got 26$/m);
  // Problems are told by the flag that was typed, not by the input field it sets.
  const parallel = await cli([...base, '--max-parallel', '0']);
  assert.match(parallel.stderr, /^earthcatalog-compact: invalid compaction input: --max-parallel: at least 1 \(bucket activities in flight\)$/m);
  const selection = await cli(['verify', ...base, '--years', '2024,1']);
  assert.equal(selection.code, 64, selection.stderr);
  assert.match(selection.stderr, /^earthcatalog-compact: invalid selection: --years item 2: a year has four digits \(1000 to 9999\), got 1$/m);
  const resume = await cli(['resume', ...base, '--dry-run']);
  assert.match(resume.stderr, /a resume cannot be a dry run/);
  assert.match(resume.stderr, /\nusage: earthcatalog-compact resume /, "resume's own usage");
  // --pipeline-lock names the object --use-lock takes: alone it would be silently unused.
  const lockAlone = await cli([...base, '--pipeline-lock', 's3://bucket/catalog/.lock']);
  assert.equal(lockAlone.code, 64, lockAlone.stderr);
  assert.match(lockAlone.stderr, /^earthcatalog-compact: invalid compaction input: --pipeline-lock: pipelineLock names the object useLock takes: set useLock too$/m);
  const lockFolder = await cli([...base, '--use-lock', '--pipeline-lock', 's3://bucket/catalog/']);
  assert.equal(lockFolder.code, 64, lockFolder.stderr);
  assert.match(lockFolder.stderr, /--pipeline-lock: pipelineLock must be an absolute path or an s3:\/\/bucket\/key URI of one object/);
  const env = await cli(['worker'], { EARTHCATALOG_MEMORY_BUDGET_MB: '2g' });
  assert.equal(env.code, 64, env.stderr);
  assert.match(env.stderr, /EARTHCATALOG_MEMORY_BUDGET_MB must be a positive whole number, got "2g"/);
});

test('a file:// warehouse or catalog is a local path; a URI of another scheme is a usage error naming the flag, not a relative path under the working directory', async () => {
  assert.equal(location('file:///tmp/wh', 'warehouse'), '/tmp/wh');
  assert.equal(location('file:///tmp/a%20b/catalog.db', 'catalog'), '/tmp/a b/catalog.db');
  assert.equal(location('wh', 'warehouse'), path.resolve('wh'));
  assert.equal(location('s3://b/wh', 'warehouse'), 's3://b/wh');
  const shouted = 'ARN:aws:s3tables:us-east-1:123456789012:bucket/tables';
  assert.equal(location(shouted, 'catalog'), shouted, 'an ARN in capitals is no relative path');
  const refused = await cli(['--warehouse', '/w', '--catalog', shouted]);
  assert.equal(refused.code, 64, refused.stderr);
  assert.match(refused.stderr, /catalog must be an absolute path to catalog\.db, s3:\/\/bucket\/key\/catalog\.db, or an S3 Tables bucket ARN/);
  assert.throws(() => location('file://otherhost/wh', 'warehouse'), (e: unknown) => e instanceof UsageError && /^--warehouse "file:\/\/otherhost\/wh" is not a file URI of this machine/.test(e.message));
  // Credentials pasted into the URI are not repeated.
  assert.throws(
    () => location('file://AKIAEXAMPLE:s3cr3t@otherhost/wh', 'warehouse'),
    (e: unknown) => e instanceof UsageError && /^--warehouse "file:\/\/…@otherhost\/wh" is not a file URI of this machine/.test(e.message) && !/AKIAEXAMPLE|s3cr3t/.test(e.message),
  );
  assert.throws(
    () => location('file://AKIAEXAMPLE:s3/cr3t@otherhost/wh', 'warehouse'),
    (e: unknown) => e instanceof UsageError && /^--warehouse "file:\/\/…@otherhost\/wh"/.test(e.message) && !/AKIAEXAMPLE|cr3t/.test(e.message),
    'a secret with a slash',
  );
  for (const flag of ['warehouse', 'catalog'] as const) {
    const args = ['--warehouse', '/w', '--catalog', '/c.db'];
    args[args.indexOf(`--${flag}`) + 1] = 'gs://b/x';
    for (const command of [args, ['verify', ...args]]) {
      const r = await cli(command);
      assert.equal(r.code, 64, `${command.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, new RegExp(`--${flag} takes a local path or an s3:// URI, not a gs:// URI: "gs://b/x"`));
    }
  }
});

test('--help anywhere among the compaction flags prints the usage', async () => {
  const r = await cli(['--warehouse', '/w', '--help']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^usage: earthcatalog-compact --warehouse W --catalog C/);
});

test('a worker whose scratch directory cannot be made says so, naming it, before it contacts a server', async () => {
  const file = path.join(await makeTempDir('ec-scratch-file'), 'a-file');
  await fs.writeFile(file, 'not a directory');
  const r = await cli(['worker', '--scratch-dir', file]);
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, new RegExp(`^earthcatalog-compact: scratch directory ${file} cannot be used: ENOTDIR`));
  assert.doesNotMatch(r.stderr, /connect|127\.0\.0\.1:1|Workers hold a reference/);
});

test('a schedule with a cron of the wrong shape or an unknown time zone is a usage error naming the flag, before any server is contacted', async () => {
  for (const [args, message] of [
    [['schedule', 'create', '--warehouse', '/w', '--catalog', '/c.db', '--cron', 'not a cron'], /^earthcatalog-compact: --cron must have 5 to 7 fields .*got "not a cron"/],
    [['schedule', 'update', '--cron', '0 3 *'], /^earthcatalog-compact: --cron must have 5 to 7 fields/],
    [['schedule', 'create', '--warehouse', '/w', '--catalog', '/c.db', '--timezone', 'Mars/Olympus'], /^earthcatalog-compact: --timezone: unknown time zone "Mars\/Olympus"/],
    [['schedule', 'update', '--timezone', 'Mars/Olympus'], /^earthcatalog-compact: --timezone: unknown time zone "Mars\/Olympus"/],
  ] as const) {
    const r = await cli([...args]);
    assert.equal(r.code, 64, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, message);
    assert.doesNotMatch(r.stderr, /connect|127\.0\.0\.1:1/, 'refused before connecting');
  }
});

test("the worker and the demo refuse counts that are not positive decimal numbers, and a bucket budget above the worker's memory, before starting anything", async () => {
  for (const [args, message] of [
    [['demo', '--cells', 'abc'], /^earthcatalog-compact: --cells must be a positive whole number, got "abc"/],
    [['demo', '--years', '0'], /^earthcatalog-compact: --years must be a positive whole number, got "0"/],
    [['demo', '--cells', '40'], /^earthcatalog-compact: --cells 40: the demo has 6 cells/],
    [['demo', '--years', '9000'], /^earthcatalog-compact: --years 9000: the demo's years start at 2022 and end by 9999/],
    [['worker', '--memory-budget-mb', '1e3'], /^earthcatalog-compact: --memory-budget-mb must be a positive whole number, got "1e3"/],
    [['worker', '--memory-budget-mb', '2048', '--memory-mb', '1024'], /^earthcatalog-compact: --memory-budget-mb 2048 is more than --memory-mb 1024/],
    [['worker', '--memory-budget-mb', '1', '--memory-mb', '64'], /^earthcatalog-compact: --memory-budget-mb 1 is below 64: DuckDB gets half/],
    [['worker', '--memory-budget-mb', '512', '--memory-mb', '1024', '--max-concurrent-buckets', '64'], /^earthcatalog-compact: --max-concurrent-buckets 64 buckets of 512 MB need 32768 MB, more than --memory-mb 1024/],
    [['worker', '--max-concurrent-buckets', '99999999999999999999'], /^earthcatalog-compact: --max-concurrent-buckets 100000000000000000000 is more than 1000/],
    [['worker', '--memory-mb', '4096', '--max-concurrent-buckets', '8'], /^earthcatalog-compact: --max-concurrent-buckets 8 buckets of 1024 MB \(no --memory-budget-mb given\) need 8192 MB, more than --memory-mb 4096/],
    // Without a budget, a --memory-mb below the default 1 GB is the budget of one bucket: two do not fit.
    [['worker', '--memory-mb', '512', '--max-concurrent-buckets', '2'], /^earthcatalog-compact: --max-concurrent-buckets 2 buckets of 512 MB \(no --memory-budget-mb given\) need 1024 MB, more than --memory-mb 512/],
    [['worker', '--memory-mb', '32'], /^earthcatalog-compact: --memory-mb 32 is below 64: not one bucket fits/],
  ] as const) {
    const r = await cli([...args]);
    assert.equal(r.code, 64, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, message);
    assert.doesNotMatch(r.stderr, /connect|127\.0\.0\.1:1|demo: /, 'refused before anything started');
  }
  // One bucket of all of a --memory-mb below the default budget: the worker goes on to connect.
  const one = await cli(['worker', '--memory-mb', '512', '--max-concurrent-buckets', '1', '--scratch-dir', await makeTempDir('ec-worker-one-bucket')]);
  assert.equal(one.code, 1, one.stderr);
  assert.match(one.stderr, /^earthcatalog-compact: cannot reach Temporal at 127\.0\.0\.1:1\//);
  // The budget from the environment is held to the same bound, naming the variable.
  const r = await cli(['worker', '--memory-mb', '1024'], { EARTHCATALOG_MEMORY_BUDGET_MB: '2048' });
  assert.equal(r.code, 64, r.stderr);
  assert.match(r.stderr, /^earthcatalog-compact: EARTHCATALOG_MEMORY_BUDGET_MB 2048 is more than --memory-mb 1024/);
});

test('a worker that cannot reach the server says which server, as every command does', async () => {
  const r = await cli(['worker', '--scratch-dir', await makeTempDir('ec-worker-unreachable')]);
  assert.equal(r.code, 1, r.stderr);
  // The operating system's reason, not the core's transport dump.
  assert.match(r.stderr, /^earthcatalog-compact: cannot reach Temporal at 127\.0\.0\.1:1\/default: Connection refused \(is the server running there\? --address or TEMPORAL_ADDRESS names it\)$/m);
  assert.doesNotMatch(r.stderr, /tonic/);
  const dns = await cli(['worker', '--address', 'no-such-host.invalid:7233', '--scratch-dir', await makeTempDir('ec-worker-dns')]);
  assert.equal(dns.code, 1, dns.stderr);
  assert.match(dns.stderr, /^earthcatalog-compact: cannot reach Temporal at no-such-host\.invalid:7233\/default: failed to lookup address information: .*\(is the server running there\?/m);
});

test('a Temporal address that is not host:port is a usage error naming where it came from, not a connection timeout blamed on the server', async () => {
  for (const [args, env, from] of [
    [['status', '--address', 'localhost'], {}, '--address'],
    [['status', '--address', 'localhost:99999'], {}, '--address'],
    [['worker', '--address', 'http://localhost:7233'], {}, '--address'],
    [['status'], { TEMPORAL_ADDRESS: 'temporal.internal' }, 'TEMPORAL_ADDRESS or the config profile'],
  ] as const) {
    const r = await cli([...args], env);
    assert.equal(r.code, 64, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, new RegExp(`^earthcatalog-compact: Temporal address "[^"]+" \\(from ${from}\\) is not host:port with a port from 1 to 65535`, 'm'));
  }
  assert.equal(resolveTarget({ address: '[::1]:7233' }).address, '[::1]:7233');
  assert.equal(resolveTarget({ address: 'temporal-frontend.ns.svc.cluster.local:7233' }).address, 'temporal-frontend.ns.svc.cluster.local:7233');
});

test('an empty EARTHCATALOG_TASK_QUEUE means unset, for every command alike (the default queue), and a flag still wins', () => {
  const saved = process.env.EARTHCATALOG_TASK_QUEUE;
  process.env.EARTHCATALOG_TASK_QUEUE = '';
  try {
    assert.equal(resolveTarget({}).taskQueue, DEFAULT_TASK_QUEUE);
    assert.equal(resolveTarget({ taskQueue: 'q1' }).taskQueue, 'q1');
    process.env.EARTHCATALOG_TASK_QUEUE = 'q2';
    assert.equal(resolveTarget({}).taskQueue, 'q2');
  } finally {
    if (saved === undefined) delete process.env.EARTHCATALOG_TASK_QUEUE;
    else process.env.EARTHCATALOG_TASK_QUEUE = saved;
  }
});

test('a value in a printed command is one shell word: a workflow id with a space or a quote is quoted, a plain one left as it is', async () => {
  assert.equal(shellWord('earthcatalog-compact-adhoc-1'), 'earthcatalog-compact-adhoc-1');
  assert.equal(shellWord('weekly run; 2026'), `'weekly run; 2026'`);
  assert.equal(shellWord(`it's`), `'it'\\''s'`);
  const { stdout } = await execFileP('sh', ['-c', `printf '%s' ${shellWord(`weekly run; it's $HOME`)}`]);
  assert.equal(stdout, `weekly run; it's $HOME`, 'the shell reads back the value itself');
});
