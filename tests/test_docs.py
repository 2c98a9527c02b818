"""Every public function and class has a docstring with an example, and the API reference builds cleanly."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import vitlens_widgets as vl

MODULES = [
    "vitlens_widgets",
    "vitlens_widgets.analysis",
    "vitlens_widgets.data",
    "vitlens_widgets.engine",
    "vitlens_widgets.explain",
    "vitlens_widgets.lab",
    "vitlens_widgets.plots",
    "vitlens_widgets.widgets",
]
DOCUMENTED_METHODS = {"Lens", "Trace", "TraceBatch", "Explorer"}  # their public methods need examples too


def public_objects():
    seen = set()
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            obj = getattr(module, name)
            if not (inspect.isfunction(obj) or inspect.isclass(obj)) or id(obj) in seen:
                continue
            seen.add(id(obj))
            yield f"{module_name}.{name}", obj
            if inspect.isclass(obj) and name in DOCUMENTED_METHODS:
                for method_name, method in vars(obj).items():
                    if inspect.isfunction(method) and not method_name.startswith("_"):
                        yield f"{module_name}.{name}.{method_name}", method


@pytest.mark.parametrize(("name", "obj"), list(public_objects()), ids=lambda x: x if isinstance(x, str) else "")
def test_public_api_has_a_docstring_with_an_example(name, obj):
    doc = inspect.getdoc(obj) or ""
    assert doc.strip(), f"{name} has no docstring"
    assert "Example" in doc, f"{name}'s docstring has no example"


def test_api_reference_builds_without_warnings(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-W",
            "error::UserWarning",
            "-m",
            "pdoc",
            "vitlens_widgets",
            "--docformat",
            "google",
            "-o",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "Warn" not in result.stderr, result.stderr
    assert (tmp_path / "vitlens_widgets.html").is_file() and (tmp_path / "vitlens_widgets" / "analysis.html").is_file()
    assert "save_traces" in (tmp_path / "vitlens_widgets.html").read_text()
    assert vl.__version__


def test_relevance_regimes_page_matches_its_recorded_run():
    """docs/relevance_regimes.md is what the experiment's --report writes from the recorded results."""
    root = Path(__file__).resolve().parents[1]
    script = root / "training" / "experiments" / "relevance_regimes.py"
    spec = importlib.util.spec_from_file_location("relevance_regimes", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    page = (root / "docs" / "relevance_regimes.md").read_text()
    assert page == module.report(module.RESULTS) + "\n"
    assert "0 of them" in page  # the finding the docs and the closing note rely on


ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def readme_block(language: str, after: str) -> str:
    """The first fenced ``language`` block after the heading ``after``."""
    start = README.index(f"```{language}\n", README.index(after)) + len(language) + 4
    return README[start : README.index("```", start)]


def test_readme_quickstart_pasted_into_one_cell_shows_the_explorer(tmp_path, monkeypatch):
    """A notebook cell displays its last expression: it must be the explorer, and the block must run offline."""
    import ast

    code = readme_block("python", "## Quickstart")
    *body, last = ast.parse(code).body
    assert isinstance(last, ast.Expr), "the quickstart's last line is not an expression a cell would display"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(ast.Module(body, type_ignores=[]), "README", "exec"), namespace)
    shown = eval(compile(ast.Expression(last.value), "README", "eval"), namespace)
    assert isinstance(shown, vl.Explorer)
    assert (tmp_path / "explorer.html").stat().st_size > 100_000


def test_readme_is_short_and_its_links_resolve():
    import re

    assert len(README.splitlines()) <= 180, "keep the README to what a user needs first; details go to docs/"
    links = re.findall(r"\]\(([^)#]+)\)", README)
    assert "docs/benchmarks.md" in links and "docs/errors.md" in links
    missing = [link for link in links if not link.startswith("http") and not (ROOT / link).exists()]
    assert not missing, f"README links to missing files: {missing}"
    assert "| benchmark" not in README.lower() and "p50 / p95" not in README  # the tables live in docs/benchmarks.md
    assert "p50 / p95" in (ROOT / "docs" / "benchmarks.md").read_text()
