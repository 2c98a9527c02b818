"""The explorer in a real JupyterLab and a real Chromium, and its exported page without a kernel."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from .jupyter import (
    CHROMIUM,
    SHOWN_HEAT_PIXELS,
    SNAPSHOT,
    chromium_available,
    running_lab,
    write_notebook,
    ws_message,
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not chromium_available(), reason=f"needs Debian's chromium at {CHROMIUM} (scripts/test.sh installs it)"
    ),
]

NOTEBOOK_CELL = """\
import vitlens_widgets as vl
lens = vl.Lens.demo()
images = vl.data.shapes(3, seed=2).images
explorer = vl.explore(lens, images)
explorer"""

# The kernel answers the view in a thread of its own (JupyterLab sends widget messages to a
# subshell), so a busy cell does not delay it; a slow answer is made slow in the service itself.
SLOW_ANSWERS = """\
import time
answer = explorer.service.answer
def slowly(content):
    time.sleep(1.0 if content.get("kind") == "slices" else 0)
    return answer(content)
explorer.service.answer = slowly"""
QUICK_ANSWERS = "explorer.service.answer = answer"
# Names as long as ImageNet's ("cabbage butterfly", "Irish water spaniel"), and back.
LONG_NAMES = (
    "short_names = explorer.class_names\nexplorer.class_names = [f'{n} of a rather long name' for n in short_names]"
)
SHORT_NAMES = "explorer.class_names = short_names"


# The kernel websocket's frames of the module's page, both ways: ("sent" | "received", payload).
WEBSOCKET_FRAMES: list[tuple[str, str | bytes]] = []


def record_kernel_frames(ws) -> None:
    if "/api/kernels/" in ws.url:
        ws.on("framesent", lambda payload: WEBSOCKET_FRAMES.append(("sent", payload)))
        ws.on("framereceived", lambda payload: WEBSOCKET_FRAMES.append(("received", payload)))


@pytest.fixture(scope="module")
def lab_page(browser, tmp_path_factory):
    root = tmp_path_factory.mktemp("lab")
    cells = [NOTEBOOK_CELL, SLOW_ANSWERS, QUICK_ANSWERS, LONG_NAMES, SHORT_NAMES]  # kernel death: test_hosts.py
    write_notebook(root / "explore.ipynb", cells)
    settings = [f"--LabApp.user_settings_dir={root / 'settings'}", f"--LabApp.workspaces_dir={root / 'workspaces'}"]
    with running_lab(root, settings) as lab:  # a theme the tests choose stays in this server's settings
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("websocket", record_kernel_frames)
        page.goto(lab.url("explore.ipynb"))
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator, #jp-main-statusbar", timeout=60_000)
        page.wait_for_timeout(1500)  # kernel connection settles
        page.locator(".jp-Cell").first.click()
        page.keyboard.press("Shift+Enter")
        page.wait_for_selector(".vl-explorer canvas.vl-heat", state="attached", timeout=180_000)
        page.wait_for_function("() => !document.querySelector('.vl-explorer').classList.contains('vl-loading')")
        page.wait_for_selector(".vl-trajectories polyline.vl-series", timeout=60_000)
        yield page, errors
        page.close()


def pixels(page) -> list[int]:
    return page.locator(".vl-explorer canvas.vl-heat").evaluate(SHOWN_HEAT_PIXELS)


def test_grid_renders_pixels_and_accessible_controls(lab_page):
    page, _ = lab_page
    data = pixels(page)
    alphas = data[3::4]
    assert len(alphas) == 64 and min(alphas) > 0  # every patch of the 8x8 grid painted
    assert len(set(zip(data[0::4], data[1::4], data[2::4], strict=True))) >= 2  # not a flat colour
    assert page.get_by_role("grid", name="Tokens").get_by_role("gridcell").count() == 65
    for role, name in [("slider", "Layer"), ("combobox", "Class"), ("radiogroup", "Site"), ("radiogroup", "Metric")]:
        assert page.get_by_role(role, name=name).count() == 1


def test_static_snapshot_is_hidden_while_the_widget_is_live(lab_page):
    page, _ = lab_page
    snapshot = page.locator(SNAPSHOT)
    assert snapshot.count() == 1  # it is in the output, for viewers without a kernel...
    assert snapshot.evaluate("img => img.src.startsWith('data:image/png;base64,')")
    assert not snapshot.is_visible()  # ...but the live widget's stylesheet hides it


def test_screenshot_for_the_readme(lab_page):
    """With VITLENS_UPDATE_SCREENSHOT=1, refresh docs/explorer.png from the live page."""
    page, _ = lab_page
    target = Path(__file__).parents[2] / "docs" / "explorer.png"
    if os.environ.get("VITLENS_UPDATE_SCREENSHOT") != "1":
        pytest.skip("set VITLENS_UPDATE_SCREENSHOT=1 to refresh the README screenshot")
    news = page.locator(".jp-toast-button", has_text="No")
    if news.count():
        news.first.click()  # JupyterLab's "get notified about news?" toast would cover the plot
        page.wait_for_timeout(800)
    page.get_by_role("gridcell", name="patch row 4, column 4").hover()
    cell = page.locator(".jp-Cell").first
    target.parent.mkdir(exist_ok=True)
    cell.locator(".jp-OutputArea").screenshot(path=str(target))
    assert target.stat().st_size > 10_000


def test_moving_the_layer_slider_changes_the_heatmap(lab_page):
    page, _ = lab_page
    slider = page.get_by_role("slider", name="Layer")
    slider.focus()
    page.keyboard.press("End")
    before = pixels(page)
    page.keyboard.press("Home")
    page.wait_for_function("() => document.querySelector('.vl-layer-label').textContent.startsWith('0')")
    assert pixels(page) != before


LINE_POINTS = "ps => ps.map(p => p.getAttribute('points'))"
MARKER_AND_LAYER = """() => {
  const root = document.querySelector('.vl-explorer');
  return {marker: root.querySelector('.vl-marker').dataset.layer, label: root.querySelector('.vl-layer-label').textContent};
}"""


def test_the_trajectory_marker_follows_the_layer_in_the_same_frame(lab_page):
    page, _ = lab_page
    slider = page.get_by_role("slider", name="Layer")
    slider.focus()
    for key in ("End", "Home", "ArrowRight", "ArrowRight"):
        page.keyboard.press(key)
        shown = page.evaluate(MARKER_AND_LAYER)  # read in the task after the key: no wait, no kernel
        assert shown["label"].startswith(shown["marker"])
    assert page.evaluate(MARKER_AND_LAYER)["marker"] == "2"


def test_typing_a_class_name_changes_the_grid_and_the_trajectories(lab_page):
    page, _ = lab_page
    title = page.locator(".vl-traj-title")
    before = title.text_content()
    grid_before = pixels(page)
    lines_before = page.locator(".vl-trajectories polyline").evaluate_all(LINE_POINTS)
    target = "crescent" if "crescent" not in before else "heart"
    picker = page.get_by_role("combobox", name="Class")
    picker.click()
    picker.fill(target[:4])
    page.get_by_role("option", name=target).wait_for()
    page.keyboard.press("Enter")
    page.wait_for_function(f"() => document.querySelector('.vl-traj-title').textContent.includes(\"'{target}'\")")
    lines_after = page.locator(".vl-trajectories polyline").evaluate_all(LINE_POINTS)
    assert lines_after != lines_before and pixels(page) != grid_before


DERIVED_VS_KERNEL = """async () => {
  const ui = document.querySelector('.vl-explorer').parentElement.__vlExplorer;
  const q = {image: ui.model.get('image_index'), site: ui.model.get('site'), metric: ui.model.get('metric')};
  const classes = ui.model.get('class_names').map((_, c) => c);
  const derived = classes.map(cls => ui.store.get({...q, cls}));
  const [reply, buffers] = await ui.source.ask({kind: 'slices', ...q, classes});
  const b = buffers[0];
  const kernel = new Float32Array(b.buffer ? b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) : b);
  const size = reply.rows * reply.tokens;
  const same = (a, k) => a.every((v, i) => v === k[i] || (Number.isNaN(v) && Number.isNaN(k[i])));
  return {derived: derived.filter(Boolean).length, equal: derived.every((d, c) => same(d, kernel.subarray(c * size, (c + 1) * size)))};
}"""

TABLE_HELD = """() => {
  const ui = document.querySelector('.vl-explorer').parentElement.__vlExplorer;
  return ui.store.hasTable(ui.model.get('image_index'), ui.model.get('site'));
}"""


def test_the_logits_table_reproduces_the_kernels_slices_in_the_browser(lab_page):
    page, _ = lab_page
    page.wait_for_function(TABLE_HELD)
    result = page.evaluate(DERIVED_VS_KERNEL)
    assert result["derived"] == 10 and result["equal"]


def test_clicking_a_cell_selects_it_and_adds_a_line(lab_page):
    page, _ = lab_page
    cell = page.get_by_role("gridcell", name="patch row 4, column 5")
    token = int(cell.get_attribute("data-token"))
    assert page.locator(f".vl-trajectories polyline[data-token='{token}']").count() == 0
    cell.click()
    assert cell.get_attribute("aria-selected") == "true"
    line = page.locator(f".vl-trajectories polyline[data-token='{token}']")
    assert line.count() == 1 and line.get_attribute("stroke") == "#ff7f0e"  # palette.json, first selected token
    cell.press("Enter")  # keyboard toggles it off again
    assert cell.get_attribute("aria-selected") == "false"


def test_keyboard_moves_through_the_grid_without_triggering_jupyterlab_shortcuts(lab_page):
    page, _ = lab_page
    cells = page.locator(".jp-Notebook .jp-Cell").count()
    first = page.get_by_role("gridcell", name="patch row 1, column 1")
    first.click()
    first.press("Enter")  # toggles the selection off again (the click selected it)
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowDown")
    focused = page.evaluate("() => document.activeElement.getAttribute('aria-label')")
    assert focused == "patch row 2, column 2"
    for key in ("a", "b", "d", "x", "m"):  # JupyterLab command-mode shortcuts
        page.keyboard.press(key)
    page.wait_for_timeout(300)
    assert page.locator(".jp-Notebook .jp-Cell").count() == cells
    assert page.locator(".jp-Notebook .jp-MarkdownCell").count() == 0  # "m" turned no cell to Markdown


def test_what_if_perturbations_retrace_live(lab_page):
    page, _ = lab_page
    page.get_by_text("What if…").click()
    page.get_by_role("radio", name="probability").check()  # continuous values: any change shows
    page.get_by_role("slider", name="Layer").focus()
    page.keyboard.press("End")  # the last block: perturbations do not touch the embeddings
    page.wait_for_timeout(300)
    before = pixels(page)
    page.get_by_role("radio", name="image tokens see only themselves").check()
    page.wait_for_function("() => document.querySelector('.vl-whatif').textContent.startsWith('Prediction')")
    page.wait_for_timeout(300)
    assert pixels(page) != before
    page.wait_for_selector(".vl-trajectories polyline.vl-baseline")  # the unperturbed lines, for comparison
    page.get_by_role("button", name="Remove tokens by clicking").click()
    cell = page.get_by_role("gridcell", name="patch row 1, column 1")
    cell.click()
    page.wait_for_function("() => document.querySelector('.vl-whatif').textContent.includes('1 token(s) removed')")
    assert "vl-removed" in cell.get_attribute("class")
    page.get_by_role("gridcell", name="patch row 5, column 5").hover()
    page.wait_for_function("() => document.querySelectorAll('.vl-memory-list li').length === 5")
    page.get_by_role("button", name="Reset").click()
    page.get_by_role("button", name="Remove tokens by clicking").click()  # back to selecting
    page.wait_for_function("() => document.querySelector('.vl-whatif').textContent === 'Unperturbed model.'")


def test_relevance_overlay_repaints_the_grid(lab_page):
    page, _ = lab_page
    page.get_by_role("radio", name="identifiability").check()
    before = pixels(page)
    page.get_by_role("radio", name="class space").check()
    page.wait_for_function("() => document.querySelector('.vl-legend').textContent.startsWith('relevance')")
    summed = pixels(page)
    assert summed != before
    page.get_by_role("checkbox", name="all blocks").uncheck()  # this layer's block only (relevance_blocks)
    page.wait_for_timeout(300)
    assert pixels(page) != summed
    page.get_by_role("checkbox", name="all blocks").check()
    page.wait_for_timeout(300)
    assert pixels(page) == summed
    page.get_by_role("radio", name="off").check()
    page.wait_for_function("() => !document.querySelector('.vl-legend').textContent.startsWith('relevance')")


def test_a_value_the_kernel_rejects_is_shown_and_undone(lab_page):
    page, _ = lab_page
    page.evaluate("() => document.querySelector('.vl-explorer').parentElement.__vlExplorer.set('image_index', 99)")
    status = page.locator(".vl-explorer .vl-status")
    status.wait_for(state="visible", timeout=20_000)
    assert "image_index must be 0..2" in status.text_content()
    page.wait_for_function(
        "() => document.querySelector('.vl-explorer').parentElement.__vlExplorer.model.get('image_index') === 0"
    )
    page.get_by_role("button", name="Next image").click()  # a valid change clears the message
    page.wait_for_function("() => document.querySelector('.vl-explorer .vl-status').hidden")
    version = "document.querySelector('.vl-explorer').parentElement.__vlExplorer.model.get('trace_version')"
    before = page.evaluate(f"() => {version}")
    page.get_by_role("button", name="Previous image").click()
    page.wait_for_function(f"() => {version} !== {before}")  # shown, with its class: the next test starts from it


UI = "document.querySelector('.vl-explorer').parentElement.__vlExplorer"

# A class change answered by the kernel: what the page shows in the task after the change, and in a
# microtask after the grid is painted with the answer.
QUICK_CLASS_CHANGE = f"""async () => {{
  const ui = {UI};
  const input = ui.root.querySelector('.vl-picker-input');
  let loadingSeen = false, selectionChanges = 0;
  const watch = new MutationObserver(() => {{ loadingSeen ||= ui.root.classList.contains('vl-loading'); }});
  watch.observe(ui.root, {{attributes: true, attributeFilter: ['class']}});
  const count = () => selectionChanges++;
  document.addEventListener('selectionchange', count);
  const names = ui.model.get('class_names');
  const cls = (ui.model.get('cls') + 1) % names.length;
  const before = input.value;
  const painted = new Promise(resolve => ui.paintListeners.add(function seen(key) {{
    if (key.split('|')[3] !== String(cls)) return;
    ui.paintListeners.delete(seen);
    queueMicrotask(() => resolve(input.value));
  }}));
  const start = performance.now();
  ui.set('cls', cls);
  await new Promise(r => setTimeout(r, 0));
  const held = input.value;
  const shown = await painted;
  const elapsed = performance.now() - start;
  await new Promise(r => setTimeout(r, 50));
  watch.disconnect();
  document.removeEventListener('selectionchange', count);
  return {{before, held, shown, expected: names[cls], loadingSeen, elapsed, selectionChanges}};
}}"""

HOLD_FRAME_MS = 150  # js/timing.ts


def test_a_change_keeps_the_frame_until_its_numbers_arrive(lab_page):
    page, _ = lab_page
    page.evaluate(f"() => {{ const ui = {UI}; ui.store.disableTables(); ui.store.clear(); }}")  # the kernel answers
    change = page.evaluate(QUICK_CLASS_CHANGE)
    assert change["held"] == change["before"] != change["expected"]  # nothing drawn before the answer...
    assert change["shown"] == change["expected"]  # ...then picker and grid in the same task
    if change["elapsed"] < HOLD_FRAME_MS:
        assert not change["loadingSeen"]  # a quick answer: no faded frame in between
    # the picker's value change is not the notebook editors' business
    assert change["selectionChanges"] == 0


def run_cell(page, index: int) -> None:
    page.locator(".jp-Cell").nth(index).click()
    page.keyboard.press("Shift+Enter")
    page.wait_for_function(
        f"() => /\\[\\d+\\]/.test(document.querySelectorAll('.jp-Cell .jp-InputArea-prompt')[{index}].textContent)"
    )


def test_a_slow_answer_shows_the_change_faded_until_it_arrives(lab_page):
    page, _ = lab_page
    page.evaluate(f"() => {{ const ui = {UI}; ui.store.disableTables(); ui.store.clear(); }}")
    run_cell(page, 1)  # slices take a second from now on
    try:
        name = page.evaluate(
            f"() => {{ const ui = {UI}; const c = (ui.model.get('cls') + 1) % 10; ui.set('cls', c); "
            "return ui.model.get('class_names')[c]; }"
        )
        loading = "() => document.querySelector('.vl-explorer').classList.contains('vl-loading')"
        # the change, faded; the view may already be faded for the class before it (a redraw since the
        # cache was cleared, e.g. the pointer crossing the grid on its way to the cell, asked the slow kernel)
        picked = f"() => document.querySelector('.vl-explorer [role=combobox]').value === {name!r}"
        page.wait_for_function(f"() => ({loading})() && ({picked})()", timeout=900)
        assert f"'{name}'" not in page.locator(".vl-traj-title").text_content()  # its numbers: not yet
        page.wait_for_function(f"() => !({loading})()", timeout=20_000)
        assert f"'{name}'" in page.locator(".vl-traj-title").text_content()
    finally:
        run_cell(page, 2)


REDRAW_MUTATIONS = f"""async () => {{
  const ui = {UI};
  const records = [];
  const describe = r => `${{r.type}} ${{r.attributeName ?? ''}} on ${{r.target.className || r.target.nodeName}}`;
  const watch = new MutationObserver(list => records.push(...list.map(describe)));
  watch.observe(ui.root, {{subtree: true, childList: true, attributes: true, characterData: true}});
  const heat = ui.root.querySelector('canvas.vl-heat').getContext('2d');  // a canvas write is no mutation
  heat.putImageData = () => records.push('canvas painted');
  ui.render();
  ui.render();
  await new Promise(r => setTimeout(r, 0));
  watch.disconnect();
  delete heat.putImageData;
  return records;
}}"""


def test_redrawing_an_unchanged_frame_writes_nothing_to_the_page(lab_page):
    page, _ = lab_page
    page.get_by_role("gridcell", name="patch row 2, column 3").hover()  # the hover panel shows a list
    page.wait_for_selector(".vl-hover-list li")
    assert page.evaluate(REDRAW_MUTATIONS) == []
    page.mouse.move(0, 0)
    assert page.evaluate(REDRAW_MUTATIONS) == []


LAYER_CHANGE_MUTATIONS = f"""async () => {{
  const ui = {UI};
  const records = [];
  const watch = new MutationObserver(list => records.push(...list.filter(r => r.type === 'childList')));
  watch.observe(ui.root, {{subtree: true, childList: true}});
  const titles = [];  // a title change restyles its element: a layer change should write none
  const watchTitles = new MutationObserver(list => titles.push(...list));
  watchTitles.observe(ui.root, {{subtree: true, attributeFilter: ['title']}});
  const heights = [];
  const charts = [];
  const chips = [];
  const hovers = [];
  const heat = ui.root.querySelector('canvas.vl-heat');
  for (let i = 0; i < 200 && !heat.hidden; i++) await new Promise(r => setTimeout(r, 10));  // the image took over
  const context = heat.getContext('2d');
  let canvasWrites = 0;  // a repainted canvas re-layerizes the page: layer changes move the image instead
  context.putImageData = () => canvasWrites++;
  const shown = [];
  for (const layer of ui.model.get('specs').sites[0].layers) {{
    ui.set('layer', layer);
    await new Promise(r => requestAnimationFrame(() => setTimeout(r, 0)));
    heights.push(ui.root.getBoundingClientRect().height);
    charts.push(ui.root.querySelector('svg.vl-trajectories').getBoundingClientRect().top);
    chips.push([...ui.root.querySelectorAll('.vl-chip:not([hidden])')].map(c => [c.ariaLabel, c.offsetTop, c.textContent]));
    hovers.push([...ui.root.querySelectorAll('.vl-hover-list li:not([hidden]) .vl-hover-name')].map(
      n => [n.textContent, n.scrollWidth <= n.clientWidth, getComputedStyle(n).overflow]));
    shown.push(({SHOWN_HEAT_PIXELS})(heat).join());
  }}
  delete context.putImageData;
  watch.disconnect();
  watchTitles.disconnect();
  const names = ui.model.get('class_names');
  return {{inserted: records.length, titles: titles.length, heights, charts, chips, hovers, names, canvasWrites, shown}};
}}"""


def test_a_layer_change_rewrites_the_panels_in_place_and_moves_nothing(lab_page):
    page, _ = lab_page
    run_cell(page, 3)  # long class names
    try:
        page.wait_for_function("() => document.querySelector('.vl-chip').ariaLabel.endsWith('long name')")
        page.get_by_role("gridcell", name="patch row 2, column 3").hover()  # the hover panel shows a list
        page.wait_for_selector(".vl-hover-list li")
        changes = page.evaluate(LAYER_CHANGE_MUTATIONS)
        assert changes["inserted"] == 0  # texts and bars rewritten, no element added or removed
        assert len(set(changes["heights"])) == 1  # nothing grows or shrinks
        assert len(set(changes["charts"])) == 1  # the trajectories never move
        assert changes["canvasWrites"] == 0 and len(set(changes["shown"])) > 1  # the heat map changed all the same
        assert {len(chips) for chips in changes["chips"]} == {5}
        shown = [chip for chips in changes["chips"] for chip in chips]
        assert all(name.endswith("long name") for name, _, _ in shown)  # the accessible name: all of it
        assert all(text.endswith("…") and name.startswith(text[:-1]) for name, _, text in shown)  # cut to fit
        assert {top for _, top, _ in shown} == {shown[0][1]}  # one line
        assert len({tuple(name for name, _, _ in chips) for chips in changes["chips"]}) > 1  # and they did change
        assert changes["titles"] == 0
        hovered = [name for names in changes["hovers"] for name in names]
        assert {len(names) for names in changes["hovers"]} == {5}
        assert {clip for _, _, clip in hovered} == {"visible"}  # no clip: cut in script, as the chips
        assert all(fits for _, fits, _ in hovered)
        cut = [text for text, _, _ in hovered if text not in changes["names"]]
        assert all(t.endswith("…") and any(n.startswith(t[:-1]) for n in changes["names"]) for t in cut)
        chip = page.locator(".vl-chip").nth(1)
        chip.hover()  # the tooltip: the full name, set when the pointer comes
        page.wait_for_function("(chip) => chip.title === chip.ariaLabel", arg=chip.element_handle())
        assert chip.get_attribute("title").endswith("long name")
    finally:
        page.mouse.move(0, 0)
        run_cell(page, 4)


CLASS_CHANGE_MUTATIONS = f"""async () => {{
  const ui = {UI};
  const svg = ui.root.querySelector('svg.vl-trajectories');
  const before = [...svg.querySelectorAll('polyline')];
  const points = before.map(p => p.getAttribute('points'));
  const records = [];
  const watch = new MutationObserver(list => records.push(...list.filter(r => r.type === 'childList')));
  watch.observe(svg, {{subtree: true, childList: true}});
  const names = ui.model.get('class_names');
  const cls = (ui.model.get('cls') + 1) % names.length;
  ui.set('cls', cls);
  const title = svg.querySelector('.vl-traj-title');
  for (let frames = 0; frames < 300 && !title.textContent.includes(`'${{names[cls]}}'`); frames++)
    await new Promise(r => requestAnimationFrame(() => r()));
  watch.disconnect();
  const after = [...svg.querySelectorAll('polyline')];
  return {{
    title: title.textContent.includes(`'${{names[cls]}}'`),
    inserted: records.length,
    same: after.length === before.length && after.every((p, i) => p === before[i]),
    redrawn: after.some((p, i) => p.getAttribute('points') !== points[i]),
  }};
}}"""


def test_a_class_change_rewrites_the_trajectories_in_place(lab_page):
    page, _ = lab_page
    changes = page.evaluate(CLASS_CHANGE_MUTATIONS)
    assert changes["title"] and changes["redrawn"]  # the new class's lines are drawn...
    assert changes["same"] and changes["inserted"] == 0  # ...into the same elements: no node joins or leaves


def set_theme(page, name: str) -> None:
    """Settings > Theme > ``name``, through JupyterLab's menus as a user picks it."""
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile("^Settings$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile("^Theme$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(f"^{re.escape(name)}$")).click()


def explorer_brightness(page) -> tuple[float, float]:
    """The explorer's text and background brightness, 0 (black) to 255 (white)."""
    style = page.locator(".vl-explorer").evaluate(
        "e => [getComputedStyle(e).color, getComputedStyle(e).backgroundColor]"
    )
    text, background = (sum(rgb(c)) / 3 for c in style)
    return text, background


def test_the_explorer_follows_jupyterlabs_theme(lab_page):
    page, _ = lab_page
    text, background = explorer_brightness(page)
    assert text < 80 and background > 200  # JupyterLab Light
    set_theme(page, "JupyterLab Dark")
    try:
        page.wait_for_function("() => document.body.dataset.jpThemeLight === 'false'")
        page.wait_for_timeout(500)  # the theme's stylesheet applies
        text, background = explorer_brightness(page)
        assert text > 150 and background < 80
    finally:
        set_theme(page, "JupyterLab Light")
        page.wait_for_function("() => document.body.dataset.jpThemeLight === 'true'")


def test_the_views_data_requests_never_make_the_page_see_the_kernel_busy(lab_page):
    """The view marks its requests quiet and the server extension keeps their busy status from the page:
    the page gets each reply and its idle, never its busy. The layer, told after a pause, is such a request,
    and the kernel sends it back as its own update; a trait change the kernel acts on still shows busy."""
    page, _ = lab_page
    WEBSOCKET_FRAMES.clear()
    layer = page.evaluate("""async () => {
      const ui = document.querySelector('.vl-explorer').parentElement.__vlExplorer;
      const image = ui.model.get('image_index');
      for (let cls = 0; cls < 3; cls++)
        await ui.source.ask({kind: 'slices', image, site: 'resid', metric: 'logit', classes: [cls]});
      await ui.source.ask({kind: 'ping'});
      const layer = ui.model.get('layer') === 0 ? 1 : 0;
      ui.set('layer', layer);  // told to the kernel after a pause
      await new Promise(r => setTimeout(r, 800));
      const all = ui.model.get('relevance_all_blocks');
      ui.set('relevance_all_blocks', !all);  // widget updates: the kernel acts on these
      ui.set('relevance_all_blocks', all);
      return layer;
    }""")
    page.wait_for_timeout(1500)
    sent = [ws_message(p) for way, p in WEBSOCKET_FRAMES if way == "sent"]
    received = [ws_message(p) for way, p in WEBSOCKET_FRAMES if way == "received"]
    custom = {m["header"]["msg_id"]: m["content"]["data"] for m in sent if m["header"]["msg_type"] == "comm_msg"}
    quiet = {i for i, data in custom.items() if data.get("method") == "custom" and data["content"].get("quiet") is True}
    told = [data["content"] for data in custom.values() if data.get("method") == "custom"]
    told = [c["state"] for c in told if c["kind"] == "state"]
    updates = {i for i, data in custom.items() if data.get("method") == "update"}
    assert len(quiet) >= 5 and updates  # ours, and any the view itself sent meanwhile
    assert told == [{"layer": layer}]
    assert not [i for i in updates if "layer" in custom[i]["state"]]  # never sent as the view's update
    statuses = [
        (m["parent_header"].get("msg_id"), m["content"]["execution_state"])
        for m in received
        if m["header"]["msg_type"] == "status"
    ]
    replied = {m["parent_header"].get("msg_id") for m in received if m["header"]["msg_type"] == "comm_msg"}
    assert quiet <= replied
    assert {(i, "idle") for i in quiet} <= set(statuses)
    assert not [s for s in statuses if s[0] in quiet and s[1] == "busy"]
    assert any(i in updates and state == "busy" for i, state in statuses)
    kernel_updates = [
        m["content"]["data"]["state"]
        for m in received
        if m["header"]["msg_type"] == "comm_msg" and m["content"]["data"].get("method") == "update"
    ]
    assert {"layer": layer} in kernel_updates  # Python's explorer.layer is the view's


def test_no_errors_in_the_browser_console(lab_page):
    _, errors = lab_page
    relevant = [e for e in errors if "favicon" not in e]
    assert relevant == []


def test_exported_page_is_interactive_without_a_kernel(browser, tmp_path: Path):
    import vitlens_widgets as vl

    path = tmp_path / "explorer.html"
    size = vl.export_html(vl.Lens.demo(), vl.data.shapes(2, seed=2).images, path)
    html = path.read_text()
    assert size == len(html.encode())
    assert not re.search(r"""(src|href)\s*=\s*["']?https?:|@import|import\(["']https?:""", html)  # no CDN, no fetches
    page = browser.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(path.as_uri())
    page.wait_for_selector(".vl-explorer canvas.vl-heat", state="attached")
    before = pixels(page)
    page.get_by_role("slider", name="Layer").focus()
    page.keyboard.press("Home")
    assert pixels(page) != before
    series = page.locator(".vl-trajectories polyline").count()
    page.get_by_role("gridcell", name="patch row 2, column 2").click()
    assert page.locator(".vl-trajectories polyline").count() == series + 1
    picker = page.get_by_role("combobox", name="Class")
    picker.fill("ring")
    page.keyboard.press("Enter")
    assert "'ring'" in page.locator(".vl-traj-title").text_content()
    page.get_by_role("button", name="Next image").click()
    assert page.get_by_text("image 2 of 2").count() == 1
    assert errors == []
    page.close()


HOSTILE = [
    "</script><script>window.pwned=1</script>",
    "<!--<script",
    "a\u2028b\u2029c",
    "&amp; <b>",
    *[f"c{i}" for i in range(6)],
]


def test_exported_page_survives_hostile_class_names(browser, tmp_path: Path):
    import vitlens_widgets as vl

    lens = vl.Lens(vl.Lens.demo().model, class_names=HOSTILE)
    path = tmp_path / "hostile.html"
    vl.export_html(lens, vl.data.shapes(1, seed=2).images, path, title="<!--<script>")
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(path.as_uri())
    page.wait_for_selector(".vl-explorer canvas.vl-heat", state="attached")  # not a blank page
    assert page.evaluate("() => window.pwned") is None
    page.get_by_role("combobox", name="Class").fill("<!--")
    assert page.get_by_role("option", name="<!--<script").count() == 1  # shown as text, not markup
    assert not page.get_by_role("button", name="Next image").is_visible()  # one image: no gallery
    assert errors == []
    page.close()


def rgb(css_colour: str) -> tuple[int, ...]:
    return tuple(int(v) for v in re.findall(r"\d+", css_colour)[:3])


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_exported_page_follows_the_colour_scheme(browser, tmp_path: Path, scheme: str):
    import vitlens_widgets as vl

    path = tmp_path / "explorer.html"
    vl.export_html(vl.Lens.demo(), vl.data.shapes(1, seed=2).images, path)
    page = browser.new_page(color_scheme=scheme)
    page.goto(path.as_uri())
    page.locator(".vl-explorer:not(.vl-loading)").wait_for()
    style = page.locator(".vl-explorer").evaluate(
        "e => [getComputedStyle(e).color, getComputedStyle(e).backgroundColor]"
    )
    text, background = (sum(rgb(c)) / 3 for c in style)
    assert (text > 200 and background < 50) if scheme == "dark" else (text < 50 and background > 200)
    page.close()
