"""docs/testing.md runs as written: its code blocks are the files of a project whose
tests pytest runs in a process of its own, with the plugin its entry point registers.

Every block starts with a comment naming its file. The project is this repository's
test project under the name the docs use: ``myproject``'s settings and ASGI
application are ``tests/testproject``'s, with the ``jobs`` app the examples test. The
``pyproject.toml`` block is the run's whole pytest configuration; the
``myproject/settings.py`` block (the SQLite database) ends the settings in the SQLite
pass, and has nothing to do on PostgreSQL. The run uses this run's database engine
and backend (``RX_TEST_DB``, ``RX_TEST_BACKEND``) and creates its own test database.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from rxdjango.testing import timeout

from support import TESTS_DIR

DOCS = TESTS_DIR.parent / "docs" / "testing.md"
BLOCK = re.compile(r"^```(?P<lang>\w*)\n(?P<code>.*?)^```", re.S | re.M)
FILE_COMMENT = re.compile(r"# (?P<name>[\w/]+\.(?:py|toml))\n")
SETTINGS = "myproject/settings.py"

# What ``myproject`` is in this run: the test project under the docs' name.
SHIMS = {
    "myproject/__init__.py": "",
    "myproject/asgi.py": "from testproject.asgi import application  # noqa: F401\n",
    SETTINGS: (
        "from pathlib import Path\n\n"
        "from testproject.settings import *  # noqa: F403\n\n"
        "BASE_DIR = Path(__file__).resolve().parent.parent\n"
    ),
}


def doc_files() -> dict[str, str]:
    """The docs' blocks by the file each names, in order."""
    files: dict[str, str] = {}
    for match in BLOCK.finditer(DOCS.read_text()):
        named = FILE_COMMENT.match(match["code"])
        assert named, f"a block of {DOCS.name} names no file:\n{match['code']}"
        name = named["name"]
        assert name not in files, f"two blocks of {DOCS.name} are {name}"
        files[name] = match["code"]
    return files


def readers_environment(project: Path) -> dict[str, str]:
    """This run's environment, without what would decide the run's configuration for it
    (the docs' ``pyproject.toml`` does) or share this run's Redis keys."""
    ours = ("DJANGO_SETTINGS_MODULE", "PYTEST_ADDOPTS", "PYTEST_PLUGINS")
    ours += ("RX_TEST_REDIS_PREFIX", "RX_SQLITE_NAME", "PGDATABASE", "PYTHONPATH")
    env = {k: v for k, v in os.environ.items() if k not in ours}
    env["PYTHONPATH"] = os.pathsep.join([str(project), str(TESTS_DIR)])
    return env


def test_every_block_names_a_file_of_the_project():
    files = doc_files()
    assert "pyproject.toml" in files
    assert SETTINGS in files
    assert any(name.startswith("tests/test_") for name in files)


def test_the_docs_examples_pass(tmp_path: Path):
    project = tmp_path / "project"
    files = doc_files()
    settings = SHIMS[SETTINGS]
    if os.environ.get("RX_TEST_DB") == "sqlite":
        settings += "\n" + files[SETTINGS]
    for name, code in {**files, **SHIMS, SETTINGS: settings}.items():
        path = project / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(code)
    tests = sum(
        len(re.findall(r"^(?:async )?def test_", code, re.M))
        for name, code in files.items()
        if name.startswith("tests/")
    )

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-W",
            "error::RuntimeWarning",
        ],
        cwd=project,
        env=readers_environment(project),
        capture_output=True,
        text=True,
        timeout=timeout(30),
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert re.search(rf"\b{tests} passed\b", output), output
