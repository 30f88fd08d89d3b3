/**
 * A bundle of its own: a `compactWarehouse` whose every workflow task fails, as a worker's does when it
 * cannot replay the run (a version with other `patched()` changes). This version's code cannot be made
 * to fail so, hence the stand-in.
 */
export async function compactWarehouse(): Promise<never> {
  throw new Error('stand-in for a non-determinism error: this worker cannot replay the run');
}
