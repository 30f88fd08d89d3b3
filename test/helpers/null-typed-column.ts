import { execFile } from 'node:child_process';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { pythonExecutable } from '../../client/temporal-cli';

const execFileP = promisify(execFile);

/**
 * Rewrites `file` in place with `column` of the Parquet Null type, as pyarrow writes a column that held no
 * value in a whole batch. DuckDB cannot write that type, hence pyarrow (test/py/null_column.py).
 */
export async function makeColumnNullTyped(file: string, column: string): Promise<void> {
  await execFileP(pythonExecutable(), [path.resolve(__dirname, '..', 'py', 'null_column.py'), file, column], { timeout: 60_000 });
}
