/** Runs one case in its own Node process and reads back its result. */
import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { resultFileFor, type ChildJob, type ChildResult } from './child-jobs';

const ENTRY = path.join(__dirname, 'case-process.ts');

export class CaseFailedError extends Error {
  constructor(
    readonly caseName: string,
    message: string,
  ) {
    super(message);
    this.name = 'CaseFailedError';
  }
}

export async function spawnCase(name: string, job: ChildJob, jobDir: string): Promise<ChildResult> {
  await fs.mkdir(jobDir, { recursive: true });
  const jobFile = path.join(jobDir, `${name}.json`);
  await fs.rm(resultFileFor(jobFile), { force: true });
  await fs.writeFile(jobFile, JSON.stringify(job));
  // tsx as an import hook (not the tsx CLI), so the measured process is the case itself, not a wrapper.
  const child = spawn(process.execPath, ['--import', 'tsx', ENTRY, jobFile], { stdio: ['ignore', 'pipe', 'pipe'] });
  // Whatever a case prints (the dev server's banner, say) goes to stderr: stdout is the table only.
  child.stdout!.on('data', (d: Buffer) => process.stderr.write(d));
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => {
    stderr += d.toString();
    process.stderr.write(d);
  });
  const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
  if (code !== 0) {
    // The error's own line, not the stack under it (the whole of stderr went to the console already).
    const lines = stderr.trim().split('\n').map((l) => l.trim());
    const headline = [...lines].reverse().find((l) => /^[A-Za-z]*Error\b/.test(l)) ?? lines.at(-1);
    throw new CaseFailedError(name, `case ${name} exited with code ${code}${headline ? `: ${headline}` : ''}`);
  }
  return JSON.parse(await fs.readFile(resultFileFor(jobFile), 'utf8')) as ChildResult;
}
