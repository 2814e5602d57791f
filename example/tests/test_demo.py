"""`make demo` brings the example up exactly as a newcomer runs it, and the page works."""

from __future__ import annotations

import os
import re
import signal
import subprocess

from playwright.sync_api import expect

from browser_support import REPO_DIR, UNIT, free_port, shot, wait_for_http

# What a newcomer should never see in the server's output on a normal start and use.
NOISE = re.compile(r"warn|error|traceback|exception|deprecat|unsupported", re.IGNORECASE)


def server_output(output: str) -> list[str]:
    """The lines from the database migration on (the set-up before it is npm's and pip's),
    without make's own lines (its echo of commands, its note that it was terminated)."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if "manage.py migrate" in line)
    return [line for line in lines[start + 1 :] if not line.startswith(("make:", "make[", "cd "))]


def test_make_demo_serves_the_app_and_logs_no_warning(tmp_path, pages):
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
        page.get_by_test_id("board-list").get_by_text("Launch").click()
        expect(page.get_by_test_id("connection-status")).to_have_text("connected")
        shot(page, "make-demo")
        page.close()  # its sockets close before the server stops
    finally:
        os.killpg(demo.pid, signal.SIGTERM)
        output, _ = demo.communicate(timeout=UNIT * 2)
    assert f"Open {url} and log in as alice" in output
    logged = server_output(output)
    assert any('"GET / HTTP/1.1" 200' in line for line in logged), output  # the log is read
    assert [line for line in logged if NOISE.search(line)] == [], output


def test_a_second_make_demo_rebuilds_and_installs_nothing():
    """After a run (the test above, or `make test`'s own build), `make demo` plans no
    pip install, npm install or build: it migrates, seeds and serves."""
    planned = subprocess.run(
        ["make", "-n", "demo"], cwd=REPO_DIR, capture_output=True, text=True, timeout=UNIT * 2
    )
    assert planned.returncode == 0, planned.stderr
    commands = planned.stdout
    assert "manage.py migrate" in commands and "uvicorn" in commands
    for work in ("pip install", "npm install", "npm run build", "python3 -m venv"):
        assert work not in commands, commands
