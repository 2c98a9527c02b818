import assert from "node:assert/strict";
import { mock, test } from "node:test";

import { matchClasses } from "../fuzzy";
import { halfToFloat } from "../standalone-data";
import {
  SliceStore,
  sliceFromLogits,
  sortInSteps,
  type LogitsTable,
  type ViewModel,
} from "../store";

function fakeModel() {
  const sent: any[] = [];
  const model: ViewModel = {
    get: () => undefined,
    set: () => {},
    save_changes: () => {},
    on: () => {},
    off: () => {},
    send: (content: unknown) => void sent.push(content),
  };
  return { model, sent };
}

/** A store whose data and error callbacks do nothing. */
function quietStore(model: ViewModel): SliceStore {
  return new SliceStore(
    model,
    () => {},
    () => {},
  );
}

function reply(request: any, rows = 2, tokens = 3): [any, ArrayBuffer[]] {
  const data = new Float32Array(request.classes.length * rows * tokens).map((_, i) => i);
  return [
    {
      type: "slices",
      id: request.id,
      image_index: 0,
      site: request.site,
      metric: request.metric,
      classes: request.classes,
      rows,
      tokens,
    },
    [data.buffer],
  ];
}

test("while a request is in flight only the latest pending one is kept", () => {
  const { model, sent } = fakeModel();
  const store = quietStore(model);
  for (const cls of [1, 2, 3, 4])
    store.request(0, { site: "resid", metric: "logit", classes: [cls] });
  assert.equal(sent.length, 1);
  assert.deepEqual(sent[0].classes, [1]);
  store.receive(...reply(sent[0]));
  assert.equal(sent.length, 2);
  assert.deepEqual(sent[1].classes, [4]); // 2 and 3 were stale and never sent
  store.receive(...reply(sent[1]));
  assert.equal(sent.length, 2);
});

test("replies are split per class and cached", () => {
  const { model, sent } = fakeModel();
  const store = quietStore(model);
  store.request(0, { site: "attn", metric: "probability", classes: [5, 7] });
  store.receive(...reply(sent[0]));
  assert.deepEqual(Array.from(store.get(0, "attn", "probability", 7)!), [6, 7, 8, 9, 10, 11]);
  store.request(0, { site: "attn", metric: "probability", classes: [5, 7] });
  assert.equal(sent.length, 1); // cached: no new request
});

test("an error reply frees the queue and is reported", () => {
  const { model, sent } = fakeModel();
  const errors: string[] = [];
  const store = new SliceStore(
    model,
    () => {},
    (m) => errors.push(m),
  );
  store.request(0, { site: "resid", metric: "logit", classes: [1] });
  store.request(0, { site: "resid", metric: "logit", classes: [2] });
  store.receive({ type: "error", id: sent[0].id, message: "bad class" }, []);
  assert.deepEqual(errors, ["bad class"]);
  assert.equal(sent.length, 2);
});

test("class matching ranks exact, prefix, substring, then in-order matches", () => {
  const names = ["golden retriever", "goldfish", "retriever", "tiger", "great white shark"];
  const order = matchClasses("retriever", names).map((m) => names[m.index]);
  assert.deepEqual(order.slice(0, 2), ["retriever", "golden retriever"]);
  assert.equal(names[matchClasses("gldfsh", names)[0].index], "goldfish");
  assert.deepEqual(matchClasses("zzz", names), []);
});

test("float16 decoding", () => {
  const halves = new Uint16Array([0x3c00, 0xc000, 0x0000, 0x3555, 0x7c00]);
  const out = Array.from(halfToFloat(halves));
  assert.deepEqual(out.slice(0, 3), [1, -2, 0]);
  assert.ok(Math.abs(out[3] - 0.33325) < 1e-4);
  assert.equal(out[4], Infinity);
});

test("prefetches wait for a pause and never delay a user request", () => {
  mock.timers.enable({ apis: ["setTimeout"] });
  try {
    const { model, sent } = fakeModel();
    const store = quietStore(model);
    store.prefetch(0, { site: "resid", metric: "logit", classes: [7, 8] });
    mock.timers.tick(100);
    store.request(0, { site: "resid", metric: "logit", classes: [1] });
    mock.timers.tick(1000);
    assert.equal(sent.length, 1); // the user's request went out; the speculation was dropped
    assert.deepEqual(sent[0].classes, [1]);
    store.receive(...reply(sent[0]));
    store.prefetch(0, { site: "resid", metric: "logit", classes: [7, 8] });
    assert.equal(sent.length, 1); // not yet: waiting for a pause
    mock.timers.tick(200);
    assert.equal(sent.length, 2);
    store.request(0, { site: "resid", metric: "logit", classes: [2] });
    assert.equal(sent.length, 3); // a user request goes out even while a speculative one is in flight
    store.receive(...reply(sent[2]));
    store.receive(...reply(sent[1]));
    assert.ok(store.get(0, "resid", "logit", 8) && store.get(0, "resid", "logit", 2));
  } finally {
    mock.timers.reset();
  }
});

// Two rows x one token x four classes; row 0 has a tie at the top, row 1 a removed token (NaN).
function table(): LogitsTable {
  const logits = new Float32Array([3, 1, 3, 2, NaN, NaN, NaN, NaN]);
  const lse = new Float32Array([Math.log(2 * Math.exp(3) + Math.exp(1) + Math.exp(2)), NaN]);
  return { logits, logPartition: lse, rows: 2, tokens: 1, classes: 4 };
}

test("slices derived from logits follow the kernel's definitions, ties and removed tokens included", () => {
  const t = table();
  assert.deepEqual(Array.from(sliceFromLogits(t, "identifiability", 0)), [1, NaN]); // tied at the top
  assert.deepEqual(Array.from(sliceFromLogits(t, "identifiability", 3)), [0.5, NaN]); // two greater
  assert.deepEqual(Array.from(sliceFromLogits(t, "identifiability", 1)), [0.25, NaN]);
  assert.deepEqual(Array.from(sliceFromLogits(t, "logit", 3)), [2, NaN]);
  const p = sliceFromLogits(t, "probability", 0)[0];
  assert.ok(Math.abs(p - Math.exp(3) / (2 * Math.exp(3) + Math.exp(1) + Math.exp(2))) < 1e-6);
});

test("a logits table is asked for once and then serves every class without the kernel", () => {
  const { model, sent } = fakeModel();
  let data = 0;
  const store = new SliceStore(
    model,
    () => data++,
    () => {},
  );
  store.requestTable(0, "mlp");
  store.requestTable(0, "mlp");
  assert.equal(sent.length, 1);
  assert.deepEqual(sent[0], { type: "logits", id: sent[0].id, site: "mlp", image_index: 0 });
  const t = table();
  store.receive(
    { type: "logits", id: sent[0].id, image_index: 0, site: "mlp", rows: 2, tokens: 1, classes: 4 },
    [t.logits.buffer as ArrayBuffer, t.logPartition.buffer as ArrayBuffer],
  );
  assert.equal(data, 1);
  assert.deepEqual(Array.from(store.get(0, "mlp", "identifiability", 3)!), [0.5, NaN]);
  store.request(0, { site: "mlp", metric: "logit", classes: [2] });
  assert.equal(sent.length, 1); // derivable: nothing asked
  assert.equal(store.get(0, "resid", "logit", 2), undefined); // other sites still come from the kernel
  store.setVersion(5); // a perturbation re-traced: the table is stale
  assert.equal(store.get(0, "mlp", "logit", 2), undefined);
});

test("a declined table falls back to per-class requests, silently", () => {
  const { model, sent } = fakeModel();
  const errors: string[] = [];
  const store = new SliceStore(
    model,
    () => {},
    (m) => errors.push(m),
  );
  store.requestTable(0, "resid");
  store.receive({ type: "error", id: sent[0].id, message: "too large" }, []);
  store.requestTable(0, "attn");
  assert.equal(sent.length, 1); // not asked again
  assert.deepEqual(errors, []);
  store.request(0, { site: "resid", metric: "logit", classes: [1] });
  assert.equal(sent[1].type, "slices");
});

test("ranks from the sorted logits equal the full count, ties and NaN included", () => {
  const classes = 50;
  const rows = 7;
  const logits = new Float32Array(rows * classes).map(
    (_, i) => Math.round(Math.sin(i * 12.9898) * 20) / 4,
  );
  logits.fill(NaN, 3 * classes, 4 * classes); // a removed token
  logits[5 * classes + 7] = NaN; // a stray NaN among classes
  const plain: LogitsTable = {
    logits,
    logPartition: new Float32Array(rows),
    rows,
    tokens: 1,
    classes,
  };
  const sorted: LogitsTable = { ...plain };
  const steps: (() => void)[] = [];
  sortInSteps(sorted, (step) => steps.push(step));
  while (steps.length) steps.shift()!(); // run every step now
  assert.equal(sorted.sortedCount, rows);
  for (let cls = 0; cls < classes; cls++) {
    assert.deepEqual(
      Array.from(sliceFromLogits(sorted, "identifiability", cls)),
      Array.from(sliceFromLogits(plain, "identifiability", cls)),
    );
  }
});
