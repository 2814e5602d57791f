"""The README's quickstart, run as written: its code blocks become a project of their own.

The quickstart shows the settings, the app's ``channels.py`` and ``routing.py`` and the
project's ``asgi.py``; "your models and serializers" are the test app's. The project is
migrated, served by uvicorn, and a WebSocket client receives the state the README
promises. ``makefrontend`` runs on it too.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import websockets

from rxdjango.testing import timeout

from support import TESTS_DIR

README = TESTS_DIR.parent / "README.md"
BLOCK = re.compile(r"```python\n# (?P<path>[\w/.]+)\n(?P<code>.*?)```", re.S)


def quickstart_blocks() -> dict[str, str]:
    text = README.read_text().split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return {match["path"]: match["code"] for match in BLOCK.finditer(text)}


def build_project(root: Path) -> dict[str, str]:
    blocks = quickstart_blocks()
    assert set(blocks) == {
        "settings.py",
        "jobs/channels.py",
        "jobs/routing.py",
        "myproject/asgi.py",
    }, "the quickstart's files changed: update this test"
    readme_settings: dict = {}
    exec(blocks["settings.py"], readme_settings)
    shutil.copytree(
        TESTS_DIR / "jobs",
        root / "jobs",
        ignore=shutil.ignore_patterns("channels.py", "routing.py", "management", "__pycache__"),
    )
    (root / "jobs" / "channels.py").write_text(blocks["jobs/channels.py"])
    (root / "jobs" / "routing.py").write_text(blocks["jobs/routing.py"])
    (root / "myproject").mkdir()
    (root / "myproject" / "__init__.py").write_text("")
    (root / "myproject" / "asgi.py").write_text(
        "import os\nos.environ.setdefault('DJANGO_SETTINGS_MODULE', 'myproject.settings')\n"
        + blocks["myproject/asgi.py"]
    )
    apps = ["django.contrib.auth", "django.contrib.contenttypes"]
    apps += [app for app in readme_settings["INSTALLED_APPS"] if app not in apps] + ["jobs"]
    (root / "myproject" / "settings.py").write_text(
        textwrap.dedent(
            f"""
            SECRET_KEY = "quickstart"
            USE_TZ = True
            INSTALLED_APPS = {apps!r}
            ASGI_APPLICATION = {readme_settings["ASGI_APPLICATION"]!r}
            DATABASES = {{"default": {{"ENGINE": "django.db.backends.sqlite3",
                                       "NAME": {str(root / "db.sqlite3")!r}}}}}
            DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
            RX_FRONTEND_DIR = {str(root / "frontend")!r}
            """
        )
    )
    return blocks


SEED = """
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from jobs.models import Job, Participant, Project, Task
user = get_user_model().objects.create_user("ada")
project = Project.objects.create(name="Quick")
Participant.objects.create(project=project, user=user)
job = Job.objects.create(project=project, title="Start")
Task.objects.create(job=job, title="Read the README")
print(job.pk, Token.objects.create(user=user).key)
"""


def manage(root: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "django", *args, "--settings", "myproject.settings"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=timeout(6),
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_the_readme_quickstart_works_as_written(tmp_path):
    build_project(tmp_path)
    manage(tmp_path, "migrate", "-v", "0")
    job_id, token = manage(tmp_path, "shell", "-c", SEED).strip().splitlines()[-1].split()
    assert "wrote" in manage(tmp_path, "makefrontend")
    assert (tmp_path / "frontend" / "jobs.channels.ts").exists()
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    command = [sys.executable, "-m", "uvicorn", "myproject.asgi:application"]
    command += ["--fd", str(listener.fileno()), "--log-level", "warning"]
    server = subprocess.Popen(
        command,
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
        pass_fds=[listener.fileno()],
    )
    listener.close()
    try:
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws/job/{job_id}/") as ws:
            await ws.send(orjson.dumps({"token": token}).decode())
            frames = []
            while not (isinstance(frames[-1:] or None, list) and _ended(frames[-1])):
                frames.append(orjson.loads(await asyncio.wait_for(ws.recv(), timeout())))
        assert frames[0] == {"type": "auth", "statusCode": 200}
        assert frames[1] == {"type": "initialAnchors", "anchorIds": [int(job_id)]}
        records = [r for frame in frames[2:] for r in frame]
        titles = {r.get("title") for r in records}
        assert {"Start", "Read the README"} <= titles
    finally:
        server.terminate()
        server.wait(timeout(2))


def _ended(frame: object) -> bool:
    return isinstance(frame, list) and any(
        r.get("_operation") == "end_initial_state" for r in frame
    )
