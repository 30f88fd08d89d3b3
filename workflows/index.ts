/** The workflow bundle's entry: every workflow type this package registers. */
export { compactWarehouse } from './compact-warehouse';
export { resourceLock } from './lock';
