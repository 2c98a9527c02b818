"""The bundled demo model: loads offline, learned its task, and its training script runs."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors import safe_open

import vitlens_widgets as vl
from vitlens_widgets.demo import WEIGHTS_PATH, load_demo_model
from vitlens_widgets.demo.evaluate import held_out_accuracy
from vitlens_widgets.demo.train import TEST_SEED, TRAIN_SEED, VAL_SEED
from vitlens_widgets.demo.train import main as train_main


@pytest.fixture(scope="module")
def demo() -> vl.Lens:
    return vl.Lens.demo()


def test_weights_ship_in_the_package_and_are_small():
    assert WEIGHTS_PATH.is_file()
    assert WEIGHTS_PATH.stat().st_size <= 10 * 2**20
    with safe_open(str(WEIGHTS_PATH), framework="pt") as f:
        assert json.loads(f.metadata()["class_names"]) == list(vl.data.CLASS_NAMES)


def test_demo_lens_has_names_and_the_documented_architecture(demo):
    assert list(demo.class_names) == list(vl.data.CLASS_NAMES)
    assert demo.depth == 6 and demo.tokens.prefix == ("cls",) and demo.tokens.grid == (8, 8)
    assert demo.preprocessor.input_size == (64, 64)


def test_held_out_accuracy_is_at_least_90_percent(demo):
    assert len({TRAIN_SEED, VAL_SEED, TEST_SEED}) == 3
    accuracy = held_out_accuracy(demo, n=400, seed=TEST_SEED)
    assert accuracy >= 0.90, accuracy


def test_image_tokens_become_more_identifiable_with_depth(demo):
    data = vl.data.shapes(64, seed=TEST_SEED)
    batch = demo.trace_batch(data.images)
    ident = batch.identifiability(data.labels, "resid")[:, :, demo.tokens.image_tokens].mean(axis=(0, 2))
    assert ident[-1] > ident[0] + 0.2
    assert ident[-1] > 0.7  # 0.77 on 1,000 images (model card)


def test_demo_model_loads_without_network(monkeypatch):
    import socket

    def refuse(*args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    model = load_demo_model()
    assert model.num_classes == 10


def test_main_demo_command_prints_predictions_and_block_table():
    out = subprocess.run(
        [sys.executable, "-m", "vitlens_widgets", "--images", "3"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    assert "loaded the demo model" in out and "predicted" in out
    assert out.count("layer  [CLS]  object  context") == 3
    assert "held-out images classified correctly" in out


def test_training_script_runs_a_few_steps_and_writes_loadable_weights(tmp_path):
    out = tmp_path / "tiny.safetensors"
    train_main(
        [
            "--steps",
            "3",
            "--batch-size",
            "8",
            "--train-images",
            "64",
            "--val-images",
            "16",
            "--eval-every",
            "3",
            "--out",
            str(out),
        ]
    )
    lens = vl.Lens(load_demo_model(out))
    trace = lens.trace(vl.data.shapes(1, seed=TEST_SEED).images[0])
    assert trace.logits("resid").shape == (7, 65, 10)
    record = json.loads(out.with_suffix(".log.jsonl").read_text().splitlines()[-1])
    assert record["step"] == 3 and np.isfinite(record["train_loss"])


def test_training_is_deterministic_for_a_fixed_seed(tmp_path):
    """The shipped recipe is reproducible: same command, same weights (here on a few steps)."""
    args = ["--steps", "4", "--batch-size", "8", "--train-images", "64", "--val-images", "16", "--eval-every", "4"]
    train_main([*args, "--out", str(tmp_path / "a.safetensors")])
    train_main([*args, "--out", str(tmp_path / "b.safetensors")])
    a = load_demo_model(tmp_path / "a.safetensors").state_dict()
    b = load_demo_model(tmp_path / "b.safetensors").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
