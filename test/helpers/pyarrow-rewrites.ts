import { execFile } from 'node:child_process';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { pythonExecutable } from '../../client/temporal-cli';

const execFileP = promisify(execFile);

/** Files only pyarrow writes (DuckDB cannot, or renames what it would write), through test/py. */
async function runScript(script: string, args: readonly string[]): Promise<void> {
  await execFileP(pythonExecutable(), [path.resolve(__dirname, '..', 'py', script), ...args], { timeout: 60_000 });
}

/**
 * Rewrites `file` in place with `column` of the Parquet Null type, as pyarrow writes a column that held no
 * value in a whole batch. DuckDB cannot write that type (test/py/null_column.py).
 */
export async function makeColumnNullTyped(file: string, column: string): Promise<void> {
  await runScript('null_column.py', [file, column]);
}

/**
 * Rewrites `file` in place with a copy of `column` named `as` at the end; DuckDB would rename a name that
 * matches one of the file's case-insensitively, pyarrow keeps it (test/py/copy_column.py).
 */
export async function addColumnCopy(file: string, column: string, as: string): Promise<void> {
  await runScript('copy_column.py', [file, column, as]);
}
