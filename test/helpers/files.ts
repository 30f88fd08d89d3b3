import { promises as fs } from 'node:fs';
import * as path from 'node:path';

/** Every file below `dir`, as '/'-separated paths relative to it, in no particular order. */
export async function relativeFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string): Promise<void> => {
    for (const e of await fs.readdir(d, { withFileTypes: true })) {
      const full = path.join(d, e.name);
      if (e.isDirectory()) await walk(full);
      else out.push(path.relative(dir, full).split(path.sep).join('/'));
    }
  };
  await walk(dir);
  return out;
}
