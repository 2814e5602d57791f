"""Fixtures of the example's browser tests (one Chromium for the session)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from browser_support import EXAMPLE_DIR, UNIT, ExampleServer, manage


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ExampleServer]:
    assert (EXAMPLE_DIR / "frontend" / "dist" / "index.html").exists(), (
        "build the example frontend first: make example-frontend"
    )
    example = ExampleServer(tmp_path / "example.sqlite3")
    manage("migrate", "-v", "0", env=example.env)
    manage("seed_example", env=example.env)
    example.start()
    yield example
    example.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    executable = os.environ.get("CHROMIUM") or shutil.which("chromium")
    assert executable, "Chromium is required (apt install chromium)"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable)
        yield launched
        launched.close()


@pytest.fixture
def pages(browser: Browser) -> Iterator[dict[str, Page]]:
    """One browser context (a separate user session) per name, created on demand."""
    contexts = []

    class Pages(dict):
        def __missing__(self, name: str) -> Page:
            context = browser.new_context()
            context.set_default_timeout(UNIT * 2000)
            contexts.append(context)
            page = context.new_page()
            self[name] = page
            return page

    yield Pages()
    for context in contexts:
        context.close()
