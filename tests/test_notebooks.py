"""The notebooks run top to bottom in a real kernel, offline, on the demo model, and are committed small."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
PATHS = sorted(NOTEBOOKS.glob("*.ipynb"))
MAX_COMMITTED_BYTES = 40_000


def test_the_five_notebooks_are_there():
    assert [p.name[:2] for p in PATHS] == ["01", "02", "03", "04", "05"]


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_committed_without_outputs(path):
    assert path.stat().st_size < MAX_COMMITTED_BYTES
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name} has saved outputs"


def execute(path: Path, workdir: Path) -> nbformat.NotebookNode:
    os.environ["HF_HUB_OFFLINE"] = "1"  # the kernel inherits it: nothing touches the network
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}
    ).execute()
    return notebook


def texts(notebook: nbformat.NotebookNode) -> str:
    """Everything the cells printed or displayed as text/html, joined."""
    parts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", ""))
            data = output.get("data", {})
            parts.append(data.get("text/plain", "") + data.get("text/html", ""))
    return "\n".join(parts)


def explorer_outputs(notebook: nbformat.NotebookNode) -> list[tuple[dict, dict]]:
    """(widget output, the output after it) for every explorer displayed."""
    pairs = []
    for cell in notebook.cells:
        outputs = cell.get("outputs", [])
        for i, output in enumerate(outputs):
            is_widget = "application/vnd.jupyter.widget-view+json" in output.get("data", {})
            following = outputs[i + 1] if i + 1 < len(outputs) else {}
            if is_widget and "vitlens_widgets" in following.get("metadata", {}) and "image/png" in following["data"]:
                pairs.append((output, outputs[i + 1]))
    return pairs


EXPECTED = {
    "01_quickstart": ["prediction: Prediction(", "quickstart_explorer.html:"],
    "02_method_step_by_step": [
        "max difference from the model's own logits: 0.0",
        "resid[b] == resid[b-1] + attn[b] + mlp[b]: True",
    ],
    "03_course_lab": ["Not answered yet"],
    "04_your_own_model": ["No internet here", "golden retriever = 207", "Did you mean: 'golden retriever'"],
    "05_paper_figures": ["auc_negative", "projection"],
}
EXPLORERS = {"01_quickstart": 1, "02_method_step_by_step": 2, "03_course_lab": 1, "04_your_own_model": 1}


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_notebook_runs_offline(path, tmp_path):
    notebook = execute(path, tmp_path)
    text = texts(notebook)
    for expected in EXPECTED[path.stem]:
        assert expected in text, f"{path.name}: {expected!r} not in the outputs"
    assert len(explorer_outputs(notebook)) >= EXPLORERS.get(path.stem, 0)
    if path.stem == "03_course_lab":
        assert text.count("Not answered yet") == 6 and "✗" not in text
    if path.stem == "01_quickstart":
        assert (tmp_path / "outputs" / "quickstart_explorer.html").stat().st_size > 100_000
        assert (tmp_path / "outputs" / "quickstart_snapshot.png").read_bytes().startswith(b"\x89PNG")
    assert {p.name for p in tmp_path.iterdir()} <= {"outputs"}, "a notebook wrote outside its outputs/ folder"
