/**
 * Replays recorded histories of real runs against the current workflow code: a change that would
 * break running workflows (non-determinism) fails here. Record new ones with
 * `RECORD_HISTORIES=1 npm test -- test/compaction-e2e.test.ts` after an intentional, versioned change.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { Worker, DefaultLogger, Runtime } from '@temporalio/worker';
import { WORKFLOW_IDS_FILE } from './helpers/record-history';

const dir = path.join(__dirname, 'histories');

describe('replay of recorded histories', () => {
  it('every recorded history replays without non-determinism', async () => {
    Runtime.install({ logger: new DefaultLogger('WARN') });
    // The workflow id each was recorded under (the lock check compares it with the holder's); older recordings replay under their name.
    const ids = JSON.parse(await fs.readFile(WORKFLOW_IDS_FILE, 'utf8')) as Record<string, string>;
    const files = (await fs.readdir(dir)).filter((f) => f.endsWith('.json') && f !== path.basename(WORKFLOW_IDS_FILE)).sort();
    assert.ok(files.length >= 2, `expected recorded histories in ${dir}`);
    const types = new Set<string>();
    for (const file of files) {
      const history = JSON.parse(await fs.readFile(path.join(dir, file), 'utf8'));
      const started = history.events?.[0]?.workflowExecutionStartedEventAttributes;
      types.add(started?.workflowType?.name);
      await Worker.runReplayHistory(
        { workflowsPath: require.resolve('../workflows'), replayName: file },
        history,
        ids[file.replace(/\.json$/, '')] ?? file.replace(/\.json$/, ''),
      );
    }
    assert.ok(types.has('compactWarehouse') && types.has('resourceLock'), `histories cover both workflow types, got ${[...types]}`);
  });
});
