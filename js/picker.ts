/** The class picker: a WAI-ARIA combobox with a listbox popup over all class names. */

import { matchClasses } from "./fuzzy";
import { PICKER_BLUR_MS } from "./timing";

let pickerCount = 0;

export class ClassPicker {
  readonly root: HTMLDivElement;
  readonly input: HTMLInputElement;
  private list: HTMLUListElement;
  private options: number[] = [];
  private active = -1;
  private names: string[] = [];

  constructor(private onPick: (cls: number) => void) {
    const id = `vl-classes-${++pickerCount}`;
    this.root = document.createElement("div");
    this.root.className = "vl-picker";
    this.input = document.createElement("input");
    this.input.type = "text";
    this.input.className = "vl-picker-input";
    this.input.setAttribute("role", "combobox");
    this.input.setAttribute("aria-label", "Class");
    this.input.setAttribute("aria-autocomplete", "list");
    this.input.setAttribute("aria-expanded", "false");
    this.input.setAttribute("aria-controls", id);
    this.input.spellcheck = false;
    this.input.autocomplete = "off";
    this.input.setAttribute("data-lm-suppress-shortcuts", "true"); // typing is not a notebook shortcut
    this.list = document.createElement("ul");
    this.list.id = id;
    this.list.className = "vl-picker-list";
    this.list.setAttribute("role", "listbox");
    this.list.setAttribute("aria-label", "Classes");
    this.list.hidden = true;
    this.root.append(this.input, this.list);

    this.input.addEventListener("input", () => this.open(this.input.value));
    this.input.addEventListener("focus", () => this.input.select());
    this.input.addEventListener("keydown", (e) => this.onKey(e));
    this.input.addEventListener("blur", () =>
      window.setTimeout(() => this.close(), PICKER_BLUR_MS),
    );
    this.list.addEventListener("mousedown", (e) => e.preventDefault()); // keep focus in the input
  }

  setNames(names: string[]): void {
    this.names = names;
  }

  /** Show the current class without opening the list. */
  show(cls: number): void {
    const name = this.names[cls] ?? "";
    // Only when it differs: each write moves the caret and fires a selectionchange.
    if (document.activeElement !== this.input && this.input.value !== name) this.input.value = name;
  }

  private open(query: string): void {
    this.options = matchClasses(query, this.names).map((m) => m.index);
    this.list.replaceChildren(
      ...this.options.map((cls, i) => {
        const li = document.createElement("li");
        li.id = `${this.list.id}-${i}`;
        li.setAttribute("role", "option");
        li.textContent = this.names[cls];
        li.addEventListener("click", () => this.pick(cls));
        return li;
      }),
    );
    if (this.options.length === 0) {
      const li = document.createElement("li");
      li.className = "vl-picker-empty";
      li.textContent = "no matching class";
      this.list.append(li);
    }
    this.list.hidden = false;
    this.input.setAttribute("aria-expanded", "true");
    this.setActive(this.options.length ? 0 : -1);
  }

  private close(): void {
    this.list.hidden = true;
    this.input.setAttribute("aria-expanded", "false");
    this.input.removeAttribute("aria-activedescendant");
    this.active = -1;
  }

  private setActive(i: number): void {
    const items = this.list.querySelectorAll<HTMLLIElement>("[role=option]");
    items.forEach((li, j) => li.setAttribute("aria-selected", String(j === i)));
    this.active = i;
    if (i >= 0 && items[i]) {
      this.input.setAttribute("aria-activedescendant", items[i].id);
      items[i].scrollIntoView({ block: "nearest" });
    }
  }

  private pick(cls: number): void {
    this.input.value = this.names[cls];
    this.close();
    this.onPick(cls);
  }

  private onKey(e: KeyboardEvent): void {
    const count = this.options.length;
    if (e.key === "ArrowDown") {
      if (this.list.hidden) this.open(this.input.value);
      else if (count) this.setActive((this.active + 1) % count);
      e.preventDefault();
    } else if (e.key === "ArrowUp") {
      if (count) this.setActive((this.active - 1 + count) % count);
      e.preventDefault();
    } else if (e.key === "Enter") {
      if (!this.list.hidden && this.active >= 0) this.pick(this.options[this.active]);
      e.preventDefault();
    } else if (e.key === "Escape") {
      this.close();
      e.preventDefault();
    }
  }
}
