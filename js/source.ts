/**
 * Where the view's numbers come from: one interface, two implementations — the kernel (over
 * the widget's custom messages, this file) and the exported page's inlined data (standalone.ts).
 */

import type { ExplorerModel } from "./model";
import { HEARTBEAT_MS, HEARTBEAT_TIMEOUT_MS } from "./timing";
import { type Answer, type AnyAsk, isReply, type Kind, type Reply, type Request } from "./protocol";

export type Buffers = (DataView | ArrayBuffer)[];

/** A request the source could not answer; the message is meant for the user. */
export class SourceError extends Error {}

export interface DataSource {
  /** The kinds of request this source answers (the exported page: slices only). */
  readonly serves: ReadonlySet<Kind>;
  ask<R extends AnyAsk>(request: R): Promise<[Answer<R["kind"]>, Buffers]>;
  dispose(): void;
}

interface Pending {
  resolve: (value: [Reply, Buffers]) => void;
  reject: (error: Error) => void;
}

/** The kernel: requests go out as custom messages; replies are matched to them by id. */
export class KernelSource implements DataSource {
  readonly serves: ReadonlySet<Kind> = new Set<Kind>(["ping", "slices", "logits", "memories"]);
  private nextId = 1;
  private pending = new Map<number, Pending>();
  private readonly listener = (content: unknown, buffers: Buffers) =>
    this.receive(content, buffers);

  constructor(
    private model: ExplorerModel,
    private onStrayError: (message: string) => void,
  ) {
    model.on("msg:custom", this.listener);
  }

  ask<R extends AnyAsk>(request: R): Promise<[Answer<R["kind"]>, Buffers]> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as Pending["resolve"], reject });
      try {
        this.model.send({ ...request, id } as Request);
      } catch (error) {
        this.pending.delete(id);
        reject(error instanceof Error ? error : new Error(String(error)));
      }
    });
  }

  private receive(content: unknown, buffers: Buffers): void {
    if (!isReply(content)) return;
    const waiting = content.id === null ? undefined : this.pending.get(content.id);
    if (!waiting) {
      if (content.kind === "error") this.onStrayError(content.message);
      return;
    }
    this.pending.delete(content.id as number);
    if (content.kind === "error") waiting.reject(new SourceError(content.message));
    else waiting.resolve([content, buffers ?? []]);
  }

  dispose(): void {
    this.model.off("msg:custom", this.listener);
    this.pending.forEach((p) => p.reject(new SourceError("the view was closed")));
    this.pending.clear();
  }
}

/** Pings the source; reports when it stops answering (the kernel died, restarted, or is busy for long). */
export class Heartbeat {
  private timer: ReturnType<typeof setInterval> | undefined;
  private lastPong = performance.now();

  constructor(
    private source: DataSource,
    private onChange: (alive: boolean) => void,
    private intervalMs = HEARTBEAT_MS,
    private timeoutMs = HEARTBEAT_TIMEOUT_MS,
  ) {}

  start(): void {
    if (!this.source.serves.has("ping")) return;
    this.timer = setInterval(() => this.beat(), this.intervalMs);
  }

  stop(): void {
    clearInterval(this.timer);
  }

  private waiting = false; // one ping at a time: a dead kernel does not pile them up

  private beat(): void {
    if (performance.now() - this.lastPong > this.timeoutMs) this.onChange(false);
    if (this.waiting) return;
    this.waiting = true;
    this.source.ask({ kind: "ping" }).then(
      () => {
        this.waiting = false;
        this.lastPong = performance.now();
        this.onChange(true);
      },
      () => {
        this.waiting = false;
        this.onChange(false);
      },
    );
  }
}
