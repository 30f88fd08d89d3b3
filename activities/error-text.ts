/** An error's first line, for one-line messages: the rest of a DuckDB or SDK error is its advice ("Possible solutions: …") or a stack, not ours to pass on. */
export function firstLine(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).split('\n')[0]!;
}
