"""The README's quickstart, run as a newcomer would: every command and file as written.

In an empty folder beside a copy of this repository (``rxdjango/``), in a fresh
virtualenv, with the environment of the reader's shell (nothing of the test suite's:
no ``DJANGO_SETTINGS_MODULE``, ``PYTHONPATH`` or ``RX_*``): the shell blocks run in
order, the file blocks are written where they say (the settings block is appended to
the generated ``settings.py``, as the README says). ``pip install ./rxdjango[dev]``
builds the wheel and installs it (not editable), so a module or migration missing
from the package fails here. Then ``runserver`` serves, the README's ``watch.py``
receives the state and then a change made from ``manage.py shell``. The frontend
block makes the Vite app (from the npm registry, as the reader's would be),
``makefrontend`` writes the channel classes and ``npm install --install-links`` builds
the client; the README's ``App.tsx`` is written, ``npm run dev`` serves it, Chromium
opens it with the token and sees the job, then the rename made from the shell.

Where the README says ``127.0.0.1:8000`` (or Vite's 5173) the test uses a free port,
and ``<token>`` is the token ``drf_create_token`` printed. The frontend commands run
before the server starts (they need only the settings), so one server serves both
the watcher and the page.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from rxdjango.testing import timeout

from support import TESTS_DIR

REPOSITORY = TESTS_DIR.parent
README = REPOSITORY / "README.md"
BLOCK = re.compile(r"```(?P<lang>\w+)\n(?P<code>.*?)```", re.S)

# The test is a project of its own: it sets up its own database, one pass runs it.
pytestmark = pytest.mark.harness


def quickstart() -> list[tuple[str, str]]:
    """(language, code) of the quickstart's blocks, in order."""
    text = README.read_text().split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return [(match["lang"], match["code"]) for match in BLOCK.finditer(text)]


def readers_environment(venv: Path) -> dict[str, str]:
    """The reader's shell after ``. venv/bin/activate``: this machine's environment
    without what the test suite sets for itself."""
    ours = ("RX_", "DJANGO_", "REDIS_URL", "PG", "PYTEST", "VIRTUAL_ENV", "PYTHON")
    env = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    path = [p for p in env.get("PATH", "").split(":") if not p.startswith(str(REPOSITORY))]
    env["PATH"] = ":".join([str(venv / "bin"), *path])
    env["VIRTUAL_ENV"] = str(venv)
    return env


def copy_repository(target: Path) -> None:
    """What a clone holds that the quickstart uses (the package and the client)."""
    skip = shutil.ignore_patterns(
        ".venv", "node_modules", "dist", "build", "*.egg-info", "__pycache__", "*.sqlite3"
    )
    target.mkdir()
    for name in ("rxdjango", "client"):
        shutil.copytree(REPOSITORY / name, target / name, ignore=skip)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (REPOSITORY / name).exists():
            shutil.copy(REPOSITORY / name, target / name)


def sh(code: str, cwd: Path, env: dict[str, str], units: float) -> str:
    done = subprocess.run(
        ["bash", "-e", "-c", code],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout(units),
    )
    assert done.returncode == 0, f"{code}\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


class Lines:
    """The lines a process prints, read with a timeout (a silent server fails the test
    instead of hanging it)."""

    def __init__(self, stream: IO[str]) -> None:
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put(line)
        self._lines.put("")

    def next(self, units: float = 2.0) -> str:
        """The next line; "" once the process closed its output."""
        return self._lines.get(timeout=timeout(units))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_readme_quickstart_works_as_written(tmp_path):
    blocks = quickstart()
    shell = [code for lang, code in blocks if lang == "bash"]
    files = {
        code.split("\n", 1)[0][2:]: code.split("\n", 1)[1]
        for lang, code in blocks
        if lang == "python" and code.startswith("# ")
    }
    pages = {
        code.split("\n", 1)[0][3:]: code.split("\n", 1)[1]
        for lang, code in blocks
        if lang == "tsx" and code.startswith("// ")
    }
    assert len(shell) == 8, "the quickstart's commands changed: update this test"
    setup, create, serve, watch, change, frontend, dev, rename = shell
    assert list(pages) == ["frontend/src/App.tsx"]
    copy_repository(tmp_path / "rxdjango")
    env = readers_environment(tmp_path / "venv")

    sh(setup, tmp_path, env, 120)
    project = tmp_path / "myproject"
    for path, code in files.items():
        if path == "myproject/settings.py":
            with (project / path).open("a") as settings:
                settings.write("\n" + code)
        else:
            (project / path).write_text(code)
    token = re.search(r"Generated token (\w+) for user ada", sh(create, project, env, 30))
    assert token is not None

    sh(frontend, project, env, 300)
    assert (project / "frontend" / "src" / "rx" / "jobs.channels.ts").exists()
    built = project / "frontend" / "node_modules" / "@rxdjango" / "react" / "dist" / "index.js"
    assert built.exists()
    port, vite_port = free_port(), free_port()
    for path, code in pages.items():
        (project / path).write_text(code.replace(":8000/", f":{port}/"))

    assert serve.strip() == "python manage.py runserver"
    assert dev.strip() == "npm run dev"
    server = spawn(f"{serve.strip()} 127.0.0.1:{port}", project, env)
    vite = spawn(
        f"npm run dev -- --host 127.0.0.1 --port {vite_port} --strictPort",
        project / "frontend",
        env,
    )
    watcher = None
    try:
        command = watch.strip().replace("<token>", token[1]).replace(":8000/", f":{port}/")
        deadline = time.monotonic() + timeout(20)
        while True:  # until runserver listens (watch.py fails while it does not)
            watcher = spawn(command, project, env, new_session=False)
            assert watcher.stdout is not None
            output = Lines(watcher.stdout)
            first = output.next()
            if '"statusCode"' in first or time.monotonic() > deadline:
                break
            watcher.wait()
            time.sleep(0.2)
        assert '"statusCode":200' in first.replace(" ", ""), first
        lines = [first]
        while "end_initial_state" not in lines[-1]:
            lines.append(output.next())
            assert lines[-1], "the watcher stopped before the state's end marker"
        assert "Read the README" in "".join(lines)
        assert '"done":false' in "".join(lines).replace(" ", "")

        sh(change, project, env, 30)
        while '"done":true' not in lines[-1].replace(" ", ""):
            lines.append(output.next())
            assert lines[-1], "the watcher stopped before the change arrived"

        assert vite.stdout is not None
        vite_output = Lines(vite.stdout)
        while f"127.0.0.1:{vite_port}/" not in (line := plain(vite_output.next(10))):
            assert line, "npm run dev stopped before it served the page"
        with browser_page() as page:
            page.goto(f"http://127.0.0.1:{vite_port}/?token={token[1]}")
            page.get_by_text("Read the README: done").wait_for(timeout=timeout(10) * 1000)
            sh(rename, project, env, 30)
            page.get_by_text("Renamed: done").wait_for(timeout=timeout(5) * 1000)
    finally:
        if watcher is not None:
            watcher.kill()
        os.killpg(vite.pid, signal.SIGTERM)
        vite.wait(timeout=timeout(5))
        os.killpg(server.pid, signal.SIGTERM)
        log = server.communicate(timeout=timeout(5))[0]
    assert "Traceback" not in log, log


def spawn(
    command: str, cwd: Path, env: dict[str, str], new_session: bool = True
) -> subprocess.Popen[str]:
    """A command of the reader's running in the background (its own process group, as
    runserver's autoreloader and npm run a child that must stop with it)."""
    return subprocess.Popen(
        ["bash", "-c", command],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=new_session,
    )


@contextlib.contextmanager
def browser_page() -> Iterator[Any]:
    """A page of Debian's Chromium, driven by Playwright (as the example's tests do)."""
    from playwright.sync_api import sync_playwright

    executable = os.environ.get("CHROMIUM") or shutil.which("chromium")
    assert executable, "Chromium is required (apt install chromium)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable)
        try:
            yield browser.new_page()
        finally:
            browser.close()


def plain(line: str) -> str:
    """A line of a program's output without its terminal colours (Vite's port is bold)."""
    return re.sub(r"\x1b\[[0-9;]*m", "", line)
