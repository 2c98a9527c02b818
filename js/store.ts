/**
 * The view's data: metric slices cached by (image, site, metric, class), fetched from the
 * kernel with coalesced requests (while one is in flight, only the latest pending one waits).
 */

export interface Layout {
  depth: number;
  grid: [number, number];
  prefix: string[];
  n_tokens: number;
  image_size: [number, number];
}

/** The subset of an anywidget model the view uses (also implemented by the static export). */
export interface ViewModel {
  get(name: string): any;
  set(name: string, value: unknown): void;
  save_changes(): void;
  on(event: string, callback: (...args: any[]) => void): void;
  off(event?: string | null, callback?: ((...args: any[]) => void) | null): void;
  send(content: unknown, callbacks?: unknown, buffers?: ArrayBuffer[] | ArrayBufferView[]): void;
}

export interface SliceRequest {
  site: string;
  metric: string;
  classes: number[];
}

interface SliceReply {
  type: "slices";
  id: number;
  image_index: number;
  site: string;
  metric: string;
  classes: number[];
  rows: number;
  tokens: number;
  version?: number;
}

/** Bytes from a synced Bytes trait or a message buffer, as an aligned copy. */
export function toArrayBuffer(
  data: DataView | ArrayBuffer | ArrayBufferView | null | undefined,
): ArrayBuffer {
  if (!data) return new ArrayBuffer(0);
  if (data instanceof ArrayBuffer) return data;
  const view = data as ArrayBufferView;
  return (view.buffer as ArrayBuffer).slice(view.byteOffset, view.byteOffset + view.byteLength);
}

export function sliceKey(image: number, site: string, metric: string, cls: number): string {
  return `${image}|${site}|${metric}|${cls}`;
}

/** Key of one image's logits table for one site. */
function tableKey(image: number, site: string): string {
  return `${image}|${site}`;
}

/** Every class logit of one site of one image, so any class's slice can be derived in the browser. */
export interface LogitsTable {
  logits: Float32Array; // [rows, tokens, classes]
  logPartition: Float32Array; // [rows, tokens]: log-sum-exp over classes
  rows: number;
  tokens: number;
  classes: number;
  sorted?: Float32Array; // each token's logits in ascending order, filled in idle time
  sortedCount?: number; // how many leading (row, token) entries of `sorted` are ready
}

interface LogitsReply {
  type: "logits";
  id: number;
  image_index: number;
  site: string;
  rows: number;
  tokens: number;
  classes: number;
  version?: number;
}

const PREFETCH_IDLE_MS = 150; // speculative requests wait for this long a pause in user requests
const MAX_TABLES = 3; // logits tables kept (ViT-B/16: 10 MB each, twice that once sorted)
const SORT_CHUNK = 64; // tokens sorted per step between frames (ViT-B/16: a few ms)

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

/**
 * Sort each token's logits in small steps between frames; once a token is sorted, its rank of
 * any class is a binary search instead of a pass over every class.
 */
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

/**
 * One class's metric at every row and token, as the kernel computes it: identifiability is
 * 1 - (classes with a strictly greater logit) / classes, NaN for removed tokens (NaN logits).
 */
export function sliceFromLogits(table: LogitsTable, metric: string, cls: number): Float32Array {
  const { logits, logPartition, classes } = table;
  const size = table.rows * table.tokens;
  const out = new Float32Array(size);
  for (let i = 0; i < size; i++) {
    const base = i * classes;
    const value = logits[base + cls];
    if (metric === "logit") out[i] = value;
    else if (metric === "probability") out[i] = Math.exp(value - logPartition[i]);
    else if (Number.isNaN(value)) out[i] = NaN;
    else {
      const greater =
        table.sorted && i < (table.sortedCount ?? 0)
          ? countAbove(table.sorted, base, base + classes, value)
          : countGreater(logits, base, base + classes, value);
      out[i] = Math.fround(1 - Math.fround(greater / classes)); // float32 steps, as numpy does
    }
  }
  return out;
}

export class SliceStore {
  private cache = new Map<string, Float32Array>();
  private tables = new Map<string, LogitsTable>(); // tableKey -> every class logit
  private tableRequests = new Map<number, string>(); // request id -> table key
  private tablesUnavailable = false; // the kernel declined (too large) or cannot answer
  private version = 0;
  private inFlight: number | null = null; // the request the user is waiting for
  private prefetchInFlight: number | null = null; // a speculative one (e.g. the chips' classes)
  private prefetchTimer: ReturnType<typeof setTimeout> | undefined; // a speculative one, waiting for a pause
  private pending: SliceRequest | null = null;
  private nextId = 1;
  private sentAt = new Map<number, number>();
  /** Latencies (ms) of answered requests, for benchmarks. */
  readonly latencies: number[] = [];

  constructor(
    private model: ViewModel,
    private onData: () => void,
    private onError: (message: string) => void,
  ) {}

  /** A cached slice, or one derived from the site's logits table when the browser holds it. */
  get(image: number, site: string, metric: string, cls: number): Float32Array | undefined {
    const key = sliceKey(image, site, metric, cls);
    const cached = this.cache.get(key);
    if (cached) return cached;
    const table = this.tables.get(tableKey(image, site));
    if (!table || cls < 0 || cls >= table.classes) return undefined;
    const slice = sliceFromLogits(table, metric, cls);
    this.cache.set(key, slice);
    return slice;
  }

  /** Whether a slice is cached or derivable without asking the kernel. */
  has(image: number, site: string, metric: string, cls: number): boolean {
    return (
      this.cache.has(sliceKey(image, site, metric, cls)) || this.tables.has(tableKey(image, site))
    );
  }

  /** Ask once for every class logit of a site, so later class changes never wait on the kernel. */
  requestTable(image: number, site: string): void {
    const key = tableKey(image, site);
    if (this.tablesUnavailable || this.tables.has(key)) return;
    if ([...this.tableRequests.values()].includes(key)) return;
    const id = this.nextId++;
    this.tableRequests.set(id, key);
    this.model.send({ type: "logits", id, site, image_index: image });
  }

  /** Ask for classes not cached yet; coalesced so scrubbing never queues stale work. */
  request(image: number, request: SliceRequest): void {
    const missing = request.classes.filter(
      (c) => !this.has(image, request.site, request.metric, c),
    );
    if (missing.length === 0) return;
    this.cancelPrefetch(); // the user is active: speculative work waits for a pause
    const wanted = { ...request, classes: missing };
    if (this.inFlight !== null) {
      this.pending = wanted;
      return;
    }
    this.inFlight = this.send(wanted);
  }

  /**
   * Ask ahead of time for classes the user may want next, once the user pauses for
   * PREFETCH_IDLE_MS: speculative kernel work never delays or displaces a user request.
   */
  prefetch(image: number, request: SliceRequest): void {
    this.cancelPrefetch();
    this.prefetchTimer = setTimeout(() => {
      this.prefetchTimer = undefined;
      this.sendPrefetch(image, request);
    }, PREFETCH_IDLE_MS);
  }

  private cancelPrefetch(): void {
    clearTimeout(this.prefetchTimer);
    this.prefetchTimer = undefined;
  }

  private sendPrefetch(image: number, request: SliceRequest): void {
    if (this.inFlight !== null || this.prefetchInFlight !== null) return;
    const missing = request.classes.filter(
      (c) => !this.has(image, request.site, request.metric, c),
    );
    if (missing.length === 0) return;
    this.prefetchInFlight = this.send({ ...request, classes: missing });
  }

  /** Forget every slice and logits table (benchmarks use it to force kernel round trips). */
  clear(): void {
    this.cancelPrefetch();
    this.cache.clear();
    this.tables.clear();
  }

  /** The kernel re-traced (e.g. a perturbation changed): cached numbers are stale. */
  setVersion(version: number): void {
    if (version === this.version) return;
    this.version = version;
    this.cache.clear();
    this.tables.clear();
    this.tableRequests.clear();
    this.pending = null;
  }

  /** Handle a kernel reply; returns true when it was a slice or error reply for this store. */
  receive(content: any, buffers: (DataView | ArrayBuffer)[]): boolean {
    if (content?.type === "logits") {
      if (this.tableRequests.delete(content.id)) this.storeTable(content as LogitsReply, buffers);
      this.onData();
      return true;
    }
    if (content?.type === "error" && this.tableRequests.delete(content.id)) {
      this.tablesUnavailable = true; // e.g. too large to send: classes keep coming one by one
      return true;
    }
    if (content?.type === "slices") {
      this.store(content as SliceReply, buffers[0]);
      this.settle(content.id);
      this.onData();
      return true;
    }
    if (content?.type === "error") {
      this.settle(content.id);
      this.onError(String(content.message));
      return true;
    }
    return false;
  }

  private store(reply: SliceReply, buffer: DataView | ArrayBuffer | undefined): void {
    if (reply.version !== undefined && reply.version !== this.version) return; // answered for an older trace
    const all = new Float32Array(toArrayBuffer(buffer));
    const size = reply.rows * reply.tokens;
    if (all.length !== size * reply.classes.length) {
      this.onError(`malformed reply: ${all.length} values for ${reply.classes.length} classes`);
      return;
    }
    reply.classes.forEach((cls, i) => {
      const key = sliceKey(reply.image_index, reply.site, reply.metric, cls);
      this.cache.set(key, all.slice(i * size, (i + 1) * size));
    });
  }

  private storeTable(reply: LogitsReply, buffers: (DataView | ArrayBuffer)[]): void {
    if (reply.version !== undefined && reply.version !== this.version) return;
    const logits = new Float32Array(toArrayBuffer(buffers[0]));
    const logPartition = new Float32Array(toArrayBuffer(buffers[1]));
    const size = reply.rows * reply.tokens;
    if (logits.length !== size * reply.classes || logPartition.length !== size) {
      this.onError(`malformed logits reply for ${reply.site}`);
      return;
    }
    const key = tableKey(reply.image_index, reply.site);
    const table: LogitsTable = {
      logits,
      logPartition,
      rows: reply.rows,
      tokens: reply.tokens,
      classes: reply.classes,
    };
    this.tables.set(key, table);
    sortInSteps(table, (step) => setTimeout(step, 0));
    while (this.tables.size > MAX_TABLES)
      this.tables.delete(this.tables.keys().next().value as string);
  }

  private send(request: SliceRequest): number {
    const id = this.nextId++;
    this.sentAt.set(id, performance.now());
    this.model.send({ type: "slices", id, ...request });
    return id;
  }

  private settle(id: number): void {
    const started = this.sentAt.get(id);
    if (started !== undefined) {
      this.latencies.push(performance.now() - started);
      this.sentAt.delete(id);
    }
    if (id === this.prefetchInFlight) this.prefetchInFlight = null;
    if (id !== this.inFlight) return; // pushed ahead of time, prefetched, or stale
    this.inFlight = null;
    const next = this.pending;
    this.pending = null;
    if (next) this.inFlight = this.send(next);
  }
}

/** Pings the kernel; reports when it stops answering (died, restarted, or busy for long). */
export class Heartbeat {
  private timer: number | undefined;
  private lastPong = performance.now();
  private pingId = 0;

  constructor(
    private model: ViewModel,
    private onChange: (alive: boolean) => void,
    private intervalMs = 3000,
    private timeoutMs = 8000,
  ) {}

  start(): void {
    this.timer = window.setInterval(() => this.beat(), this.intervalMs);
  }

  stop(): void {
    window.clearInterval(this.timer);
  }

  receive(content: any): boolean {
    if (content?.type !== "pong") return false;
    this.lastPong = performance.now();
    this.onChange(true);
    return true;
  }

  private beat(): void {
    try {
      this.model.send({ type: "ping", id: ++this.pingId });
    } catch {
      this.onChange(false);
      return;
    }
    if (performance.now() - this.lastPong > this.timeoutMs) this.onChange(false);
  }
}
