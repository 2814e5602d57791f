"""The example app in a real browser (Playwright driving Debian's Chromium).

Each test gets its own server (uvicorn, embedded defaults) on its own SQLite
database, seeded with the demo data. Screenshots of the key states go to
``test-artifacts/`` (git-ignored).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

EXAMPLE_DIR = Path(__file__).resolve().parent.parent
REPO_DIR = EXAMPLE_DIR.parent
ARTIFACTS = REPO_DIR / "test-artifacts"
UNIT = float(os.environ.get("RX_TEST_TIMEOUT", "5"))


def _free_port() -> int:
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


def _manage(*args: str, env: dict[str, str]) -> str:
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
        self.port = _free_port()
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
            ],
            cwd=EXAMPLE_DIR,
            env=self.env,
        )
        _wait_for_http(self.url, self.process)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(UNIT * 2)

    def orm(self, code: str) -> None:
        """Run ORM code in a separate process (as a script or a shell would)."""
        _manage("shell", "-c", code, env=self.env)


def _wait_for_http(url: str, process: subprocess.Popen, seconds: float = UNIT * 6) -> None:
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


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ExampleServer]:
    assert (EXAMPLE_DIR / "frontend" / "dist" / "index.html").exists(), (
        "build the example frontend first: make example-frontend"
    )
    example = ExampleServer(tmp_path / "example.sqlite3")
    _manage("migrate", "-v", "0", env=example.env)
    _manage("seed_example", env=example.env)
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


def rename_card(page: Page, card: str, title: str) -> None:
    page.get_by_test_id(f"edit-card-{card}").click()
    page.get_by_test_id(f"card-title-input-{card}").fill(title)
    page.get_by_test_id(f"save-card-{card}").click()


def test_two_users_see_each_others_edits(server, pages):
    alice, bob = pages["alice"], pages["bob"]
    for page, name in ((alice, "alice"), (bob, "bob")):
        login(page, server, name)
        open_board(page, "Launch")
    expect(alice.get_by_test_id("viewers")).to_contain_text("2")  # a runtime variable
    expect(alice.get_by_test_id("notifications")).to_contain_text("bob joined")
    card = card_id(alice, "Book the venue")
    rename_card(alice, card, "Book the big venue")
    expect(bob.get_by_test_id(f"card-title-{card}")).to_have_text("Book the big venue")
    bob.get_by_test_id(f"comment-input-{card}").fill("On it")
    bob.get_by_test_id(f"add-comment-{card}").click()
    expect(alice.get_by_test_id(f"card-{card}")).to_contain_text("On it")
    shot(alice, "two-users-alice")
    shot(bob, "two-users-bob")


def test_a_change_made_with_the_orm_or_admin_appears_in_the_page(server, pages):
    alice = pages["alice"]
    login(alice, server, "alice")
    open_board(alice, "Launch")
    card = card_id(alice, "Fix the demo")
    admin = pages["admin"]
    admin.goto(server.url + "admin/login/")
    admin.fill("#id_username", "alice")
    admin.fill("#id_password", "demo")
    admin.click("input[type=submit]")
    admin.goto(server.url + f"admin/board/card/{card}/change/")
    admin.fill("#id_title", "Fixed through the admin")
    admin.click("input[name=_save]")
    expect(alice.get_by_test_id(f"card-title-{card}")).to_have_text("Fixed through the admin")
    shot(alice, "admin-change")


def test_a_refused_write_is_rolled_back_on_screen(server, pages):
    alice = pages["alice"]
    login(alice, server, "alice")
    open_board(alice, "Launch")
    card = card_id(alice, "Book the venue")
    rename_card(alice, card, "SHOUTING IS REFUSED")
    expect(alice.get_by_test_id("error-banner")).to_be_visible()
    expect(alice.get_by_test_id(f"card-title-{card}")).to_have_text("Book the venue")
    shot(alice, "refused-write")


def test_private_notes_never_reach_the_other_user(server, pages):
    alice, bob = pages["alice"], pages["bob"]
    for page, name in ((alice, "alice"), (bob, "bob")):
        login(page, server, name)
        open_board(page, "Launch")
    alice.get_by_test_id("note-input").fill("Alice only: surprise party")
    alice.get_by_test_id("add-note").click()
    expect(alice.get_by_test_id("notes")).to_contain_text("Alice only: surprise party")
    # Bob sees his own note, and a later change of his, but never Alice's.
    bob.get_by_test_id("note-input").fill("Bob's second note")
    bob.get_by_test_id("add-note").click()
    expect(bob.get_by_test_id("notes")).to_contain_text("Bob's second note")
    expect(bob.get_by_test_id("notes")).to_contain_text("Bob's private note")
    expect(bob.locator("body")).not_to_contain_text("surprise party")
    expect(bob.locator("body")).not_to_contain_text("Alice's private note")
    shot(bob, "private-notes-bob")


def test_the_page_reconnects_after_a_restart_and_shows_what_changed(server, pages):
    alice = pages["alice"]
    login(alice, server, "alice")
    open_board(alice, "Launch")
    card = card_id(alice, "Pick a date")
    server.stop()
    expect(alice.get_by_test_id("connection-status")).not_to_have_text("connected")
    server.orm(
        "from board.models import Card; "
        f"Card.objects.filter(pk={card}).update(title='Date picked while down')"
    )
    server.start()
    expect(alice.get_by_test_id("connection-status")).to_have_text("connected", timeout=UNIT * 6000)
    expect(alice.get_by_test_id(f"card-title-{card}")).to_have_text("Date picked while down")
    shot(alice, "after-restart")


def test_the_board_list_updates_when_a_board_is_created(server, pages):
    alice = pages["alice"]
    login(alice, server, "alice")
    admin = pages["admin"]
    admin.goto(server.url + "admin/login/")
    admin.fill("#id_username", "alice")
    admin.fill("#id_password", "demo")
    admin.click("input[type=submit]")
    admin.goto(server.url + "admin/board/board/add/")
    admin.fill("#id_name", "Created in the admin")
    admin.select_option("#id_members", label="alice")
    admin.click("input[name=_save]")
    expect(alice.get_by_test_id("board-list")).to_contain_text("Created in the admin")
    shot(alice, "board-list-updated")
