import assert from "node:assert/strict";
import { test } from "node:test";

import type { AnyAsk, Kind } from "../protocol";
import { type Buffers, type DataSource, Heartbeat, SourceError } from "../source";

/** A kernel whose pongs the test sends by hand; `lastAnswerAt` as KernelSource keeps it. */
class PingedSource implements DataSource {
  readonly serves = new Set<Kind>(["ping"]);
  lastAnswerAt = 0;
  pings: { resolve: (v: [any, Buffers]) => void; reject: (e: Error) => void }[] = [];
  constructor(private clock: { t: number }) {}
  ask(_request: AnyAsk): Promise<any> {
    return new Promise((resolve, reject) => this.pings.push({ resolve, reject }));
  }
  pong(i: number): Promise<void> {
    this.lastAnswerAt = this.clock.t;
    this.pings[i].resolve([{ kind: "pong", id: i }, []]);
    return new Promise((r) => setImmediate(r));
  }
  dispose(): void {}
}

function setup() {
  const clock = { t: 10_000 };
  const source = new PingedSource(clock);
  const changes: boolean[] = [];
  const heartbeat = new Heartbeat(source, (alive) => changes.push(alive), {
    intervalMs: 3000,
    timeoutMs: 8000,
    quietMs: 200,
    now: () => clock.t,
  });
  return { clock, source, changes, heartbeat };
}

test("a quiet view pings the kernel, and says nothing while it answers", async () => {
  const { clock, source, changes, heartbeat } = setup();
  heartbeat.beat();
  assert.equal(source.pings.length, 1);
  clock.t += 50;
  await source.pong(0);
  clock.t += 3000;
  heartbeat.beat();
  assert.equal(source.pings.length, 2);
  assert.deepEqual(changes, []); // alive all along: no redraw of the status
});

test("no ping while the user interacts; it goes once they pause", () => {
  const { clock, source, heartbeat } = setup();
  heartbeat.userActive();
  clock.t += 150;
  heartbeat.beat();
  assert.equal(source.pings.length, 0);
  clock.t += 100; // 250 ms since the last input
  heartbeat.beat();
  assert.equal(source.pings.length, 1);
});

test("an answer to any request within the interval makes a ping unnecessary", () => {
  const { clock, source, heartbeat } = setup();
  source.lastAnswerAt = clock.t - 2000;
  heartbeat.beat();
  assert.equal(source.pings.length, 0);
  clock.t += 1500; // 3.5 s since that answer
  heartbeat.beat();
  assert.equal(source.pings.length, 1);
});

test("a ping unanswered past the timeout reports the kernel gone, once; its pong brings it back", async () => {
  const { clock, source, changes, heartbeat } = setup();
  heartbeat.beat();
  for (const step of [3000, 3000, 3000, 3000]) {
    clock.t += step;
    heartbeat.beat();
  }
  assert.equal(source.pings.length, 1); // one ping at a time: a dead kernel does not pile them up
  assert.deepEqual(changes, [false]);
  await source.pong(0);
  assert.deepEqual(changes, [false, true]);
});

test("any answer after a ping stands for its pong: a lost pong does not leave the view 'not responding'", () => {
  const { clock, source, changes, heartbeat } = setup();
  heartbeat.beat();
  clock.t += 100;
  source.lastAnswerAt = clock.t; // a slice request answered; the pong itself never comes
  for (const step of [3000, 3000, 3000]) {
    clock.t += step;
    heartbeat.beat();
  }
  assert.deepEqual(changes, []);
  assert.equal(source.pings.length, 2); // a fresh ping once that answer is an interval old
});

test("a failed ping reports the kernel gone at once", async () => {
  const { source, changes, heartbeat } = setup();
  heartbeat.beat();
  source.pings[0].reject(new SourceError("the view was closed"));
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(changes, [false]);
});

test("a source that cannot be pinged (the exported page) is never asked", () => {
  const clock = { t: 0 };
  const source = new PingedSource(clock);
  (source as { serves: Set<Kind> }).serves = new Set<Kind>(["slices"]);
  const heartbeat = new Heartbeat(source, () => assert.fail("no change expected"));
  heartbeat.start();
  heartbeat.stop();
  assert.equal(source.pings.length, 0);
});
