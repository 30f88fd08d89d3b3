/** The command line's own parsing: subcommand help, resume's --plan in both spellings, a resume's refusal of a new selection. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { UsageError } from '../client/cli-args';
import { resumeArgs, runResumeCommand } from '../client/commands/resume';
import { REPO_ROOT } from './helpers/temporal';

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
