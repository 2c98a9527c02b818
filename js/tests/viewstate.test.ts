import assert from "node:assert/strict";
import { test } from "node:test";

import type { StateModel, Traits } from "../model";
import { ViewState } from "../viewstate";

/** A widget model as ipywidgets keeps one: it sends what was set on it since the last save_changes. */
class RecordingModel {
  state: Record<string, unknown> = { layer: 6, cls: 0, site: "resid", image_index: 0 };
  unsent: Record<string, unknown> = {};
  sent: Record<string, unknown>[] = [];
  private listeners = new Map<string, Set<() => void>>();
  get(name: string) {
    return this.state[name];
  }
  set(name: string, value: unknown) {
    if (this.state[name] === value) return;
    this.state[name] = value;
    this.unsent[name] = value;
    this.listeners.get(`change:${name}`)?.forEach((fn) => fn());
  }
  /** A change from the kernel: shown, not sent back. */
  fromKernel(name: string, value: unknown) {
    this.state[name] = value;
    this.listeners.get(`change:${name}`)?.forEach((fn) => fn());
  }
  save_changes() {
    this.sent.push(this.unsent);
    this.unsent = {};
  }
  on(event: string, fn: () => void) {
    if (!this.listeners.has(event)) this.listeners.set(event, new Set());
    this.listeners.get(event)!.add(fn);
  }
  off(event: string, fn: () => void) {
    this.listeners.get(event)?.delete(fn);
  }
}

function viewOf(model: RecordingModel): ViewState {
  return new ViewState(
    model as unknown as StateModel,
    ["layer", "cls", "site"] as (keyof Traits)[],
  );
}

test("a held change is shown at once and sent at the flush, with what was set meanwhile", () => {
  const model = new RecordingModel();
  const view = viewOf(model);
  let redraws = 0;
  view.on("change:layer", () => redraws++);
  view.hold("layer", 3);
  view.hold("layer", 2);
  assert.equal(view.get("layer"), 2);
  assert.equal(model.get("layer"), 6); // nothing set on the model yet
  assert.equal(redraws, 2);
  view.set("image_index", 1);
  assert.equal(redraws, 2);
  view.save_changes();
  assert.deepEqual(model.sent, [{ image_index: 1, layer: 2 }]);
  assert.equal(view.holding, false);
  assert.equal(redraws, 2); // sending what is on screen already redraws nothing
  model.fromKernel("layer", 4);
  assert.equal(redraws, 3); // a kernel change does
});

test("a listener taken off hears nothing more", () => {
  const model = new RecordingModel();
  const view = viewOf(model);
  let heard = 0;
  const listener = () => heard++;
  view.on("change:cls", listener);
  view.off("change:cls", listener);
  view.hold("cls", 3);
  model.fromKernel("cls", 5);
  assert.equal(heard, 0);
});

test("a change the kernel makes meanwhile wins over the held one", () => {
  const model = new RecordingModel();
  const view = viewOf(model);
  view.hold("layer", 3); // the user scrubs
  model.fromKernel("layer", 1); // a cell runs explorer.layer = 1 before the view sends its change
  assert.equal(view.get("layer"), 1);
  view.save_changes(); // the pause comes: the older layer is not sent
  assert.deepEqual(model.sent, [{}]);
  assert.equal(model.get("layer"), 1);
});

test("after dispose, kernel changes no longer reach the view's held state", () => {
  const model = new RecordingModel();
  const view = viewOf(model);
  view.dispose();
  view.hold("cls", 4);
  model.fromKernel("cls", 2);
  assert.equal(view.get("cls"), 4);
});

test("told changes are answered by the kernel's own update, never sent as the view's", () => {
  const model = new RecordingModel();
  const view = viewOf(model);
  let redraws = 0;
  view.on("change:layer", () => redraws++);
  view.hold("layer", 3);
  view.hold("cls", 5);
  const told = view.tell(["layer", "cls", "selected"]);
  assert.deepEqual(told, { layer: 3, cls: 5 });
  model.fromKernel("layer", 3); // the kernel applied them and sends them back
  model.fromKernel("cls", 5);
  view.settle(told); // then its reply
  assert.equal(view.holding, false);
  assert.deepEqual([view.get("layer"), view.get("cls")], [3, 5]);
  view.save_changes();
  assert.deepEqual(model.sent, [{}]); // nothing left to send
  assert.equal(redraws, 2); // the hold, and the kernel's confirming update (same numbers)
});

test("the kernel's confirmation of a told layer does not undo a newer one", () => {
  const model = new RecordingModel();
  const view = viewOf(model);
  view.hold("layer", 3);
  const told = view.tell(["layer"]);
  view.hold("layer", 4); // the user moves on before the kernel answers
  model.fromKernel("layer", 3); // the kernel's update for what was told
  assert.equal(view.get("layer"), 4);
  view.settle(told);
  assert.equal(view.get("layer"), 4); // still held: told at the next pause
  assert.deepEqual(view.tell(["layer"]), { layer: 4 });
});

test("a value the kernel refused goes back to the kernel's, and a Python change still wins", () => {
  const model = new RecordingModel();
  const view = viewOf(model);
  let redraws = 0;
  view.on("change:layer", () => redraws++);
  view.hold("layer", 99);
  const told = view.tell(["layer"]);
  view.settle(told); // refused: the kernel put back its own layer, unchanged on the model
  assert.equal(view.get("layer"), 6);
  assert.equal(redraws, 2); // the hold, and the way back
  view.hold("layer", 2);
  view.tell(["layer"]);
  model.fromKernel("layer", 1); // a cell sets explorer.layer = 1 meanwhile: not what was told
  assert.equal(view.get("layer"), 1);
});
