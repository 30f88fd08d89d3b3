import { execFile } from 'node:child_process';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { findTemporalCli } from '../../client/temporal-cli';

const run = promisify(execFile);

/**
 * With RECORD_HISTORIES=1, saves a workflow's history for the replay test, exported by the real
 * `temporal` CLI (the JSON form the SDK's replayer reads).
 */
export async function maybeRecordHistory(address: string, workflowId: string, name: string): Promise<void> {
  if (process.env.RECORD_HISTORIES !== '1') return;
  const cli = findTemporalCli();
  if (!cli) throw new Error('recording histories needs the temporal CLI');
  const { stdout } = await run(cli, ['workflow', 'show', '--workflow-id', workflowId, '--output', 'json', '--address', address], {
    maxBuffer: 64 * 1024 * 1024,
  });
  await fs.writeFile(path.join(__dirname, '..', 'histories', `${name}.json`), stdout);
}
