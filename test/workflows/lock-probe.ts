import { condition, defineSignal, setHandler } from '@temporalio/workflow';
import { withResourceLock, type LockKind } from '../../workflows/lock';

export const finishProbeSignal = defineSignal('finishProbe');

export interface ProbeResult {
  acquiredAtMs: number;
  releasedAtMs: number;
  fence: number;
}

/**
 * Holds `resource` until signalled `finishProbe` (or for holdMs); reports when it held it. Arguments
 * left out in the middle arrive as null (JSON).
 */
export async function lockProbe(
  kind: LockKind,
  resource: string,
  holdMs: number | null,
  timeoutSeconds?: number | null,
  rerequestSeconds?: number,
): Promise<ProbeResult> {
  let finish = false;
  setHandler(finishProbeSignal, () => void (finish = true));
  return withResourceLock(kind, resource, { purpose: 'test probe', timeoutSeconds: timeoutSeconds ?? undefined, rerequestSeconds }, async (held) => {
    const acquiredAtMs = Date.now();
    if (holdMs === null) await condition(() => finish);
    else await condition(() => finish, holdMs);
    return { acquiredAtMs, releasedAtMs: Date.now(), fence: held.fence };
  });
}
