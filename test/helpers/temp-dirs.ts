/**
 * Temporary directories of a test process. Warehouses, scratch space and crash markers add up to ~90 MB
 * per `npm test`, so they are removed when the process exits after every test passed; after a failure
 * they are kept for inspection and their paths printed (EC_KEEP_TEST_DIRS=1 keeps them always).
 */
import { promises as fs, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const dirs: string[] = [];

/** A new empty directory `<tmpdir>/<prefix>-XXXXXX`, removed at exit as above. */
export async function makeTempDir(prefix: string): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), `${prefix}-`));
  if (!dirs.length) process.on('exit', removeOrKeep);
  dirs.push(dir);
  return dir;
}

function removeOrKeep(code: number): void {
  if (code !== 0 || process.env.EC_KEEP_TEST_DIRS) {
    process.stderr.write(`test directories kept for inspection:\n${dirs.map((d) => `  ${d}\n`).join('')}`);
    return;
  }
  for (const dir of dirs) {
    try {
      rmSync(dir, { recursive: true, force: true });
    } catch (err) {
      // A child process that outlived its test may still be writing there: leaving it is harmless.
      process.stderr.write(`could not remove ${dir}: ${(err as Error).message}\n`);
    }
  }
}
