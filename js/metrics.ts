/**
 * The browser's one implementation of the metrics (the kernel's is widgets/payload.py):
 * any class's slice derived from a site's table of every class logit. Tested against
 * numbers written by the Python engine (js/tests/fixtures/metrics.json).
 */

/** Every class logit of one site of one image, filled in row chunks as they arrive. */
export interface LogitsTable {
  logits: Float32Array; // [rows, tokens, classes]
  logPartition: Float32Array; // [rows, tokens]: log-sum-exp over classes
  rows: number;
  tokens: number;
  classes: number;
  filledRows: number; // rows received so far; usable once it equals rows
  sorted?: Float32Array; // each token's logits in ascending order, filled in idle time
  sortedCount?: number; // how many leading (row, token) entries of `sorted` are ready
}

export function emptyTable(rows: number, tokens: number, classes: number): LogitsTable {
  return {
    logits: new Float32Array(rows * tokens * classes),
    logPartition: new Float32Array(rows * tokens),
    rows,
    tokens,
    classes,
    filledRows: 0,
  };
}

/** Copy rows [start, stop) into the table; returns whether the table is now complete. */
export function fillRows(
  table: LogitsTable,
  start: number,
  logits: Float32Array,
  logPartition: Float32Array,
): boolean {
  const perRow = table.tokens * table.classes;
  const rows = logits.length / perRow;
  if (!Number.isInteger(rows) || logPartition.length !== rows * table.tokens)
    throw new Error("malformed logits chunk");
  table.logits.set(logits, start * perRow);
  table.logPartition.set(logPartition, start * table.tokens);
  table.filledRows += rows;
  return table.filledRows >= table.rows;
}

function countGreater(values: Float32Array, start: number, end: number, value: number): number {
  let greater = 0;
  for (let c = start; c < end; c++) if (values[c] > value) greater++;
  return greater;
}

/** In an ascending run [start, end): how many values are strictly greater than `value`. */
function countAbove(sorted: Float32Array, start: number, end: number, value: number): number {
  while (end > start && Number.isNaN(sorted[end - 1])) end--; // sort() puts NaN last; it is never greater
  let lo = start;
  let hi = end;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (sorted[mid] > value) hi = mid;
    else lo = mid + 1;
  }
  return end - lo;
}

const SORT_CHUNK = 64; // tokens sorted per step between frames (ViT-B/16: a few ms)

/** Sort each token's logits in small steps between frames; a sorted token ranks a class by binary search. */
export function sortInSteps(table: LogitsTable, schedule: (step: () => void) => void): void {
  const total = table.rows * table.tokens;
  const c = table.classes;
  const sorted = new Float32Array(table.logits.length);
  table.sorted = sorted;
  table.sortedCount = 0;
  const step = () => {
    const start = table.sortedCount ?? 0;
    const end = Math.min(total, start + SORT_CHUNK);
    for (let i = start; i < end; i++)
      sorted.set(table.logits.slice(i * c, (i + 1) * c).sort(), i * c);
    table.sortedCount = end;
    if (end < total) schedule(step);
  };
  schedule(step);
}

type Metric = (table: LogitsTable, cls: number, i: number) => number;

const METRICS: Record<string, Metric> = {
  logit: (table, cls, i) => table.logits[i * table.classes + cls],
  probability: (table, cls, i) =>
    Math.exp(table.logits[i * table.classes + cls] - table.logPartition[i]),
  // 1 - (classes with a strictly greater logit) / classes; NaN for removed tokens (NaN logits)
  identifiability: (table, cls, i) => {
    const base = i * table.classes;
    const value = table.logits[base + cls];
    if (Number.isNaN(value)) return NaN;
    const end = base + table.classes;
    const greater =
      table.sorted && i < (table.sortedCount ?? 0)
        ? countAbove(table.sorted, base, end, value)
        : countGreater(table.logits, base, end, value);
    return Math.fround(1 - Math.fround(greater / table.classes)); // float32 steps, as numpy does
  },
};

/** One class's metric at every row and token of the table, as the kernel computes it. */
export function sliceFromLogits(table: LogitsTable, metric: string, cls: number): Float32Array {
  const compute = METRICS[metric];
  if (!compute) throw new Error(`unknown metric '${metric}'`);
  if (!(cls >= 0 && cls < table.classes)) throw new Error(`class ${cls} is out of range`);
  const size = table.rows * table.tokens;
  const out = new Float32Array(size);
  for (let i = 0; i < size; i++) out[i] = compute(table, cls, i);
  return out;
}
