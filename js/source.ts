/**
 * Where the view's numbers come from: one interface, two implementations — the kernel (over
 * the widget's custom messages, this file) and the exported page's inlined data (standalone.ts).
 */

import type { ExplorerModel } from "./model";
import { HEARTBEAT_MS, HEARTBEAT_TIMEOUT_MS, SETTLE_MS } from "./timing";
import { type Answer, type AnyAsk, isReply, type Kind, type Reply, type Sent } from "./protocol";

export type Buffers = (DataView | ArrayBuffer)[];

/** A request the source could not answer; the message is meant for the user. */
export class SourceError extends Error {}

/** What a source can do: the requests it answers, and "retrace" (re-running the model for a perturbation or a relevance map). */
export type Capability = Kind | "retrace";

export interface DataSource {
  /** What this source can do (the exported page: slices only). */
  readonly serves: ReadonlySet<Capability>;
  /** When it last answered anything (performance.now()); a source that answers pings keeps it. */
  readonly lastAnswerAt?: number;
  ask<R extends AnyAsk>(request: R): Promise<[Answer<R["kind"]>, Buffers]>;
  dispose(): void;
}

interface Pending {
  kind: Reply["kind"]; // the kind of a successful answer
  resolve: (value: [Reply, Buffers]) => void;
  reject: (error: Error) => void;
}

/** Request ids start at a random point per view: every view of one widget gets every reply. */
const ID_SPACE = 2 ** 40;

/** The kernel: requests go out as custom messages; replies are matched to them by id. */
export class KernelSource implements DataSource {
  readonly serves: ReadonlySet<Capability> = new Set<Capability>([
    "ping",
    "state",
    "slices",
    "logits",
    "memories",
    "retrace",
  ]);
  lastAnswerAt = 0;
  private nextId = 1 + Math.floor(Math.random() * ID_SPACE);
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
      const kind = request.kind === "ping" ? "pong" : request.kind;
      this.pending.set(id, { kind, resolve: resolve as Pending["resolve"], reject });
      try {
        this.model.send({ ...request, id, quiet: true } as Sent);
      } catch (error) {
        this.pending.delete(id);
        reject(error instanceof Error ? error : new Error(String(error)));
      }
    });
  }

  private receive(content: unknown, buffers: Buffers): void {
    if (!isReply(content)) return;
    this.lastAnswerAt = performance.now();
    if (content.id === null) {
      if (content.kind === "error") this.onStrayError(content.message); // a request the kernel could not read
      return;
    }
    const waiting = this.pending.get(content.id);
    if (!waiting) return; // another view's reply
    this.pending.delete(content.id);
    if (content.kind === "error") waiting.reject(new SourceError(content.message));
    else if (content.kind !== waiting.kind)
      waiting.reject(new SourceError(`a ${content.kind} reply came for a ${waiting.kind} request`));
    else waiting.resolve([content, buffers ?? []]);
  }

  dispose(): void {
    this.model.off("msg:custom", this.listener);
    this.pending.forEach((p) => p.reject(new SourceError("the view was closed")));
    this.pending.clear();
  }
}

export interface HeartbeatTiming {
  intervalMs: number; // how often it checks
  timeoutMs: number; // a ping unanswered this long means the source is gone
  quietMs: number; // no ping until the user has paused this long
  now: () => number;
}

/**
 * Tells whether the source still answers (the kernel may die, restart, or be busy for long), without
 * costing the user a frame: it pings only when nothing was answered for an interval, and never while
 * the user is interacting, because the page's handling of the reply and of the kernel's busy/idle
 * status messages would land in the frames the user is waiting for.
 */
export class Heartbeat {
  private timer: ReturnType<typeof setInterval> | undefined;
  private pingSentAt: number | null = null; // the ping waiting for its pong
  private lastActivity = -Infinity;
  private alive = true;
  private timing: HeartbeatTiming;

  constructor(
    private source: DataSource,
    private onChange: (alive: boolean) => void,
    timing: Partial<HeartbeatTiming> = {},
  ) {
    this.timing = {
      intervalMs: HEARTBEAT_MS,
      timeoutMs: HEARTBEAT_TIMEOUT_MS,
      quietMs: SETTLE_MS,
      now: () => performance.now(),
      ...timing,
    };
  }

  start(): void {
    if (!this.source.serves.has("ping")) return;
    this.timer = setInterval(() => this.beat(), this.timing.intervalMs);
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** The user just did something: a ping waits until they pause. */
  userActive(): void {
    this.lastActivity = this.timing.now();
  }

  /** One check (start() runs it every interval): report a ping unanswered for too long, or send one if due. */
  beat(): void {
    const { intervalMs, timeoutMs, quietMs, now } = this.timing;
    const t = now();
    const answeredAt = this.source.lastAnswerAt ?? -Infinity;
    if (this.pingSentAt !== null && answeredAt < this.pingSentAt) {
      if (t - this.pingSentAt > timeoutMs) this.report(false);
      return; // one ping at a time: a dead kernel does not pile them up
    }
    this.pingSentAt = null; // answered since, by its pong or any other reply (a lost pong is no death)
    if (t - answeredAt < intervalMs) return this.report(true);
    if (t - this.lastActivity < quietMs) return;
    const sent = (this.pingSentAt = t);
    this.source.ask({ kind: "ping" }).then(
      () => this.settle(sent, true),
      () => this.settle(sent, false),
    );
  }

  private settle(sent: number, alive: boolean): void {
    if (this.pingSentAt !== sent) return; // an answer since, or a later ping, took its place
    this.pingSentAt = null;
    this.report(alive);
  }

  private report(alive: boolean): void {
    if (alive === this.alive) return;
    this.alive = alive;
    this.onChange(alive);
  }
}
