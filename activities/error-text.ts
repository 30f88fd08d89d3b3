/** An error's first line, for one-line messages: the rest of a DuckDB or SDK error is its advice ("Possible solutions: …") or a stack, not ours to pass on. */
export function firstLine(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).split('\n')[0]!;
}

/**
 * firstLine of an error about a local copy of a warehouse object, naming the object instead of the copy:
 * DuckDB quotes the path it read, which for an S3 object is a worker's scratch file nobody can find.
 */
export function firstLineAbout(err: unknown, file: { path: string; key: string }): string {
  return firstLine(err).split(file.path).join(file.key);
}
