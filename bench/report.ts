/** The benchmark's markdown table and its closing line. */

export interface CaseRow {
  name: string;
  buckets?: number;
  rowsIn?: number;
  rowsOut?: number;
  /** Input bytes on disk (what MB/s divides). */
  bytesIn?: number;
  seconds?: number;
  cpuSeconds?: number;
  peakRssMb?: number;
  memoryMb?: number;
  /** Time over the copy floor's time for the same inputs. */
  ratio?: number;
  /** Orchestration seconds per bucket beyond the engine's own time. */
  overheadPerBucket?: number;
  note?: string;
}

const MB = 1024 * 1024;

function num(n: number | undefined, digits = 0): string {
  if (n === undefined || !Number.isFinite(n)) return '';
  return n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

export function formatTable(rows: readonly CaseRow[]): string {
  const header = [
    'case',
    'buckets',
    'rows in',
    'rows out',
    'input MB',
    'seconds',
    'CPU s',
    'rows/s',
    'MB/s',
    'peak RSS MB',
    'RSS − budget MB',
    'ratio to copy floor',
    'orchestration ms/bucket',
    'note',
  ];
  const lines = [`| ${header.join(' | ')} |`, `|${header.map((_, i) => (i === 0 || i === header.length - 1 ? '---' : '---:')).join('|')}|`];
  for (const r of rows) {
    const perSecond = (x: number | undefined) => (x !== undefined && r.seconds ? x / r.seconds : undefined);
    const cells = [
      r.name,
      num(r.buckets),
      num(r.rowsIn),
      num(r.rowsOut),
      r.bytesIn !== undefined ? num(r.bytesIn / MB, 1) : '',
      num(r.seconds, 2),
      num(r.cpuSeconds, 1),
      num(perSecond(r.rowsIn)),
      r.bytesIn !== undefined ? num(perSecond(r.bytesIn / MB), 1) : '',
      num(r.peakRssMb),
      r.peakRssMb !== undefined && r.memoryMb !== undefined ? num(r.peakRssMb - r.memoryMb) : '',
      r.ratio !== undefined ? num(r.ratio, 2) : '',
      r.overheadPerBucket !== undefined ? num(r.overheadPerBucket * 1000, 1) : '',
      r.note ?? '',
    ];
    lines.push(`| ${cells.join(' | ')} |`);
  }
  return lines.join('\n');
}

/** The last line of every run; `n/a` when no case had a copy floor to compare with. */
export function worstRatioLine(rows: readonly CaseRow[]): string {
  const ratios = rows.map((r) => r.ratio).filter((x): x is number => x !== undefined && Number.isFinite(x));
  return `worst ratio to copy floor: ${ratios.length ? Math.max(...ratios).toFixed(2) : 'n/a'}`;
}
