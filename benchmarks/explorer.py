"""Explorer latency, measured in the browser on a real JupyterLab page.

    .venv/bin/python benchmarks/explorer.py [--repeats 30]

For the demo model and for vit_base_patch16_224 (random init), with and without
the TCP_NODELAY server extension, it prints (milliseconds, measured with
``performance.now()`` in the page, from the input to the painted frame):

* class change, p50/p95, for a class the kernel pushed ahead of time (prefetched),
  for one the view derives from the site's logits table (which it asks for once,
  after the first paint), and for one that must come from the kernel (tables
  disabled), with the kernel round trip of those requests (message sent ->
  reply received, without rendering) and a bare round trip (ping -> pong) beside it;
  each change follows a 250 ms pause, and the kernel-served ones are measured once
  more back to back ("b2b"), where Nagle's algorithm shows without the extension;
* layer change (slider): input to the next painted frame (grid and trajectories),
  and the synchronous render work alone (state set -> grid painted), p50/p95; how
  often the trajectories' layer marker already shows the new layer when that task
  ends; and for real arrow-key presses on the slider, how many were painted in the
  very next frame (Event Timing): 60 ms apart (a key held down), then half as many
  230 ms apart (stepping through layers, the kernel told of each after a pause),
  beside the same for a bare range input added to the same page (the floor the page
  and the machine allow in that minute), the held keys and the bare ones in alternating
  blocks; with the machine's load (CPU busy, steal, pressure) over the held keys and
  over the kernel-served class changes, and Chromium's CPU time per held key (all its
  processes, idle time in the blocks included) beside the bare input's;
* the first class change after opening (the logits table still on its way for large
  models), and first paint: from running the cell (kernel warm) to the painted grid.

After those two, the notebook leaves edit mode (Escape), as it does when a user first clicks or
tabs into the explorer; ``--edit-mode`` keeps the new cell's editor focused and its cursor blinking.

``--no-quiet-requests`` measures the same with the server extension's quiet requests off (the page then
gets the kernel's busy status of every widget request, as without the extension);
``--no-busy-favicon`` with JupyterLab's busy-favicon plugin disabled, and
``--untracked-comm-msg`` with ``comm_msg`` added to the server's ``untracked_message_types`` (the
page then ignores the kernel's busy/idle status around widget messages: what that handling costs).
``--tree PATH`` measures another checkout of the package (e.g. the previous main in a
git worktree) with the same script, for side-by-side figures: the kernel imports that
checkout and its bundle; the page-side probes below work with both explorers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "browser"))
from jupyter import CHROMIUM, CHROMIUM_ARGS, running_lab, write_notebook

FAVICON_PLUGIN = "@jupyterlab/application-extension:faviconbusy"
MODELS = {
    "demo": "lens = vl.Lens.demo()\nimages = vl.data.shapes(2, seed=2).images",
    "vit_base_patch16_224": (
        "import numpy as np, torch\ntorch.manual_seed(0)\n"
        "lens = vl.Lens.from_timm('vit_base_patch16_224', pretrained=False)\n"
        "images = [np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)]"
    ),
}

# A user's pause before each class change, so that a change does not also measure the
# trailing work of the previous one (the kernel redrawing the trajectories). The kernel-served
# changes are also measured back to back (no pause), as when typing quickly in the picker.
PAUSE_MS = 250

MEASURE_CLASS = """async ([cls, pause]) => {
  await new Promise(r => setTimeout(r, pause));
  const ui = document.querySelector('.vl-explorer').parentElement.__vlExplorer;
  if (ui.model.get('cls') === cls) return null;  // already shown: nothing would be painted
  const layer = ui.model.get('layer');
  const key = `${ui.model.get('image_index')}|${ui.model.get('site')}|${ui.model.get('metric')}|${cls}|${layer}`;
  const painted = new Promise(resolve => {
    const listener = (k) => { if (k === key) { ui.paintListeners.delete(listener); resolve(); } };
    ui.paintListeners.add(listener);
  });
  const start = performance.now();
  ui.setState('cls', cls);
  await painted;
  await new Promise(r => requestAnimationFrame(() => r()));
  return performance.now() - start;
}"""

# The bare round trip: a ping the kernel answers with a pong (no work, ~400 bytes each way).
MEASURE_PING = """async ([id, pause]) => {
  await new Promise(r => setTimeout(r, pause));
  const ui = document.querySelector('.vl-explorer').parentElement.__vlExplorer;
  if (ui.source) {
    const start = performance.now();
    await ui.source.ask({kind: 'ping'});
    return performance.now() - start;
  }
  return await new Promise(resolve => {  // the previous explorer: hand-rolled messages
    const start = performance.now();
    const handler = (content) => {
      if (content?.type === 'pong' && content.id === id) {
        ui.model.off('msg:custom', handler);
        resolve(performance.now() - start);
      }
    };
    ui.model.on('msg:custom', handler);
    ui.model.send({type: 'ping', id});
  });
}"""

MEASURE_LAYER = """async ([layer]) => {
  const ui = document.querySelector('.vl-explorer').parentElement.__vlExplorer;
  const start = performance.now();
  ui.setState('layer', layer);
  await Promise.resolve();  // the view redraws in a microtask of the same task
  const marker = document.querySelector('.vl-explorer .vl-marker');
  const markerFollows = !!marker && marker.dataset.layer === String(layer);
  await new Promise(r => requestAnimationFrame(() => r()));
  return [performance.now() - start, markerFollows];
}"""

# The synchronous work of a layer change (state set -> grid painted), without waiting for the frame.
MEASURE_LAYER_RENDER = """async ([layer]) => {
  const ui = document.querySelector('.vl-explorer').parentElement.__vlExplorer;
  await new Promise(r => requestAnimationFrame(() => r()));
  const start = performance.now();
  ui.setState('layer', layer);
  return performance.now() - start;
}"""

LATENCIES = "() => document.querySelector('.vl-explorer').parentElement.__vlExplorer.store.latencies.slice()"

# Page-side probes that read both this explorer and the previous one (store keys and fields differ).
TABLE_HELD = """(ui) => {
  const [image, site] = [ui.model.get('image_index'), ui.model.get('site')];
  return ui.store.hasTable ? ui.store.hasTable(image, site) : ui.store.tables.has(`${image}|${site}`);
}"""

STATE = f"""() => {{
  const ui = document.querySelector('.vl-explorer').parentElement.__vlExplorer;
  const [image, site, metric] = [ui.model.get('image_index'), ui.model.get('site'), ui.model.get('metric')];
  const cached = (c) => ui.store.cache.has(`${{image}}|now|${{site}}|${{metric}}|${{c}}`)
    || ui.store.cache.has(`${{image}}|${{site}}|${{metric}}|${{c}}`);
  return {{depth: ui.model.get('token_layout').depth, n: ui.model.get('class_names').length, cls: ui.model.get('cls'),
          table: ({TABLE_HELD})(ui), cached: Array.from({{length: ui.model.get('class_names').length}}, (_, c) => cached(c))}};
}}"""

# The view asks for the site's logits table after the first paint; wait until it holds it.
TABLE_ARRIVED = f"() => ({TABLE_HELD})(document.querySelector('.vl-explorer').parentElement.__vlExplorer)"

# The kernel-served measures are over: let the view fetch its logits table again.
TABLES_AGAIN = """() => {
  const ui = document.querySelector('.vl-explorer').parentElement.__vlExplorer;
  ui.store.tablesUnavailable = false;
  ui.render();
}"""

# CSS animations running in the page. After running a cell, the new cell's editor blinks its cursor until
# focus leaves it; while it does, a change waits for the next tick of the page's frames (measured in
# docs/benchmarks.md, session 12), so the measures run in command mode, as once a user clicks the explorer.
RUNNING_ANIMATIONS = "() => document.getAnimations().filter(a => a.playState === 'running').length"

# Force every further class to come from the kernel: no logits table, nothing cached.
NO_TABLES = """() => {
  const ui = document.querySelector('.vl-explorer').parentElement.__vlExplorer;
  if (ui.store.disableTables) ui.store.disableTables(); else ui.store.tablesUnavailable = true;
  ui.store.clear();
}"""


def percentiles(values: list[float]) -> str:
    values = sorted(values)
    p95 = values[min(len(values) - 1, round(0.95 * (len(values) - 1)))]
    return f"p50 {statistics.median(values):6.1f}  p95 {p95:6.1f}"


def run_cell(page, index: int) -> None:
    page.locator(".jp-Cell").nth(index).click()
    page.keyboard.press("Shift+Enter")


def open_and_run_setup(page, url: str) -> None:
    """Open the notebook at ``url`` and run its first cell (the model and images), until it is done."""
    page.goto(url)
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
    page.wait_for_timeout(2000)
    run_cell(page, 0)
    page.wait_for_function(
        "() => document.querySelector('.jp-Cell .jp-InputArea-prompt')?.textContent.includes('[1]')",
        timeout=300_000,
    )


# Event Timing reports an input event's time to the next paint (in steps of 8 ms) when it is at
# least 16 ms: 16 means painted in the next frame, 24 or more that a frame went by without it.
OBSERVE_EVENTS = """() => {
  window.__vlEvents = [];
  new PerformanceObserver(list => {
    for (const e of list.getEntries()) if (e.name === 'keydown') window.__vlEvents.push(e.duration);
  }).observe({type: 'event', durationThreshold: 16});
}"""


# A plain range input with no listeners, put beside the explorer in the same output: its arrow keys
# measure the page's own floor (JupyterLab's frame, the machine's load) in the same minute.
ADD_BARE_SLIDER = """() => {
  const slider = document.createElement('input');
  Object.assign(slider, {type: 'range', min: 0, max: 12, id: 'vl-bench-bare'});
  slider.setAttribute('aria-label', 'Bare slider');
  slider.setAttribute('data-lm-suppress-shortcuts', 'true');
  slider.addEventListener('keydown', (e) => e.stopPropagation());
  document.querySelector('.vl-explorer').before(slider);
}"""


def arrow_key(i: int) -> str:
    """The ``i``-th press of a run on a slider: four left, four right, and so on (it stays mid-range)."""
    return "ArrowLeft" if (i // 4) % 2 == 0 else "ArrowRight"


def arrow_keys(page, slider, presses: int, pause_ms: int = 60, start: int = 0) -> int:
    """Real arrow-key presses on ``slider``, ``pause_ms`` apart: how many were painted in the next frame.

    ``start`` continues the direction pattern (four left, four right) of an earlier block of presses.
    """
    page.evaluate("() => { window.__vlEvents = []; }")
    slider.focus()
    page.wait_for_timeout(200)  # the focus ring's frame: not in the first press's way
    for i in range(start, start + presses):
        page.keyboard.press(arrow_key(i))
        page.wait_for_timeout(pause_ms)
    page.wait_for_timeout(500)
    return presses - sum(d > 16 for d in page.evaluate("() => window.__vlEvents"))


# Stepping through layers a key at a time, looking at each: the view tells the kernel the layer after each
# pause (SETTLE_MS, 200 ms), so the kernel's answer comes about when the next key does.
STEP_MS = 230
# The explorer's presses and the bare input's alternate in blocks of this many, so both see the same minutes.
KEY_BLOCK = 20


class MachineLoad:
    """CPU use over an interval, from /proc (Linux): how busy the CPUs were, how much time the
    hypervisor gave to other machines (steal), and how often a task here waited for a CPU (pressure)."""

    def __init__(self) -> None:
        self.start = self._sample()

    @staticmethod
    def _sample() -> tuple[list[int], float]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        try:
            some = Path("/proc/pressure/cpu").read_text().split("\n")[0]
            stalled = float(some.rsplit("total=", 1)[1]) / 1e6  # seconds
        except (OSError, IndexError, ValueError):
            stalled = float("nan")
        return fields, stalled

    def report(self) -> str:
        (before, stalled_before), (after, stalled_after) = self.start, self._sample()
        ticks = [b - a for a, b in zip(before, after)]
        total = sum(ticks[:8]) or 1
        idle = ticks[3] + ticks[4]  # idle, iowait
        steal = ticks[7]
        seconds = total / os.sysconf("SC_CLK_TCK") / (os.cpu_count() or 1)
        pressure = (stalled_after - stalled_before) / max(seconds, 1e-9)
        return f"cpu busy {100 * (total - idle - steal) / total:.0f} %, steal {100 * steal / total:.0f} %, pressure {100 * pressure:.0f} %"


def chromium_cpu_ms() -> float:
    """CPU time (user + system, ms) of every Chromium process on this machine: the browser, its renderers
    and its GPU process (software drawing here)."""
    total = 0
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "comm").read_text().strip() == "chromium":
                fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
    return total * 1000 / os.sysconf("SC_CLK_TCK")


def keyboard_layer_changes(page, presses: int) -> dict[str, str]:
    """Arrow keys on the Layer slider, held down and stepped, and on a bare range input in the same page
    (the floor), in alternating blocks so that both see the same load."""
    page.evaluate(OBSERVE_EVENTS)
    page.evaluate(ADD_BARE_SLIDER)
    slider, bare_slider = page.get_by_role("slider", name="Layer"), page.locator("#vl-bench-bare")
    load = MachineLoad()
    held, bare = [], []
    cpu = {"held": 0.0, "bare": 0.0}  # Chromium's CPU time over each kind of block
    for start in range(0, presses, KEY_BLOCK):
        block = min(KEY_BLOCK, presses - start)
        for kind, target, counts in (("held", slider, held), ("bare", bare_slider, bare)):
            before = chromium_cpu_ms()
            counts.append(arrow_keys(page, target, block, start=start))
            cpu[kind] += chromium_cpu_ms() - before
    held_load = load.report()
    stepped = arrow_keys(page, slider, presses // 2, STEP_MS)
    return {
        "layer, arrow keys": f"{sum(held)} of {presses} in the next frame (blocks: {', '.join(map(str, held))})",
        "layer, stepped keys": f"{stepped} of {presses // 2} in the next frame",
        "bare slider, keys": f"{sum(bare)} of {presses} in the next frame (blocks: {', '.join(map(str, bare))})",
        "load, held keys": held_load,
        "chromium CPU, held": f"{cpu['held'] / presses:.1f} ms per key (bare input {cpu['bare'] / presses:.1f})",
    }


def class_changes(page, candidates: list[int], repeats: int, pause_ms: int) -> list[float]:
    """Change to each of ``candidates`` in turn (skipping the class already shown), ``repeats`` times."""
    times: list[float] = []
    i = 0
    while candidates and len(times) < repeats and i < 4 * repeats:
        elapsed = page.evaluate(MEASURE_CLASS, [candidates[i % len(candidates)], pause_ms])
        if elapsed is not None:
            times.append(elapsed)
        i += 1
    return times


def kernel_served(page, n_classes: int, repeats: int, pause_ms: int) -> list[float]:
    """Class changes that must come from the kernel (no logits table, nothing cached)."""
    times = []
    for i in range(repeats):
        page.evaluate(NO_TABLES)
        current = page.evaluate(
            "() => document.querySelector('.vl-explorer').parentElement.__vlExplorer.model.get('cls')"
        )
        times.append(page.evaluate(MEASURE_CLASS, [(current + 1 + i % (n_classes - 1)) % n_classes, pause_ms]))
    return times


def measure(browser, model: str, nodelay: bool, repeats: int, key_presses: int, edit_mode: bool) -> dict[str, str]:
    root = Path(tempfile.mkdtemp())
    setup = f"import vitlens_widgets as vl\n{MODELS[model]}\nlens.trace(images[0]);"
    write_notebook(root / "bench.ipynb", [setup, "explorer = vl.explore(lens, images)\nexplorer"])
    os.environ["VITLENS_TCP_NODELAY"] = "1" if nodelay else "0"
    with running_lab(root) as lab:
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        open_and_run_setup(page, lab.url("bench.ipynb"))
        started = time.perf_counter()
        run_cell(page, 1)
        page.wait_for_function(
            "() => { const e = document.querySelector('.vl-explorer'); return e && e.parentElement.__vlExplorer.lastPaint.at > 0; }",
            timeout=300_000,
        )
        first_paint = (time.perf_counter() - started) * 1000
        state = page.evaluate(STATE)
        first_class = page.evaluate(MEASURE_CLASS, [(state["cls"] + 1) % state["n"], 0]) or float("nan")
        table_by_then = page.evaluate(TABLE_ARRIVED)
        if not edit_mode:
            page.keyboard.press("Escape")  # command mode, as a user's first click or tab into the explorer
        page.wait_for_timeout(1500)  # the editor's cursor fades out (a 1.2 s animation)
        animations = page.evaluate(RUNNING_ANIMATIONS)
        page.wait_for_function(TABLE_ARRIVED, timeout=60_000)
        page.wait_for_timeout(500)
        state = page.evaluate(STATE)
        cached = [c for c, hit in enumerate(state["cached"]) if hit and c != state["cls"]]
        derived = [c for c, hit in enumerate(state["cached"]) if not hit]
        prefetched = class_changes(page, cached, repeats, PAUSE_MS) if len(cached) > 1 else []
        from_table = class_changes(page, derived[:repeats], repeats, PAUSE_MS)
        before = page.evaluate(LATENCIES)
        load = MachineLoad()
        from_kernel = kernel_served(page, state["n"], repeats, PAUSE_MS)
        kernel_load = load.report()
        round_trips = page.evaluate(LATENCIES)[len(before) :]
        back_to_back = kernel_served(page, state["n"], repeats, 0)
        pings = [page.evaluate(MEASURE_PING, [1_000_000 + i, PAUSE_MS]) for i in range(repeats)]
        layer_runs = [page.evaluate(MEASURE_LAYER, [i % (state["depth"] + 1)]) for i in range(repeats)]
        layers = [elapsed for elapsed, _ in layer_runs]
        marker_follows = sum(follows for _, follows in layer_runs)
        renders = [page.evaluate(MEASURE_LAYER_RENDER, [(i + 1) % (state["depth"] + 1)]) for i in range(repeats)]
        page.evaluate(TABLES_AGAIN)  # keys with the logits table held, as once the explorer is open
        page.wait_for_function(TABLE_ARRIVED, timeout=60_000)
        page.wait_for_timeout(500)
        keyboard = keyboard_layer_changes(page, key_presses)
        page.close()
    return {
        "class (prefetched)": percentiles(prefetched) if prefetched else "n/a (nothing cached)",
        "class (logits table)": percentiles(from_table) if from_table else "n/a (every class prefetched)",
        "class (from kernel)": percentiles(from_kernel),
        "kernel round trip": percentiles(round_trips),
        "load, from kernel": kernel_load,
        "class (kernel, b2b)": percentiles(back_to_back),
        "bare round trip": percentiles(pings),
        "layer change": percentiles(layers),
        "layer render only": percentiles(renders),
        **keyboard,
        "marker in same task": f"{marker_follows} of {repeats}",
        "first class change": f"{first_class:6.1f} (logits table {'held' if table_by_then else 'still on its way'})",
        "page animations": f"{animations} running while measuring ({'edit' if edit_mode else 'command'} mode)",
        "first paint": f"{first_paint:6.0f}",
    }


def jupyter_config(no_busy_favicon: bool, untracked_comm_msg: bool) -> Path:
    """A Jupyter config folder with the settings the benchmark's options ask for."""
    root = Path(tempfile.mkdtemp())
    if no_busy_favicon:
        (root / "labconfig").mkdir()
        page = {"disabledExtensions": {FAVICON_PLUGIN: True}}
        (root / "labconfig" / "page_config.json").write_text(json.dumps(page))
    if untracked_comm_msg:
        from jupyter_server.services.kernels.kernelmanager import MappingKernelManager

        untracked = [*MappingKernelManager().untracked_message_types, "comm_msg"]
        server = {"MappingKernelManager": {"untracked_message_types": untracked}}
        (root / "jupyter_server_config.json").write_text(json.dumps(server))
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--key-presses", type=int, default=100, help="arrow-key presses on the Layer slider")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--tcp-nodelay", choices=["both", "on", "off"], default="both", help="server extension setting")
    parser.add_argument("--tree", type=Path, help="measure the vitlens_widgets of another checkout")
    parser.add_argument(
        "--no-quiet-requests",
        action="store_true",
        help="start the server with VITLENS_QUIET_REQUESTS=0 (the page gets every request's busy status)",
    )
    parser.add_argument(
        "--no-busy-favicon",
        action="store_true",
        help="disable JupyterLab's busy-favicon plugin (it repaints the tab icon on every kernel busy/idle)",
    )
    parser.add_argument(
        "--untracked-comm-msg",
        action="store_true",
        help="add comm_msg to the server's untracked_message_types (not a recommendation: see docs/benchmarks.md)",
    )
    parser.add_argument(
        "--edit-mode",
        action="store_true",
        help="leave the notebook in edit mode after running the cell (its editor's cursor blinks throughout)",
    )
    args = parser.parse_args()
    if args.no_quiet_requests:
        os.environ["VITLENS_QUIET_REQUESTS"] = "0"
    if args.tree:
        os.environ["PYTHONPATH"] = str(args.tree.resolve())  # the kernel imports that checkout's package
    if args.no_busy_favicon or args.untracked_comm_msg:
        os.environ["JUPYTER_CONFIG_PATH"] = str(jupyter_config(args.no_busy_favicon, args.untracked_comm_msg))
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        print(f"{'model':<22} {'TCP_NODELAY':<12} {'measure':<20} ms")
        for model in args.models:
            for nodelay in {"both": (True, False), "on": (True,), "off": (False,)}[args.tcp_nodelay]:
                results = measure(browser, model, nodelay, args.repeats, args.key_presses, args.edit_mode)
                for name, value in results.items():
                    print(f"{model:<22} {'on' if nodelay else 'off':<12} {name:<20} {value}", flush=True)
        browser.close()


if __name__ == "__main__":
    main()
