/**
 * The widget's state as the view sees it. Some changes are told to the kernel later (after a pause, or
 * once their numbers are painted); until then they are held here, not set on the model. A model only
 * sends what was set on it, so a change the kernel makes meanwhile (Python running `explorer.layer = 1`)
 * wins: it replaces the held value instead of being overwritten when the view's older one is sent.
 *
 * Held changes reach the kernel in one of two ways: set on the model and sent as a widget update
 * (`save_changes`), or told in a request (`tell`), which the kernel applies and sends back as its own
 * update. That update only confirms what was told: it does not replace a newer held change.
 */

import type { StateModel, Traits } from "./model";

type Name = keyof Traits;
type Listener = (...args: any[]) => void; // eslint-disable-line @typescript-eslint/no-explicit-any

export class ViewState implements StateModel {
  private held = new Map<Name, unknown>();
  private told = new Map<Name, string>(); // told to the kernel, not yet answered: name -> the value as JSON
  private listeners = new Map<string, Map<Listener, Listener>>(); // event -> callback -> its model listener
  private flushing = false; // setting held values on the model: the view shows them already
  private cleanups: (() => void)[] = [];

  constructor(
    private model: StateModel,
    holdable: Iterable<Name>,
  ) {
    for (const name of holdable) {
      const kernelWins = () => {
        if (this.told.get(name) === JSON.stringify(model.get(name))) return; // the kernel confirms what we told
        this.held.delete(name); // the model changed it: a newer value than ours
      };
      model.on(`change:${name}`, kernelWins);
      this.cleanups.push(() => model.off(`change:${name}`, kernelWins));
    }
  }

  get<K extends Name>(name: K): Traits[K] {
    return (this.held.has(name) ? this.held.get(name) : this.model.get(name)) as Traits[K];
  }

  /** Set on the model now (it is sent with the next save_changes). */
  set<K extends Name>(name: K, value: Traits[K]): void {
    this.held.delete(name);
    this.model.set(name, value);
  }

  /** Change what the view shows now; the model gets it at the next flush. */
  hold<K extends Name>(name: K, value: Traits[K]): void {
    if (this.get(name) === value) return;
    this.held.set(name, value);
    this.listeners.get(`change:${name}`)?.forEach((_, fn) => fn()); // the view redraws; the model is unchanged
  }

  /** Whether a held change waits for a flush. */
  get holding(): boolean {
    return this.held.size > 0;
  }

  /** Set every held change on the model and send all of them, with anything else set, in one update. */
  save_changes(): void {
    const changes = [...this.held];
    this.held.clear();
    this.flushing = true; // no redraw for what is on screen already
    try {
      for (const [name, value] of changes) this.model.set(name, value as Traits[typeof name]);
    } finally {
      this.flushing = false;
    }
    this.model.save_changes();
  }

  /** The held changes of `names`, now told to the kernel (until `settle`); empty when there are none. */
  tell<K extends Name>(names: readonly K[]): Partial<Pick<Traits, K>> {
    const state: Partial<Pick<Traits, K>> = {};
    for (const name of names) {
      if (!this.held.has(name)) continue;
      state[name] = this.held.get(name) as Traits[K];
      this.told.set(name, JSON.stringify(state[name]));
    }
    return state;
  }

  /**
   * The kernel answered what `tell` returned: it has applied it and the model holds it (or it refused,
   * and the model holds the kernel's value). Held values it answered are the model's from now on.
   */
  settle(state: Partial<Traits>): void {
    for (const [name, value] of Object.entries(state) as [Name, unknown][]) {
      const json = JSON.stringify(value);
      if (this.told.get(name) === json) this.told.delete(name);
      if (!this.held.has(name) || JSON.stringify(this.held.get(name)) !== json) continue; // changed since
      this.held.delete(name);
      if (JSON.stringify(this.model.get(name)) !== json)
        this.listeners.get(`change:${name}`)?.forEach((_, fn) => fn()); // refused: show the kernel's
    }
  }

  on(event: string, callback: Listener): void {
    const onModel: Listener = (...args) => {
      if (!this.flushing) callback(...args);
    };
    if (!this.listeners.has(event)) this.listeners.set(event, new Map());
    this.listeners.get(event)!.set(callback, onModel);
    this.model.on(event, onModel);
  }

  off(event?: string | null, callback?: Listener | null): void {
    if (!event || !callback) return;
    const onModel = this.listeners.get(event)?.get(callback);
    if (!onModel) return;
    this.model.off(event as `change:${Name}`, onModel);
    this.listeners.get(event)!.delete(callback);
  }

  dispose(): void {
    this.cleanups.forEach((fn) => fn());
  }
}
