"""Memory of one student kernel with the explorer open, measured in a real JupyterLab page.

    .venv/bin/python benchmarks/kernel_memory.py [--models demo vit_base_patch16_224]

For each model it opens a notebook in JupyterLab (Debian Chromium via
Playwright), imports the package, opens the explorer on a three-image gallery,
visits every image, site and metric in the browser (so every projection the view
can ask for is computed) and turns the what-if perturbation on for every block in
turn, then reads the kernel's own ``/proc/self/smaps_rollup``:

* RSS: resident memory, shared libraries included;
* PSS: RSS with shared pages divided among the processes sharing them;
* USS: pages private to this kernel, i.e. what each extra student costs when the
  libraries (torch, timm, ...) are already in memory for another kernel. This
  script imports them itself first, as another student's kernel would on a hub,
  so that shared library pages are not counted as private.

It prints each figure after ``import vitlens_widgets``, with the explorer open after
that session ("explorer"), after the same session once more ("again": memory should
stay flat), after handing freed heap pages back to the system without forgetting anything
("trimmed": ``gc.collect()`` and glibc's ``malloc_trim``) and after ``explorer.clear_cache()``
("cleared"). ``--saved`` loads the
gallery from a file written by ``lens.save_traces`` instead of tracing it in the
kernel. ``--tree PATH`` measures another checkout of the package (e.g. an older
commit in a git worktree) with the same script, for side-by-side figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "browser"))
from jupyter import CHROMIUM, CHROMIUM_ARGS, running_lab, write_notebook

MODELS = {
    "demo": "lens = vl.Lens.demo()\nimages = vl.data.shapes(3, seed=2).images",
    "vit_base_patch16_224": (
        "import numpy as np, torch\ntorch.manual_seed(0)\n"
        "lens = vl.Lens.from_timm('vit_base_patch16_224', pretrained=False)\n"
        "images = list(np.random.default_rng(0).integers(0, 256, (3, 224, 224, 3), dtype=np.uint8))"
    ),
}

MEMORY_CELL = """import json
def kernel_memory():
    fields = {}
    for line in open('/proc/self/smaps_rollup'):
        parts = line.split()
        if len(parts) == 3 and parts[2] == 'kB':
            fields[parts[0].rstrip(':')] = int(parts[1]) / 1024
    return {'rss': fields['Rss'], 'pss': fields['Pss'], 'uss': fields['Private_Clean'] + fields['Private_Dirty']}
"""

VISIT_EVERYTHING = """async () => {
  const ui = document.querySelector('.vl-explorer').parentElement.__vlExplorer;
  const settle = () => new Promise(r => setTimeout(r, 400));
  for (let image = 0; image < ui.model.get('n_images'); image++) {
    ui.setState('image_index', image); await settle();
    for (const site of ['resid', 'attn', 'mlp'])
      for (const metric of ['identifiability', 'probability', 'logit']) {
        ui.setState('site', site); ui.setState('metric', metric); await settle();
      }
  }
  ui.setState('image_index', 0); ui.setState('site', 'resid'); ui.setState('metric', 'identifiability');
  await settle();
  for (let block = 1; block <= ui.model.get('token_layout').depth; block++) {
    ui.setState('perturb_blocks', [block]); ui.setState('attention', 'self_only'); await settle();
  }
  ui.setState('attention', ''); ui.setState('perturb_blocks', []);
  await settle();
}"""

# clear_cache() on the explorer (this package) or on the lens (older checkouts without it).
TRIM = "import ctypes, gc\ngc.collect()\nctypes.CDLL('libc.so.6').malloc_trim(0)\nafter_trim = kernel_memory()"
CLEAR = "import gc\n(explorer.clear_cache if hasattr(explorer, 'clear_cache') else lens.clear_cache)()\ngc.collect()"


def run_cell(page, index: int, count: int) -> None:
    page.locator(".jp-Cell").nth(index).click()
    page.keyboard.press("Shift+Enter")
    page.wait_for_function(
        f"() => document.querySelectorAll('.jp-Cell')[{index}].querySelector('.jp-InputArea-prompt')"
        f"?.textContent.includes('[{count}]')",
        timeout=300_000,
    )


def measure(browser, model: str, saved: bool) -> dict[str, dict[str, float]]:
    root = Path(tempfile.mkdtemp())
    out = root / "memory.json"
    gallery = ""
    if saved:
        gallery_file = root / "gallery.vltrace"
        prepare = f"import vitlens_widgets as vl\n{MODELS[model]}\nlens.save_traces(images, {str(gallery_file)!r})"
        exec(prepare, {})  # the instructor's step, outside the student kernel
        gallery = f"\nimages = lens.load_traces({str(gallery_file)!r})"
    cells = [
        f"{MEMORY_CELL}\nimport vitlens_widgets as vl, vitlens_widgets.widgets\nafter_import = kernel_memory()",
        f"{MODELS[model]}{gallery}\nexplorer = vl.explore(lens, images)\nexplorer",
        "after_session = kernel_memory()",
        "after_again = kernel_memory()",
        TRIM,
        f"{CLEAR}\nstages = {{'import': after_import, 'explorer': after_session, 'again': after_again, "
        "'trimmed': after_trim, 'cleared': kernel_memory()}\n"
        f"json.dump(stages, open({str(out)!r}, 'w'))",
    ]
    write_notebook(root / "memory.ipynb", cells)
    with running_lab(root) as lab:
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(lab.url("memory.ipynb"))
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
        page.wait_for_timeout(2000)
        run_cell(page, 0, 1)
        run_cell(page, 1, 2)
        page.wait_for_function(
            "() => { const e = document.querySelector('.vl-explorer'); return e && e.parentElement.__vlExplorer.lastPaint.at > 0; }",
            timeout=300_000,
        )
        page.evaluate(VISIT_EVERYTHING)
        run_cell(page, 2, 3)
        page.evaluate(VISIT_EVERYTHING)
        run_cell(page, 3, 4)
        run_cell(page, 4, 5)
        run_cell(page, 5, 6)
        page.close()
    return json.loads(out.read_text())


def main() -> None:
    import vitlens_widgets.widgets  # noqa: F401  (the libraries' pages, shared as on a hub)

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--saved", action="store_true", help="load the gallery with lens.load_traces")
    parser.add_argument("--tree", type=Path, help="measure the vitlens_widgets of another checkout")
    args = parser.parse_args()
    if args.tree:
        os.environ["PYTHONPATH"] = str(args.tree.resolve())  # the kernel imports that checkout's package
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        print(f"{'model':<22} {'stage':<10} {'RSS MiB':>8} {'PSS MiB':>8} {'USS MiB':>8}")
        for model in args.models:
            for stage, memory in measure(browser, model, args.saved).items():
                print(
                    f"{model:<22} {stage:<10} {memory['rss']:8.0f} {memory['pss']:8.0f} {memory['uss']:8.0f}",
                    flush=True,
                )
        browser.close()


if __name__ == "__main__":
    main()
