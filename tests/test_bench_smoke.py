"""The benchmark harness still runs end to end (toy sizes; the numbers mean nothing)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from rxdjango.testing import timeout

from support import TESTS_DIR

BENCH_RUN = TESTS_DIR.parent / "bench" / "run.py"


def test_the_benchmark_harness_runs_every_scenario(tmp_path):
    output = tmp_path / "smoke.json"
    done = subprocess.run(
        [
            sys.executable,
            str(TESTS_DIR.parent / "bench" / "run.py"),
            "--smoke",
            "--output",
            str(output),
        ],
        capture_output=True,
        text=True,
        timeout=timeout(60),
        env={k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"},
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    results = json.loads(output.read_text())
    kinds = {(r["kind"], r["clients"]) for r in results["fan_out"]}
    assert kinds == {("floor", 10), ("rx", 10), ("dcrf", 10)}
    assert all(r["lost"] == 0 for r in results["fan_out"]), "every client got every change"
    assert set(results["initial_state"]) >= {"rx_cold", "rx_hot", "rest", "dcrf_retrieve"}
    assert results["write_round_trip"]["other_client_sees_it"]["samples"] == 3
    assert results["client"]["records"] == 1000
    assert {t["target"].split(":")[0] for t in results["targets"]} >= {"hot initial load"}
    assert "target" in done.stdout and "holds" in done.stdout
