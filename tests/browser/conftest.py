"""The real Chromium shared by the browser tests (Debian's, never a downloaded one)."""

from __future__ import annotations

import os

import pytest

from .jupyter import CHROMIUM, CHROMIUM_ARGS, chromium_available


def pytest_collection_modifyitems(items):
    """Under scripts/test.sh (the README's test command) a missing browser fails the run instead of
    skipping every browser test."""
    if os.environ.get("VITLENS_REQUIRE_BROWSER") and not chromium_available():
        raise pytest.UsageError(f"VITLENS_REQUIRE_BROWSER is set but {CHROMIUM} is missing")


@pytest.fixture(scope="module")
def browser():
    if not chromium_available():
        pytest.skip(f"needs Debian's chromium at {CHROMIUM} (scripts/test.sh installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()
