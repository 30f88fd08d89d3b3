import { makeContinueAsNewFunc } from '@temporalio/workflow';
import type { CarriedState, compactWarehouse } from '../../workflows/compact-warehouse';

/** Continues-as-new into compactWarehouse with these arguments, as a run of it does between plan pages. */
export async function continueIntoCompaction(input: unknown, carried: CarriedState): Promise<never> {
  return makeContinueAsNewFunc<typeof compactWarehouse>({ workflowType: 'compactWarehouse' })(input, carried);
}
