"""`make demo` brings the example up exactly as a newcomer runs it, and the page works."""

from __future__ import annotations

import os
import signal
import subprocess

from playwright.sync_api import expect

from browser_support import REPO_DIR, UNIT, free_port, shot, wait_for_http


def test_make_demo_serves_the_app(tmp_path, pages):
    port = free_port()
    env = {**os.environ, "EXAMPLE_SQLITE": str(tmp_path / "demo.sqlite3")}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    demo = subprocess.Popen(
        ["make", "demo", f"DEMO_PORT={port}"],
        cwd=REPO_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_for_http(url, demo, UNIT * 36)
        page = pages["newcomer"]
        page.goto(url)
        page.get_by_test_id("login-username").fill("alice")
        page.get_by_test_id("login-password").fill("demo")
        page.get_by_test_id("login-submit").click()
        expect(page.get_by_test_id("board-list")).to_contain_text("Launch")
        shot(page, "make-demo")
    finally:
        os.killpg(demo.pid, signal.SIGTERM)
        output, _ = demo.communicate(timeout=UNIT * 2)
    assert f"Open {url} and log in as alice" in output
