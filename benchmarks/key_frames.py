"""Where a held arrow key's frame goes: Chromium's rendering pipeline per key press, on the explorer's
Layer slider and on a bare range input in the same JupyterLab page.

    .venv/bin/python benchmarks/key_frames.py [--model demo] [--rounds 2] [--presses 60] [--hover] [--layerize]
        [--variant NAME=CSS ...] [--tree PATH]

``benchmarks/explorer.py`` counts how many held keys are painted in the next frame; this script shows
where the others lose it. It records a Chrome trace of real arrow-key presses, 60 ms apart, and prints
for each kind of block the median of each stage of the frame that showed a press (ms):

* handler: the keydown's dispatch (the explorer redraws grid, panels and trajectories in it);
* main frame: begin-main-frame to commit, and within it style, layout, paint and commit;
* raster: commit to activation (the raster workers);
* draw: the display compositor drawing the frame (in software here: no GPU), and the quads it drew;
* duration: Event Timing's input to presentation, p50 and p90, and how many presses were late (over
  16 ms as Event Timing rounds it: a frame went by without them);
* with ``--hover``, the pointer rests on a patch throughout (the hover panel then follows every key);
* with ``--layerize``: how many times per press the page was re-layerized
  (``PaintArtifactCompositor::Update``, 1–1.5 ms each on JupyterLab's page; the bare input: none).

Each ``--variant NAME=CSS`` adds a block with that CSS in the page (for example hiding a part of the
explorer, to see what it costs a frame). Blocks alternate within a round, so all see the same minutes.
``--tree PATH`` measures another checkout of the package (as in explorer.py). Tracing adds its own
cost to every stage: compare blocks and runs of this script, not with explorer.py's counts.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import statistics
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from explorer import ADD_BARE_SLIDER, MODELS, TABLE_ARRIVED, arrow_key, open_and_run_setup, run_cell

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "browser"))
from jupyter import CHROMIUM, CHROMIUM_ARGS, running_lab, write_notebook

CATEGORIES = ["devtools.timeline", "disabled-by-default-devtools.timeline", "cc", "viz", "benchmark"]
LAYERIZE_CATEGORY = "blink"  # PaintArtifactCompositor::Update; traced only with --layerize (it costs)
FRAME_STAGES = {
    "main frame": "SendBeginMainFrameToCommit",
    "raster": "EndCommitToActivation",
    "draw": "StartDrawToSwapStart",
}
MAIN_FRAME_PARTS = {
    "style": "style_update_us",
    "layout": "layout_update_us",
    "paint": "paint_us",
    "commit": "composite_commit_us",
}
USE_CSS = """(css) => {
  document.getElementById('vl-key-frames-variant')?.remove();
  const style = Object.assign(document.createElement('style'), {id: 'vl-key-frames-variant', textContent: css});
  document.head.append(style);
}"""


def open_explorer(page, url: str) -> None:
    """Run the notebook's two cells and wait until the explorer holds its logits table."""
    open_and_run_setup(page, url)
    run_cell(page, 1)
    page.wait_for_selector(".vl-explorer", timeout=300_000)
    page.wait_for_function(TABLE_ARRIVED, timeout=300_000)
    page.keyboard.press("Escape")  # command mode: no blinking editor cursor (see explorer.py)
    page.wait_for_timeout(1500)


def trace_keys(browser, page, slider, presses: int, path: Path) -> None:
    """Press the arrow keys on ``slider`` (as explorer.py does) while Chrome records a trace."""
    slider.focus()
    page.wait_for_timeout(300)
    browser.start_tracing(page=page, path=str(path), categories=CATEGORIES)
    for i in range(presses):
        page.keyboard.press(arrow_key(i))
        page.wait_for_timeout(60)
    page.wait_for_timeout(400)
    browser.stop_tracing()


def presented_frames(events: list[dict], renderer: int) -> list[dict]:
    """The renderer's presented frames, each with its end time and its stages' durations (ms)."""
    spans: dict[str, list[dict]] = defaultdict(list)
    for e in events:
        if e.get("pid") == renderer and e.get("ph") in "be" and "benchmark" in e.get("cat", ""):
            spans[str(e.get("id2") or e.get("id"))].append(e)
    frames = []
    for span in spans.values():
        span.sort(key=lambda e: (e["ts"], e["ph"] == "b"))
        frame, opened = None, {}
        for e in span:
            if e["name"] == "PipelineReporter":
                if e["ph"] == "b":
                    frame, opened = {"state": e["args"]["frame_reporter"]["state"], "stages": {}}, {}
                elif frame is not None:
                    frame["end"] = e["ts"]
                    frames.append(frame)
                    frame = None
            elif frame is not None and e["ph"] == "b":
                opened[e["name"]] = e["ts"]
                if e["name"] == FRAME_STAGES["main frame"]:
                    frame["main frame parts"] = e["args"].get("send_begin_mainframe_to_commit_breakdown", {})
            elif frame is not None and e["name"] in opened:
                frame["stages"][e["name"]] = (e["ts"] - opened[e["name"]]) / 1000
    shown = [f for f in frames if f["state"].startswith("STATE_PRESENTED")]
    return sorted(shown, key=lambda f: f["end"])


def key_pipeline(path: Path) -> dict[str, float]:
    """Median stage times of the frames that showed each keydown in the trace at ``path``."""
    trace = json.loads(path.read_text())
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    threads = {(e["pid"], e["tid"]): e["args"]["name"] for e in events if e.get("name") == "thread_name"}
    renderer = next(pid for (pid, _), name in threads.items() if name == "CrRendererMain")
    keys = [
        e["args"]["data"] | {"ts": e["ts"]}
        for e in events
        if e["name"] == "EventTiming" and e["ph"] == "b" and e["args"]["data"].get("type") == "keydown"
    ]
    frames = presented_frames(events, renderer)
    ends = [f["end"] for f in frames]
    draws = [e for e in events if e["name"] == "Graphics.Pipeline.Draw" and e["ph"] == "b"]
    quads = sum(e["name"] == "SoftwareRenderer::DoDrawQuad" for e in events)
    layerized = sum(e["name"] == "PaintArtifactCompositor::Update" and e.get("ph") in "BX" for e in events)
    stages: dict[str, list[float]] = defaultdict(list)
    for key in keys:
        handled = key["ts"] + (key["processingEnd"] - key["timeStamp"]) * 1000  # trace clock, µs
        stages["handler"].append(key["processingEnd"] - key["processingStart"])
        i = bisect.bisect_left(ends, handled)  # the first frame presented after the handler ran
        if i == len(frames):
            continue
        for label, stage in FRAME_STAGES.items():
            stages[label].append(frames[i]["stages"].get(stage, 0.0))
        parts = frames[i].get("main frame parts", {})
        for label, field in MAIN_FRAME_PARTS.items():
            if field in parts:
                stages[label].append(parts[field] / 1000)
    durations = sorted(key["duration"] for key in keys)
    summary = {label: statistics.median(values) for label, values in stages.items() if values}
    summary["quads per draw"] = quads / max(1, len(draws))
    summary["duration p50"] = statistics.median(durations) if durations else float("nan")
    summary["duration p90"] = durations[int(0.9 * len(durations))] if durations else float("nan")
    summary["late"] = sum(round(d / 8) * 8 > 16 for d in durations)
    summary["presses"] = len(durations)
    summary["re-layerized per press"] = layerized / max(1, len(durations))
    return summary


def report(name: str, round_: int, s: dict[str, float]) -> str:
    main = " ".join(f"{part} {s.get(part, float('nan')):.2f}" for part in MAIN_FRAME_PARTS)
    return (
        f"{name:<12} round {round_}  late {s['late']:.0f}/{s['presses']:.0f}  "
        f"duration {s['duration p50']:.1f} / {s['duration p90']:.1f}  handler {s.get('handler', 0):.2f}  "
        f"main frame {s.get('main frame', 0):.2f} ({main})  raster {s.get('raster', 0):.2f}  "
        f"draw {s.get('draw', 0):.2f} ({s['quads per draw']:.0f} quads)"
        + (f"  re-layerized {s['re-layerized per press']:.2f}/press" if LAYERIZE_CATEGORY in CATEGORIES else "")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=list(MODELS), default="demo")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--presses", type=int, default=60, help="arrow-key presses per block")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=CSS", help="a block with this CSS")
    parser.add_argument("--tree", type=Path, help="measure the vitlens_widgets of another checkout")
    parser.add_argument("--layerize", action="store_true", help="also count the page's re-layerizations")
    parser.add_argument("--hover", action="store_true", help="the pointer rests on a patch while keys are pressed")
    args = parser.parse_args()
    if args.layerize:
        CATEGORIES.append(LAYERIZE_CATEGORY)
    if args.tree:
        os.environ["PYTHONPATH"] = str(args.tree.resolve())  # the kernel imports that checkout's package
    variants = {"explorer": "", **dict(v.split("=", 1) for v in args.variant), "bare input": ""}
    from playwright.sync_api import sync_playwright

    root = Path(tempfile.mkdtemp())
    setup = f"import vitlens_widgets as vl\n{MODELS[args.model]}\nlens.trace(images[0]);"
    write_notebook(root / "keys.ipynb", [setup, "explorer = vl.explore(lens, images)\nexplorer"])
    with sync_playwright() as p, running_lab(root) as lab:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        open_explorer(page, lab.url("keys.ipynb"))
        page.evaluate(ADD_BARE_SLIDER)
        if args.hover:
            cells = page.locator(".vl-explorer .vl-patches [role=gridcell]")
            cells.nth(cells.count() // 2).hover()
            page.wait_for_timeout(1000)  # the kernel's memories for that token
        sliders = {"bare input": page.locator("#vl-bench-bare")}
        for round_ in range(args.rounds):
            for name, css in variants.items():
                page.evaluate(USE_CSS, css)
                path = root / f"{name}-{round_}.json"
                trace_keys(
                    browser, page, sliders.get(name, page.get_by_role("slider", name="Layer")), args.presses, path
                )
                print(report(name, round_, key_pipeline(path)), flush=True)
        browser.close()


if __name__ == "__main__":
    main()
