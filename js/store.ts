/**
 * The view's numbers: metric slices cached by (image, trace, site, metric, class), asked of a
 * DataSource with coalesced requests (while one is in flight, only the latest pending one waits),
 * and each site's table of every class logit, fetched in row chunks after the first paint so
 * that later class changes are answered in the browser.
 */

import { emptyTable, fillRows, type LogitsTable, sliceFromLogits, sortInSteps } from "./metrics";
import { toArrayBuffer } from "./model";
import type { Answer } from "./protocol";
import { type Buffers, type DataSource, SourceError } from "./source";
import { SETTLE_MS } from "./timing";

export interface SliceQuery {
  image: number;
  site: string;
  metric: string;
  cls: number;
  base?: boolean; // the unperturbed model's numbers
}

interface Batch {
  image: number;
  site: string;
  metric: string;
  classes: number[];
  base: boolean;
}

const MAX_TABLES = 3; // logits tables kept (ViT-B/16: 10 MB each, twice that once sorted)

function sliceKey(q: SliceQuery): string {
  return `${q.image}|${q.base ? "base" : "now"}|${q.site}|${q.metric}|${q.cls}`;
}

function tableKey(image: number, site: string): string {
  return `${image}|${site}`;
}

export class SliceStore {
  private cache = new Map<string, Float32Array>();
  private tables = new Map<string, LogitsTable>(); // complete tables only
  private filling: { key: string; table: LogitsTable } | null = null;
  private tablesUnavailable = false; // the kernel does not serve them (too large) or benchmarks turned them off
  private failedTables = new Set<string>(); // tables whose fetch failed for this trace: not asked again
  private disposed = false;
  private version = 0;
  private inFlight = false; // a user request is out
  private clears = 0; // how many times clear() ran: answers to requests made before it are not kept
  private pending: Batch | null = null; // the latest one waiting for it
  private prefetchTimer: ReturnType<typeof setTimeout> | undefined;
  private tableTimer: ReturnType<typeof setTimeout> | undefined;
  private resumeTable: (() => void) | null = null; // the next logits chunk, waiting for a user request
  private whenAnswered: (() => void)[] = [];
  /** Latencies (ms) of answered slice requests, for benchmarks. */
  readonly latencies: number[] = [];

  constructor(
    private source: DataSource,
    private onData: () => void,
    private onError: (message: string, image: number) => void, // the image the failed request was for
  ) {}

  /** A cached slice, or one derived from the site's logits table when the browser holds it. */
  get(q: SliceQuery): Float32Array | undefined {
    const key = sliceKey(q);
    const cached = this.cache.get(key);
    if (cached || q.base) return cached;
    const table = this.tables.get(tableKey(q.image, q.site));
    if (!table || q.cls < 0 || q.cls >= table.classes) return undefined;
    const slice = sliceFromLogits(table, q.metric, q.cls);
    this.cache.set(key, slice);
    return slice;
  }

  private has(q: SliceQuery): boolean {
    return this.cache.has(sliceKey(q)) || (!q.base && this.tables.has(tableKey(q.image, q.site)));
  }

  /** Resolves once no user request is in flight or waiting (at once when none is). */
  answered(): Promise<void> {
    if (!this.inFlight) return Promise.resolve();
    return new Promise((resolve) => this.whenAnswered.push(resolve));
  }

  /** Ask for the slices of `classes` not held yet; coalesced so that scrubbing never queues stale work. */
  request(q: Omit<SliceQuery, "cls">, classes: number[]): void {
    const missing = classes.filter((cls) => !this.has({ ...q, cls }));
    if (missing.length === 0) return;
    this.cancelPrefetch(); // the user is active: speculative work waits for a pause
    this.postponeTable();
    const batch = { ...q, base: !!q.base, classes: missing };
    if (this.inFlight) this.pending = batch;
    else this.send(batch, true);
  }

  /** Ask ahead of time for classes the user may want next, once requests pause for SETTLE_MS. */
  prefetch(q: Omit<SliceQuery, "cls">, classes: number[]): void {
    this.cancelPrefetch();
    this.prefetchTimer = setTimeout(() => {
      this.prefetchTimer = undefined;
      const missing = classes.filter((cls) => !this.has({ ...q, cls }));
      if (!this.inFlight && missing.length)
        this.send({ ...q, base: !!q.base, classes: missing }, false);
    }, SETTLE_MS);
  }

  private cancelPrefetch(): void {
    clearTimeout(this.prefetchTimer);
    this.prefetchTimer = undefined;
  }

  private send(batch: Batch, user: boolean): void {
    if (user) this.inFlight = true;
    const started = performance.now();
    const { image, site, metric, classes, base } = batch;
    const [version, clears] = [this.version, this.clears];
    this.source
      .ask({ kind: "slices", image, site, metric, classes, base })
      .then(([reply, buffers]) => {
        if (this.disposed) return;
        this.latencies.push(performance.now() - started);
        const current = base || (reply.version === this.version && version === this.version);
        if (current && clears === this.clears) this.store(reply, buffers, base); // not asked before a clear()
        this.onData();
      })
      .catch((error: Error) => {
        if (!this.disposed) this.onError(error.message, image);
      })
      .finally(() => {
        if (!user || this.disposed) return;
        this.inFlight = false;
        const next = this.pending;
        this.pending = null;
        if (next) return this.send(next, true);
        this.whenAnswered.splice(0).forEach((resolve) => resolve());
        const resume = this.resumeTable;
        this.resumeTable = null;
        resume?.();
      });
  }

  private store(reply: Answer<"slices">, buffers: Buffers, base: boolean): void {
    const all = new Float32Array(toArrayBuffer(buffers[0]));
    const size = reply.rows * reply.tokens;
    if (all.length !== size * reply.classes.length) {
      this.onError(
        `malformed reply: ${all.length} values for ${reply.classes.length} classes`,
        reply.image,
      );
      return;
    }
    reply.classes.forEach((cls, i) => {
      const q = { image: reply.image, site: reply.site, metric: reply.metric, cls, base };
      this.cache.set(sliceKey(q), all.slice(i * size, (i + 1) * size));
    });
  }

  /**
   * Fetch every class logit of a site, `rowsPerMessage` rows at a time, once user requests pause for
   * SETTLE_MS; a user request that comes meanwhile goes first, and the next chunk waits for its answer.
   * A table that fits in one message (a small model's) is asked for at once: it costs what a slice does.
   */
  requestTable(image: number, site: string, rows: number, rowsPerMessage: number): void {
    const key = tableKey(image, site);
    if (this.tablesUnavailable || this.tables.has(key) || this.filling) return;
    if (!this.source.serves.has("logits") || rowsPerMessage < 1 || this.failedTables.has(key))
      return;
    clearTimeout(this.tableTimer);
    this.tableTimer = setTimeout(
      () => {
        this.tableTimer = undefined;
        if (this.filling || this.tables.has(key)) return;
        this.filling = { key, table: emptyTable(0, 0, 0) };
        this.fetchChunk(key, image, site, 0, rows, rowsPerMessage, this.version);
      },
      rows <= rowsPerMessage ? 0 : SETTLE_MS,
    );
  }

  /** Forget a table being filled and its next chunk: chunks still on their way find it gone and are dropped. */
  private dropTableOnItsWay(): void {
    this.filling = null;
    this.resumeTable = null;
  }

  /** A user request came: a table not started yet waits for the next pause. */
  private postponeTable(): void {
    clearTimeout(this.tableTimer);
    this.tableTimer = undefined;
  }

  private fetchChunk(
    key: string,
    image: number,
    site: string,
    start: number,
    rows: number,
    step: number,
    version: number,
  ): void {
    const stop = Math.min(rows, start + step);
    this.source
      .ask({ kind: "logits", image, site, start, stop })
      .then(([reply, buffers]) => {
        if (this.disposed) return;
        if (this.filling?.key !== key || version !== this.version || reply.version !== version) {
          return; // the trace changed meanwhile: start again when asked
        }
        if (start === 0) this.filling.table = emptyTable(reply.rows, reply.tokens, reply.classes);
        const logits = new Float32Array(toArrayBuffer(buffers[0]));
        const logPartition = new Float32Array(toArrayBuffer(buffers[1]));
        if (!fillRows(this.filling.table, start, logits, logPartition)) {
          const next = () => this.fetchChunk(key, image, site, stop, rows, step, version);
          if (this.inFlight) this.resumeTable = next;
          else next();
          return;
        }
        this.keepTable(key, this.filling.table);
        this.filling = null;
        this.onData();
      })
      .catch((error: Error) => {
        if (this.disposed || version !== this.version) return;
        this.filling = null;
        this.failedTables.add(key); // classes come one by one from the kernel meanwhile
        if (!(error instanceof SourceError))
          this.onError(`the logits table could not be read: ${error.message}`, image);
      });
  }

  private keepTable(key: string, table: LogitsTable): void {
    this.tables.set(key, table);
    sortInSteps(table, (step) => {
      if (!this.disposed) setTimeout(step, 0);
    });
    while (this.tables.size > MAX_TABLES)
      this.tables.delete(this.tables.keys().next().value as string);
  }

  /** Whether the browser holds every class logit of this site (class changes are then local). */
  hasTable(image: number, site: string): boolean {
    return this.tables.has(tableKey(image, site));
  }

  /** Forget every slice and logits table (benchmarks use it to force kernel round trips). */
  clear(): void {
    this.clears++;
    this.cancelPrefetch();
    this.postponeTable();
    this.dropTableOnItsWay();
    this.cache.clear();
    this.tables.clear();
  }

  /** Forget logits tables and stop fetching them (benchmarks: every class from the kernel). */
  disableTables(): void {
    this.tablesUnavailable = true;
    this.postponeTable();
    this.dropTableOnItsWay();
    this.tables.clear();
  }

  /** The kernel re-traced (e.g. a perturbation changed): numbers of the old trace are stale. */
  setVersion(version: number): void {
    if (version === this.version) return;
    this.version = version;
    for (const key of [...this.cache.keys()]) if (!key.includes("|base|")) this.cache.delete(key);
    this.tables.clear();
    this.failedTables.clear();
    this.dropTableOnItsWay();
    this.pending = null;
  }

  /** The view closed: stop every timer and drop whatever arrives later. */
  dispose(): void {
    this.disposed = true;
    this.cancelPrefetch();
    this.postponeTable();
    this.dropTableOnItsWay();
    this.pending = null;
    this.whenAnswered.splice(0);
  }
}
