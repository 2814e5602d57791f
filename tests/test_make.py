"""The Makefile's own promises: ``make help`` lists every target, ``make dist`` builds
what a user installs (the wheel holds every module of the package)."""

from __future__ import annotations

import re
import subprocess
import tarfile
import zipfile

import pytest

from rxdjango.testing import timeout

from support import TESTS_DIR

REPOSITORY = TESTS_DIR.parent

pytestmark = pytest.mark.harness


def make(*args: str, units: float = 10) -> str:
    done = subprocess.run(
        ["make", "-s", "--no-print-directory", *args],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=timeout(units),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_make_help_lists_every_target_with_what_it_does():
    makefile = (REPOSITORY / "Makefile").read_text()
    phony = re.search(r"^\.PHONY:(.*?)(?<!\\)$", makefile, re.S | re.M)
    assert phony is not None
    targets = set(phony[1].replace("\\\n", " ").split())
    listed = dict(re.findall(r"^  (\S+)\s+(.+)$", make("help"), re.M))
    assert set(listed) == targets
    assert all(text.endswith(".") for text in listed.values()), listed


def test_make_dist_builds_the_wheel_the_sdist_and_the_client_tarball(tmp_path):
    make("dist", f"DIST={tmp_path}", units=120)
    wheel = next(tmp_path.glob("rxdjango-*.whl"))
    sdist = next(tmp_path.glob("rxdjango-*.tar.gz"))
    client = next(tmp_path.glob("rxdjango-react-*.tgz"))
    package = {
        str(path.relative_to(REPOSITORY))
        for path in (REPOSITORY / "rxdjango").rglob("*")
        if path.suffix in (".py", ".typed") and "__pycache__" not in path.parts
    }
    assert package <= set(zipfile.ZipFile(wheel).namelist())
    with tarfile.open(sdist) as archive:
        root = archive.getnames()[0].split("/")[0]
        assert {f"{root}/{name}" for name in package} <= set(archive.getnames())
    with tarfile.open(client) as archive:
        names = set(archive.getnames())
    assert {"package/dist/index.js", "package/dist/core.d.ts", "package/README.md"} <= names
