/**
 * Apache Iceberg's Java library as a second independent reader (test/java/iceberg-scan): Spark, Trino,
 * Flink and Athena plan their scans through the same code, so a table it cannot plan is unreadable to
 * them. Built once per test process with Maven from Maven Central. Without `mvn` and `java` on PATH
 * the checks are skipped, except under CI, where they must run.
 */
import { execFile } from 'node:child_process';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { REPO_ROOT } from './temporal';

const execFileP = promisify(execFile);
const PROJECT = path.join(REPO_ROOT, 'test', 'java', 'iceberg-scan');

export interface JavaScan {
  files: Array<{ path: string; records: number; partition: Array<string | number | null> }>;
  /** Files planned for grid_partition = the cell asked for (-1 when none was). */
  pruned: number;
}

async function onPath(command: string): Promise<boolean> {
  try {
    await execFileP(command, ['-version']);
    return true;
  } catch {
    return false;
  }
}

/** Why the Java reader cannot run here (a skip reason), or undefined when it can. */
export async function javaUnavailable(): Promise<string | undefined> {
  if ((await onPath('java')) && (await onPath('mvn'))) return undefined;
  if (process.env.CI) throw new Error('CI needs java and mvn on PATH for the Iceberg Java interop checks');
  return 'java or mvn not on PATH';
}

let classpath: Promise<string> | undefined;

function build(): Promise<string> {
  classpath ??= (async () => {
    await execFileP('mvn', ['-q', '-B', '-f', path.join(PROJECT, 'pom.xml'), 'package', 'dependency:build-classpath', '-Dmdep.outputFile=target/classpath.txt'], {
      timeout: 10 * 60_000,
      maxBuffer: 16 * 1024 * 1024,
    });
    const deps = (await fs.readFile(path.join(PROJECT, 'target', 'classpath.txt'), 'utf8')).trim();
    return [path.join(PROJECT, 'target', 'classes'), deps].join(path.delimiter);
  })();
  return classpath;
}

/**
 * Plans a scan of the table at `metadataLocation` with iceberg-core; relative locations in it resolve
 * against `cwd` (as the pipeline's catalog wrote them). Rejects with Java's exception when it cannot.
 */
export async function javaIcebergScan(metadataLocation: string, opts: { cell?: string; cwd?: string } = {}): Promise<JavaScan> {
  const cp = await build();
  const args = ['-cp', cp, 'earthcatalog.IcebergScan', metadataLocation, ...(opts.cell ? [opts.cell] : [])];
  try {
    const { stdout } = await execFileP('java', args, { cwd: opts.cwd, maxBuffer: 64 * 1024 * 1024 });
    return JSON.parse(stdout) as JavaScan;
  } catch (err) {
    const stderr = (err as { stderr?: string }).stderr?.trim();
    throw new Error(`Iceberg Java could not plan ${metadataLocation}: ${stderr || String(err)}`);
  }
}
