"""The explorer in JupyterLab, Jupyter Notebook 7, marimo and the exported page, driven in Debian's Chromium, on values."""

from __future__ import annotations

import time
from functools import cache

import numpy as np
import pytest
from playwright.sync_api import Locator, Page

import vitlens_widgets as vl
from vitlens_widgets.widgets.snapshot import HEAT_STOPS, colour_map
from vitlens_widgets.widgets.specs import METRIC_SPECS, PALETTE, SITE_SPECS

from .hosts import HOSTS, Host
from .jupyter import CHROMIUM, SHOWN_HEAT_PIXELS, SNAPSHOT, chromium_available

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not chromium_available(), reason=f"needs Debian's chromium at {CHROMIUM} (scripts/test.sh installs it)"
    ),
]


HEAT = ".vl-explorer canvas.vl-heat"
SERIES = "svg.vl-trajectories polyline.vl-series:not(.vl-baseline)"  # dashed baselines only when perturbed
POINTS = "ps => ps.map(p => [Number(p.dataset.token), p.getAttribute('points')])"
OTHER_CLASSES = ("crescent", "heart")  # demo classes; one of them is not the predicted one


@pytest.fixture(scope="module", params=list(HOSTS))
def host(request, browser, tmp_path_factory):
    started = time.perf_counter()
    with HOSTS[request.param](browser, tmp_path_factory.mktemp(request.param)) as shown:
        print(f"\n{request.param}: explorer painted {time.perf_counter() - started:.1f} s after start")
        yield shown


@pytest.fixture
def trajectories(host: Host) -> Locator:
    """The explorer's trajectory plot (an SVG drawn by the view)."""
    return host.page.locator("svg.vl-trajectories")


@pytest.fixture
def kernel(host: Host) -> Host:
    if not host.has_kernel:
        pytest.skip(f"{host.name} has no kernel")
    return host


def pixels(page: Page) -> list[int]:
    return page.locator(HEAT).evaluate(SHOWN_HEAT_PIXELS)


def changes(read, before, timeout: float = 5.0):
    """Poll ``read()`` until it differs from ``before``; return the new value (or the unchanged one)."""
    deadline = time.time() + timeout
    while (now := read()) == before and time.time() < deadline:
        time.sleep(0.05)
    return now


def kernel_sees(host: Host, trait: str, expected: int, timeout: float = 10.0) -> int:
    """The kernel's ``layer`` or ``cls``, asked again until it is ``expected`` (or ``timeout`` passes)."""
    deadline = time.time() + timeout
    while (now := dict(zip(("layer", "cls"), host.report()))[trait]) != expected and time.time() < deadline:
        time.sleep(0.2)
    return now


def move_layer(page: Page, key: str) -> Locator:
    slider = page.get_by_role("slider", name="Layer")
    slider.focus()
    page.keyboard.press(key)
    return slider


def pick_other_class(page: Page) -> str:
    picker = page.get_by_role("combobox", name="Class")
    target = next(c for c in OTHER_CLASSES if c != picker.input_value())
    picker.click()
    picker.fill(target[:4])
    page.get_by_role("option", name=target).click()
    assert picker.input_value() == target
    return target


def series(page: Page) -> dict[int, str]:
    """Trajectory lines: token index → the polyline's ``points``."""
    return dict(page.locator(SERIES).evaluate_all(POINTS))


@cache
def demo_trace():
    """The first image's trace, computed here as the hosts' kernels compute it (``hosts.EXPLORE``)."""
    return vl.Lens.demo().trace(vl.data.shapes(3, seed=2).images[0])


SITE_LABELS = [spec.label for spec in SITE_SPECS.values()]
METRIC_LABELS = [spec.label for spec in METRIC_SPECS.values()]


def shown_class(page: Page) -> int:
    return vl.Lens.demo().class_index(page.get_by_role("combobox", name="Class").input_value())


def line_values(trajectories: Locator, token: int) -> list[float]:
    """A token's line values, read back from its points through the y axis (drawn from lo to hi)."""
    axis = trajectories.locator("line.vl-axis").nth(1)
    y_lo, y_hi = float(axis.get_attribute("y1")), float(axis.get_attribute("y2"))
    lo, hi = 0.0, 1.0  # identifiability's fixed range (METRIC_SPECS)
    points = trajectories.locator(f"polyline.vl-series[data-token='{token}']").first.get_attribute("points")
    return [lo + (y_lo - float(p.split(",")[1])) / (y_lo - y_hi) * (hi - lo) for p in points.split()]


def test_the_grid_shows_the_engines_identifiability(host: Host):
    """Each patch's colour is the palette colour of the engine's value for that token, class and layer."""
    page = host.page
    move_layer(page, "End")
    page.locator(".vl-explorer:not(.vl-loading)").wait_for()
    trace = demo_trace()
    values = trace.identifiability(shown_class(page), "resid")[trace.depth, len(trace.tokens.prefix) :]
    rgba = np.array(pixels(page), float).reshape(-1, 4)
    expected = colour_map(values, HEAT_STOPS["sequential"])  # identifiability's range is 0..1
    np.testing.assert_allclose(rgba[:, :3], expected, atol=3)  # 8-bit, alpha-premultiplied storage


def test_the_cls_trajectory_is_the_engines_identifiability_over_layers(host: Host, trajectories: Locator):
    trace = demo_trace()
    expected = trace.identifiability(shown_class(host.page), "resid")[:, 0]
    np.testing.assert_allclose(line_values(trajectories, 0), expected, atol=0.01)


def test_the_grid_paints_every_patch(host: Host):
    data = pixels(host.page)
    alphas = data[3::4]
    assert len(alphas) == 64 and min(alphas) > 0  # the demo's 8x8 patches, all painted
    assert len(set(zip(data[0::4], data[1::4], data[2::4], strict=True))) >= 2  # not a flat colour


def test_moving_the_layer_slider_repaints_the_grid(host: Host):
    page = host.page
    move_layer(page, "End")
    before = pixels(page)
    slider = move_layer(page, "Home")
    assert slider.input_value() == "0"
    assert changes(lambda: pixels(page), before) != before


def test_the_slider_reaches_python_and_python_moves_the_slider(kernel: Host):
    host, page = kernel, kernel.page
    move_layer(page, "Home")
    assert kernel_sees(host, "layer", 0) == 0  # the view syncs the layer once scrubbing pauses
    before = pixels(page)
    host.set_layer_one()
    slider = page.get_by_role("slider", name="Layer")
    assert changes(slider.input_value, "0", timeout=15) == "1"
    assert changes(lambda: pixels(page), before) != before


def test_picking_a_class_repaints_the_grid(host: Host):
    page = host.page
    before = pixels(page)
    pick_other_class(page)
    assert changes(lambda: pixels(page), before) != before


def test_a_picked_class_reaches_python(kernel: Host):
    host = kernel
    target = pick_other_class(host.page)
    expected = vl.Lens.demo().class_index(target)
    assert kernel_sees(host, "cls", expected) == expected


def test_trajectories_are_one_polyline_per_token_over_every_layer(host: Host, trajectories: Locator):
    page = host.page
    assert trajectories.count() == 1
    lines = series(page)
    assert len(lines) == page.locator(SERIES).count()  # one line per token
    assert -1 in lines  # the mean of the image tokens
    slider = page.get_by_role("slider", name="Layer")
    n_layers = int(slider.get_attribute("max")) - int(slider.get_attribute("min")) + 1
    n_tokens = page.get_by_role("grid", name="Tokens").get_by_role("gridcell").count()
    for token, points in lines.items():
        assert -1 <= token < n_tokens
        assert len(points.split()) == n_layers
    mean_dash = trajectories.locator("polyline.vl-series[data-token='-1']").get_attribute("stroke-dasharray")
    assert mean_dash == " ".join(map(str, PALETTE["dashes"]["mean"]))  # as the snapshot and vl.plots draw it


def test_picking_a_class_moves_the_trajectories(host: Host, trajectories: Locator):
    page = host.page
    assert trajectories.count() == 1
    before = series(page)
    pick_other_class(page)
    after = changes(lambda: series(page), before)
    assert after.keys() == before.keys()
    assert all(after[t] != before[t] for t in before)


def test_clicking_a_cell_adds_its_trajectory(host: Host, trajectories: Locator):
    page = host.page
    assert trajectories.count() == 1
    grid = page.get_by_role("grid", name="Tokens")
    n_prefix = grid.get_by_role("gridcell").count() - 64  # the demo's 8x8 patches follow the prefix tokens
    token = n_prefix + 3 * 8 + 4  # row 4, column 5, row-major
    before = series(page).keys()
    assert token not in before
    grid.get_by_role("gridcell", name="patch row 4, column 5").click()
    assert changes(lambda: series(page).keys(), before) == {*before, token}
    line = trajectories.locator(f"polyline.vl-series[data-token='{token}'] title")
    assert line.text_content() == "patch 3,4"  # the engine's name for the token, as in the snapshot
    expected = demo_trace().identifiability(shown_class(page), "resid")[:, token]
    np.testing.assert_allclose(line_values(trajectories, token), expected, atol=0.01)


def test_the_layer_marker_sits_on_the_current_layer(host: Host, trajectories: Locator):
    page = host.page
    assert trajectories.count() == 1
    marker = trajectories.locator("line.vl-marker")
    mean = trajectories.locator("polyline.vl-series[data-token='-1']")
    xs = [float(p.split(",")[0]) for p in mean.get_attribute("points").split()]

    def x1() -> float:
        return float(marker.get_attribute("x1"))

    move_layer(page, "End")
    at_end = x1()
    assert at_end == pytest.approx(xs[-1], abs=0.5)
    move_layer(page, "Home")
    assert changes(x1, at_end) == pytest.approx(xs[0], abs=0.5)


def test_the_kernel_keeps_answering_the_views_heartbeat(kernel: Host):
    time.sleep(max(0.0, kernel.shown_at + 9 - time.monotonic()))  # past HEARTBEAT_TIMEOUT_MS (js/timing.ts)
    assert kernel.page.locator(".vl-explorer .vl-status").is_hidden()


def test_only_jupyter_outputs_carry_the_hidden_static_snapshot(kernel: Host):
    snapshot = kernel.page.locator(SNAPSHOT)
    if kernel.name == "marimo":  # marimo renders the widget itself and never calls _ipython_display_
        assert snapshot.count() == 0
    else:  # in the saved output for viewers without a kernel, hidden by the live widget's stylesheet
        assert snapshot.count() == 1 and not snapshot.is_visible()


def test_site_and_metric_are_labelled_radiogroups(host: Host):
    page = host.page
    for group, labels in (("Site", SITE_LABELS), ("Metric", METRIC_LABELS)):
        radios = page.get_by_role("radiogroup", name=group)
        assert radios.get_by_role("radio").count() == len(labels)
        assert all(radios.get_by_role("radio", name=label, exact=True).count() == 1 for label in labels)


def test_an_mlp_site_has_blocks_only_and_repaints(host: Host, trajectories: Locator):
    """The MLP site has no layer 0: the slider starts at 1 and every line has one point per block."""
    page = host.page
    before = pixels(page)
    page.get_by_role("radiogroup", name="Site").get_by_role("radio", name="MLP", exact=True).click()
    slider = page.get_by_role("slider", name="Layer")
    try:
        assert changes(lambda: slider.get_attribute("min"), "0") == "1"
        move_layer(page, "Home")  # layer 1, the first block: drawn where the residual stream's layer 0 was
        assert trajectories.locator("line.vl-marker").get_attribute("data-layer") == slider.input_value() == "1"
        assert changes(lambda: pixels(page), before) != before
        depth = demo_trace().depth
        assert all(len(points.split()) == depth for points in series(page).values())
    finally:
        page.get_by_role("radiogroup", name="Site").get_by_role("radio", name="residual stream", exact=True).click()
    assert changes(lambda: slider.get_attribute("min"), "1") == "0"


def test_no_errors_in_the_browser_console(host: Host):
    assert [e for e in host.errors if "favicon" not in e] == []


# Last: a failure here can leave a notebook host edited.
def test_arrow_keys_move_through_the_grid(host: Host):
    page = host.page
    page.get_by_role("gridcell", name="patch row 1, column 1").focus()
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowDown")
    focused = page.locator("[role=gridcell]:focus")
    assert focused.count() == 1 and focused.get_attribute("aria-label") == "patch row 2, column 2"


def test_keys_in_the_grid_trigger_no_notebook_shortcuts(host: Host):
    page = host.page
    if not page.locator(".jp-Notebook").count():
        pytest.skip(f"{host.name} has no notebook shortcuts")
    cells = page.locator(".jp-Notebook .jp-Cell").count()
    page.get_by_role("gridcell", name="patch row 3, column 3").focus()
    for key in ("a", "b", "x", "m"):  # insert above/below, cut, to markdown: command-mode shortcuts
        page.keyboard.press(key)
    page.wait_for_timeout(300)
    assert page.locator(".jp-Notebook .jp-Cell").count() == cells
    assert page.locator(".jp-Notebook .jp-MarkdownCell").count() == 0


# Last of all: the host's kernel is gone afterwards.
def test_the_view_says_when_the_kernel_dies(kernel: Host):
    status = kernel.page.locator(".vl-explorer .vl-status")
    assert status.is_hidden()
    kernel.kill_kernel()
    status.wait_for(state="visible", timeout=30_000)  # HEARTBEAT_TIMEOUT_MS (js/timing.ts) and a pause
    assert "Kernel not responding" in status.text_content()
    kernel.errors.clear()  # the host itself logs the lost kernel
