"""The browser derives slices from logits tables with js/metrics.ts; its tests compare against numbers
the Python engine wrote (js/tests/fixtures/metrics.json). These tests keep that file honest."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

import vitlens_widgets as vl
from vitlens_widgets.widgets.payload import metric_slices
from vitlens_widgets.widgets.specs import METRICS

FIXTURE = Path(__file__).parents[1] / "js" / "tests" / "fixtures" / "metrics.json"
TOKENS = 17  # [CLS] and the first 16 patches: enough for ties, and a removed token for NaN


def _json_list(array: np.ndarray) -> list:
    """A nested list with NaN as null (JSON has no NaN; the JS test reads null back as NaN)."""
    return np.where(np.isnan(array), None, array.astype(object)).tolist()


def engine_fixture() -> dict:
    """The demo's MLP site with token 3 removed: its logits, log-partition and every class's metric slices."""
    lens = vl.Lens.demo()
    trace = lens.trace(vl.data.shapes(1, seed=2).images[0], drop_tokens=[3])
    logits = trace.logits("mlp")[:, :TOKENS]
    expected = {
        metric: _json_list(metric_slices(trace, "mlp", metric, list(range(lens.num_classes)))[:, :, :TOKENS])
        for metric in METRICS
    }
    return {
        "rows": logits.shape[0],
        "tokens": TOKENS,
        "classes": logits.shape[2],
        "logits": _json_list(logits.reshape(-1)),
        "log_partition": _json_list(trace.log_partition("mlp")[:, :TOKENS].reshape(-1)),
        "expected": expected,
    }


FLOAT32_TOLERANCE = {"rtol": 1e-6, "atol": 1e-6}  # a float32 recomputed on another machine; a stale file is far off


def as_float(values: list) -> np.ndarray:
    """A JSON list (null for NaN) as float64."""
    return np.array(values, dtype=np.float64)


@pytest.fixture(scope="module")
def fresh() -> dict:
    fixture = engine_fixture()
    if os.environ.get("VITLENS_UPDATE_FIXTURES") == "1":
        FIXTURE.write_text(json.dumps(fixture, allow_nan=False))
    return fixture


@pytest.fixture(scope="module")
def saved(fresh) -> dict:
    return json.loads(FIXTURE.read_text())


def test_fixture_matches_the_engine_today(fresh, saved):
    assert saved["rows"] == fresh["rows"] and saved["classes"] == fresh["classes"]
    np.testing.assert_allclose(as_float(saved["logits"]), as_float(fresh["logits"]), rtol=1e-5, atol=1e-5)
    assert sorted(saved["expected"]) == sorted(METRICS), "every metric has browser fixtures"


def test_fixture_log_partition_is_the_engines(fresh, saved):
    np.testing.assert_allclose(
        as_float(saved["log_partition"]), as_float(fresh["log_partition"]), equal_nan=True, **FLOAT32_TOLERANCE
    )


@pytest.mark.parametrize("metric", METRICS)
def test_fixture_expected_slices_are_the_engines(fresh, saved, metric):
    """Every class, row and token of every metric: what js/metrics.ts is tested against is what the engine computes."""
    np.testing.assert_allclose(
        as_float(saved["expected"][metric]), as_float(fresh["expected"][metric]), equal_nan=True, **FLOAT32_TOLERANCE
    )


@pytest.mark.parametrize("metric", METRICS)
def test_fixture_covers_removed_tokens_and_every_class(saved, metric):
    values = np.array(saved["expected"][metric], dtype=np.float64)
    assert values.shape == (saved["classes"], saved["rows"], TOKENS)
    assert np.isnan(values[:, :, 3]).all() and not np.isnan(values[:, :, :3]).any()
