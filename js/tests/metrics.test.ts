import assert from "node:assert/strict";
import { test } from "node:test";

import fixture from "./fixtures/metrics.json";
import { emptyTable, fillRows, type LogitsTable, sliceFromLogits, sortInSteps } from "../metrics";

const asFloat = (values: (number | null)[]) =>
  new Float32Array(values.map((v) => (v === null ? NaN : v)));

/** The engine's table (demo model, MLP site, token 3 removed), filled in two chunks as the kernel sends it. */
function engineTable(): LogitsTable {
  const { rows, tokens, classes } = fixture;
  const table = emptyTable(rows, tokens, classes);
  const logits = asFloat(fixture.logits);
  const lse = asFloat(fixture.log_partition);
  const split = 4;
  assert.equal(
    fillRows(
      table,
      0,
      logits.subarray(0, split * tokens * classes),
      lse.subarray(0, split * tokens),
    ),
    false,
  );
  assert.equal(
    fillRows(table, split, logits.subarray(split * tokens * classes), lse.subarray(split * tokens)),
    true,
  );
  return table;
}

for (const metric of Object.keys(fixture.expected) as (keyof typeof fixture.expected)[]) {
  test(`${metric} slices equal the Python engine's, class by class`, () => {
    const table = engineTable();
    const expected = fixture.expected[metric] as (number | null)[][][];
    for (let cls = 0; cls < fixture.classes; cls++) {
      const got = Array.from(sliceFromLogits(table, metric, cls));
      const want = Array.from(asFloat(expected[cls].flat()));
      got.forEach((v, i) => {
        if (Number.isNaN(want[i]))
          return assert.ok(Number.isNaN(v), `class ${cls} value ${i} should be NaN`);
        if (metric === "probability")
          return assert.ok(Math.abs(v - want[i]) <= 1e-6 * Math.max(1, want[i]));
        assert.equal(v, want[i], `class ${cls} value ${i}`);
      });
    }
  });
}

test("identifiability from sorted tables equals the unsorted count", () => {
  const plain = engineTable();
  const sorted = engineTable();
  const steps: (() => void)[] = [];
  sortInSteps(sorted, (step) => steps.push(step));
  while (steps.length) steps.shift()!();
  assert.equal(sorted.sortedCount, fixture.rows * fixture.tokens);
  for (let cls = 0; cls < fixture.classes; cls++)
    assert.deepEqual(
      Array.from(sliceFromLogits(sorted, "identifiability", cls)),
      Array.from(sliceFromLogits(plain, "identifiability", cls)),
    );
});

test("ties count in the class's favour", () => {
  const table = emptyTable(1, 1, 4);
  fillRows(table, 0, new Float32Array([3, 1, 3, 2]), new Float32Array([0]));
  assert.deepEqual(Array.from(sliceFromLogits(table, "identifiability", 0)), [1]);
  assert.deepEqual(Array.from(sliceFromLogits(table, "identifiability", 3)), [0.5]);
});

test("an unknown metric or class throws instead of guessing", () => {
  const table = engineTable();
  assert.throws(() => sliceFromLogits(table, "rank", 0), /unknown metric 'rank'/);
  assert.throws(() => sliceFromLogits(table, "logit", fixture.classes), /out of range/);
});

test("a chunk of the wrong size is refused", () => {
  const table = emptyTable(2, 1, 4);
  assert.throws(() => fillRows(table, 0, new Float32Array(3), new Float32Array(1)), /malformed/);
});
