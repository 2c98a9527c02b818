import assert from "node:assert/strict";
import { test } from "node:test";

import { matchClasses } from "../fuzzy";
import type { AnyAsk, Kind } from "../protocol";
import { type Buffers, type DataSource, KernelSource, SourceError } from "../source";
import { halfToFloat } from "../standalone";
import { SliceStore } from "../store";

/** A source whose answers the test gives by hand, in any order. */
class ManualSource implements DataSource {
  readonly serves = new Set<Kind>(["slices", "logits"]);
  asked: { request: any; resolve: (v: [any, Buffers]) => void; reject: (e: Error) => void }[] = [];
  version = 0;
  ask(request: AnyAsk): Promise<any> {
    return new Promise((resolve, reject) => this.asked.push({ request, resolve, reject }));
  }
  answer(i: number, rows = 2, tokens = 3): Promise<void> {
    const { request, resolve } = this.asked[i];
    const data = new Float32Array(request.classes.length * rows * tokens).map((_, j) => j);
    resolve([
      { ...request, id: i, image: 0, version: this.version, rows, tokens, base: !!request.base },
      [data.buffer],
    ]);
    return new Promise((r) => setImmediate(r)); // let the store's handlers run
  }
  dispose(): void {}
}

function quietStore(source: DataSource, errors: string[] = []): SliceStore {
  return new SliceStore(
    source,
    () => {},
    (m) => errors.push(m),
  );
}

const resid = { image: 0, site: "resid", metric: "logit" };

test("while a request is in flight only the latest pending one is kept", async () => {
  const source = new ManualSource();
  const store = quietStore(source);
  for (const cls of [1, 2, 3, 4]) store.request(resid, [cls]);
  assert.equal(source.asked.length, 1);
  await source.answer(0);
  assert.equal(source.asked.length, 2);
  assert.deepEqual(source.asked[1].request.classes, [4]); // 2 and 3 were stale and never sent
});

test("replies are split per class and cached", async () => {
  const source = new ManualSource();
  const store = quietStore(source);
  const q = { image: 0, site: "attn", metric: "probability" };
  store.request(q, [5, 7]);
  await source.answer(0);
  assert.deepEqual(Array.from(store.get({ ...q, cls: 7 })!), [6, 7, 8, 9, 10, 11]);
  store.request(q, [5, 7]);
  assert.equal(source.asked.length, 1); // cached: nothing asked
});

test("an answer to a request made before clear() is not kept", async () => {
  const source = new ManualSource();
  const store = quietStore(source);
  store.request(resid, [1]);
  store.clear();
  await source.answer(0);
  assert.equal(store.get({ ...resid, cls: 1 }), undefined);
  store.request(resid, [1]); // asked again, and kept this time
  await source.answer(1);
  assert.ok(store.get({ ...resid, cls: 1 }));
});

test("a logits table on its way when clear() runs is not kept", async () => {
  const source = new ManualSource();
  const store = quietStore(source);
  store.requestTable(0, "resid", 2, 2); // fits in one message: asked at once
  await new Promise((r) => setTimeout(r, 0));
  assert.equal(source.asked[0].request.kind, "logits");
  store.clear();
  const { request, resolve } = source.asked[0];
  resolve([
    { ...request, id: 0, image: 0, version: 0, rows: 2, tokens: 3, classes: 4 },
    [new Float32Array(2 * 3 * 4).buffer, new Float32Array(2 * 3).buffer],
  ]);
  await new Promise((r) => setImmediate(r));
  assert.equal(store.hasTable(0, "resid"), false);
});

test("an error frees the queue and is reported", async () => {
  const source = new ManualSource();
  const errors: string[] = [];
  const store = quietStore(source, errors);
  store.request(resid, [1]);
  store.request(resid, [2]);
  source.asked[0].reject(new SourceError("bad class"));
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(errors, ["bad class"]);
  assert.equal(source.asked.length, 2);
});

test("answers for an older trace are dropped; unperturbed slices survive a re-trace", async () => {
  const source = new ManualSource();
  const store = quietStore(source);
  store.request(resid, [1]);
  store.request({ ...resid, base: true }, [1]); // waits: one user request at a time
  store.setVersion(1); // a perturbation re-traced while the answer was on its way
  await source.answer(0);
  assert.equal(store.get({ ...resid, cls: 1 }), undefined);
  store.request({ ...resid, base: true }, [1]);
  source.version = 1;
  await source.answer(1);
  assert.ok(store.get({ ...resid, cls: 1, base: true }));
  store.setVersion(2);
  assert.ok(store.get({ ...resid, cls: 1, base: true }));
});

test("prefetches wait for a pause and never delay a user request", async (t) => {
  t.mock.timers.enable({ apis: ["setTimeout"] });
  const source = new ManualSource();
  const store = quietStore(source);
  store.prefetch(resid, [7, 8]);
  t.mock.timers.tick(100);
  store.request(resid, [1]);
  t.mock.timers.tick(1000);
  assert.equal(source.asked.length, 1); // the user's request went out; the speculation was dropped
  await source.answer(0);
  store.prefetch(resid, [7, 8]);
  assert.equal(source.asked.length, 1);
  t.mock.timers.tick(1000);
  assert.equal(source.asked.length, 2);
  assert.deepEqual(source.asked[1].request.classes, [7, 8]);
});

test("the logits table comes in row chunks once the user pauses, a user request going first", async (t) => {
  t.mock.timers.enable({ apis: ["setTimeout"] });
  const source = new ManualSource();
  let data = 0;
  const store = new SliceStore(
    source,
    () => data++,
    () => {},
  );
  store.requestTable(0, "mlp", 3, 2);
  store.requestTable(0, "mlp", 3, 2);
  assert.equal(source.asked.length, 0); // waits for a pause
  t.mock.timers.tick(1000);
  assert.equal(source.asked.length, 1);
  assert.deepEqual(source.asked[0].request, {
    kind: "logits",
    image: 0,
    site: "mlp",
    start: 0,
    stop: 2,
  });
  const chunk = (start: number, stop: number) => {
    const rows = stop - start;
    const logits = new Float32Array(rows * 2 * 4).map((_, i) => (start * 8 + i) % 5);
    const reply = {
      kind: "logits",
      id: 0,
      image: 0,
      version: 0,
      site: "mlp",
      start,
      stop,
      rows: 3,
      tokens: 2,
      classes: 4,
    };
    return [reply, [logits.buffer, new Float32Array(rows * 2).buffer]] as [any, Buffers];
  };
  store.request({ image: 0, site: "mlp", metric: "logit" }, [1]); // a user request goes out at once
  assert.equal(source.asked.length, 2);
  source.asked[0].resolve(chunk(0, 2));
  await new Promise((r) => setImmediate(r));
  assert.equal(source.asked.length, 2); // the next chunk waits for the user's answer
  let answered = false;
  store.answered().then(() => (answered = true));
  await source.answer(1);
  assert.ok(answered);
  assert.deepEqual(source.asked[2].request, {
    kind: "logits",
    image: 0,
    site: "mlp",
    start: 2,
    stop: 3,
  });
  assert.equal(store.hasTable(0, "mlp"), false);
  source.asked[2].resolve(chunk(2, 3));
  await new Promise((r) => setImmediate(r));
  assert.equal(store.hasTable(0, "mlp"), true);
  assert.deepEqual(
    Array.from(store.get({ image: 0, site: "mlp", metric: "logit", cls: 2 })!),
    [2, 1, 0, 4, 3, 2],
  );
  store.setVersion(3);
  assert.equal(store.hasTable(0, "mlp"), false);
});

test("a declined table is not asked for again in this trace; classes come one by one", async (t) => {
  t.mock.timers.enable({ apis: ["setTimeout"] });
  const source = new ManualSource();
  const errors: string[] = [];
  const store = quietStore(source, errors);
  store.requestTable(0, "resid", 7, 1);
  t.mock.timers.tick(1000);
  source.asked[0].reject(new SourceError("the kernel is showing image 1, not image 0"));
  await new Promise((r) => setImmediate(r));
  store.requestTable(0, "resid", 7, 1);
  t.mock.timers.tick(1000);
  assert.equal(source.asked.length, 1);
  assert.deepEqual(errors, []); // the class the user asked for reports its own error
  store.setVersion(1); // a new trace: worth another try
  store.requestTable(0, "resid", 7, 1);
  t.mock.timers.tick(1000);
  assert.equal(source.asked.length, 2);
});

test("a kernel that serves no tables (rows per message 0) is never asked for one", (t) => {
  t.mock.timers.enable({ apis: ["setTimeout"] });
  const source = new ManualSource();
  quietStore(source).requestTable(0, "resid", 7, 0);
  t.mock.timers.tick(1000);
  assert.equal(source.asked.length, 0);
});

test("a malformed table chunk is reported once and not asked for again", async (t) => {
  t.mock.timers.enable({ apis: ["setTimeout"] });
  const source = new ManualSource();
  const errors: string[] = [];
  const store = quietStore(source, errors);
  store.requestTable(0, "mlp", 1, 1);
  t.mock.timers.tick(0);
  const reply = { kind: "logits", id: 0, image: 0, version: 0, site: "mlp", start: 0, stop: 1 };
  const malformed = { ...reply, rows: 1, tokens: 2, classes: 4 };
  source.asked[0].resolve([malformed, [new Float32Array(3).buffer, new Float32Array(2).buffer]]);
  await new Promise((r) => setImmediate(r));
  assert.equal(errors.length, 1);
  assert.match(errors[0], /logits table/);
  store.requestTable(0, "mlp", 1, 1);
  t.mock.timers.tick(1000);
  assert.equal(source.asked.length, 1);
});

test("a disposed store asks nothing more and ignores late answers", async (t) => {
  t.mock.timers.enable({ apis: ["setTimeout"] });
  const source = new ManualSource();
  const errors: string[] = [];
  let data = 0;
  const store = new SliceStore(
    source,
    () => data++,
    (m) => errors.push(m),
  );
  store.request(resid, [1]);
  store.request(resid, [2]); // waits for the first
  store.prefetch(resid, [3]);
  store.requestTable(0, "resid", 7, 1);
  store.dispose();
  t.mock.timers.tick(1000);
  await source.answer(0);
  assert.equal(source.asked.length, 1); // neither the pending class, the prefetch nor the table
  assert.equal(data, 0);
  source.asked[0].reject(new SourceError("the view was closed"));
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(errors, []);
});

/** A widget model that, as a kernel does, sends every custom message to all views. */
class SharedModel {
  private listeners = new Set<(content: unknown, buffers: Buffers) => void>();
  sent: any[] = [];
  on(_event: string, fn: (content: unknown, buffers: Buffers) => void) {
    this.listeners.add(fn);
  }
  off(_event: string, fn: (content: unknown, buffers: Buffers) => void) {
    this.listeners.delete(fn);
  }
  send(content: any) {
    this.sent.push(content);
  }
  reply(content: unknown) {
    this.listeners.forEach((fn) => fn(content, []));
  }
}

test("two views of one widget each take only their own replies", async () => {
  const model = new SharedModel();
  const strays: string[] = [];
  const a = new KernelSource(model as any, (m) => strays.push(`a: ${m}`));
  const b = new KernelSource(model as any, (m) => strays.push(`b: ${m}`));
  const ping = { kind: "ping" as const };
  const gotA = a.ask(ping);
  const gotB = b.ask({ kind: "memories", image: 0, site: "mlp", layer: 1, token: 3 });
  const [idA, idB] = model.sent.map((m) => m.id);
  assert.notEqual(idA, idB);
  model.reply({ kind: "error", id: idB, request: "memories", message: "token 3 is removed" });
  model.reply({ kind: "pong", id: idA });
  assert.deepEqual((await gotA)[0], { kind: "pong", id: idA });
  await assert.rejects(gotB, /token 3 is removed/);
  assert.deepEqual(strays, []); // b's error went to b's request only
  model.reply({ kind: "error", id: null, request: null, message: "unreadable request" });
  assert.deepEqual(strays, ["a: unreadable request", "b: unreadable request"]);
});

test("a reply of the wrong kind for a request is refused, not used", async () => {
  const model = new SharedModel();
  const source = new KernelSource(model as any, () => {});
  const asked = source.ask({ kind: "ping" });
  model.reply({ kind: "slices", id: model.sent[0].id, image: 0, version: 0 });
  await assert.rejects(asked, /a slices reply came for a pong request/);
});

test("class matching ranks exact, prefix, substring, then in-order matches", () => {
  const names = ["golden retriever", "goldfish", "retriever", "tiger", "great white shark"];
  const order = matchClasses("retriever", names).map((m) => names[m.index]);
  assert.deepEqual(order.slice(0, 2), ["retriever", "golden retriever"]);
  assert.equal(names[matchClasses("gldfsh", names)[0].index], "goldfish");
  assert.deepEqual(matchClasses("zzz", names), []);
});

test("float16 decoding", () => {
  const out = Array.from(halfToFloat(new Uint16Array([0x3c00, 0xc000, 0x0000, 0x3555, 0x7c00])));
  assert.deepEqual(out.slice(0, 3), [1, -2, 0]);
  assert.ok(Math.abs(out[3] - 0.33325) < 1e-4);
  assert.equal(out[4], Infinity);
});

test("a table that fits in one message is asked for without waiting for a pause", (t) => {
  t.mock.timers.enable({ apis: ["setTimeout"] });
  const source = new ManualSource();
  const store = quietStore(source);
  store.requestTable(0, "resid", 3, 4);
  assert.equal(source.asked.length, 0); // not in the paint's own task...
  t.mock.timers.tick(0);
  assert.equal(source.asked.length, 1); // ...but right after it, not after SETTLE_MS
  assert.deepEqual(source.asked[0].request, {
    kind: "logits",
    image: 0,
    site: "resid",
    start: 0,
    stop: 3,
  });
});
