"""Helpers of the example's browser tests: a restartable server, login, screenshots.

Each test gets its own server (uvicorn, embedded defaults) on its own SQLite
database, seeded with the demo data. Screenshots of the key states go to
``test-artifacts/`` (git-ignored).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import Page, expect

EXAMPLE_DIR = Path(__file__).resolve().parent.parent
REPO_DIR = EXAMPLE_DIR.parent
ARTIFACTS = REPO_DIR / "test-artifacts"
UNIT = float(os.environ.get("RX_TEST_TIMEOUT", "5"))


def free_port() -> int:
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


def manage(*args: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=EXAMPLE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=UNIT * 12,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


class ExampleServer:
    """uvicorn serving the example on a fixed port, restartable."""

    def __init__(self, database: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "exampleproject.settings",
            "EXAMPLE_SQLITE": str(database),
        }
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                *(sys.executable, "-m", "uvicorn", "exampleproject.asgi:application"),
                *("--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"),
                *("--lifespan", "off"),  # Django has no lifespan handler: say so, not log it
            ],
            cwd=EXAMPLE_DIR,
            env=self.env,
        )
        wait_for_http(self.url, self.process)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(UNIT * 2)

    def orm(self, code: str) -> None:
        """Run ORM code in a separate process (as a script or a shell would)."""
        manage("shell", "-c", code, env=self.env)


def wait_for_http(url: str, process: subprocess.Popen, seconds: float = UNIT * 6) -> None:
    deadline = time.monotonic() + seconds
    while True:
        assert process.poll() is None, "the server exited"
        try:
            with urllib.request.urlopen(url, timeout=UNIT) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"{url} never answered"
        time.sleep(0.05)


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def login(page: Page, server: ExampleServer, username: str) -> None:
    page.goto(server.url)
    page.get_by_test_id("login-username").fill(username)
    page.get_by_test_id("login-password").fill("demo")
    page.get_by_test_id("login-submit").click()
    expect(page.get_by_test_id("board-list")).to_be_visible()


def open_board(page: Page, name: str) -> None:
    page.get_by_test_id("board-list").get_by_text(name).click()
    expect(page.get_by_test_id("board-name")).to_have_text(name)
    expect(page.get_by_test_id("connection-status")).to_have_text("connected")


def card_id(page: Page, title: str) -> str:
    card = page.locator("[data-testid^='card-title-']", has_text=title).first
    return (card.get_attribute("data-testid") or "").removeprefix("card-title-")


def column_id(page: Page, title: str) -> str:
    column = page.locator("[data-testid^='column-title-']", has_text=title).first
    return (column.get_attribute("data-testid") or "").removeprefix("column-title-")


def rename_card(page: Page, card: str, title: str) -> None:
    page.get_by_test_id(f"edit-card-{card}").click()
    page.get_by_test_id(f"card-title-input-{card}").fill(title)
    page.get_by_test_id(f"save-card-{card}").click()
