"""The benchmark harness still runs end to end (toy sizes; the numbers mean nothing)."""

from __future__ import annotations

import json

import pytest

from support import run_harness

# The harness chooses its own database and backend: one pass of make test runs it.
pytestmark = pytest.mark.harness


def test_the_benchmark_harness_runs_every_scenario(tmp_path):
    output = tmp_path / "smoke.json"
    done = run_harness("run.py", "--smoke", "--output", str(output))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    results = json.loads(output.read_text())
    single, multi = results["runs"]
    assert (single["key"], multi["key"]) == ("single", "multi")
    assert {(r["kind"], r["clients"]) for r in single["fan_out"]} == {
        ("rx", 1),
        ("floor", 10),
        ("rx", 10),
        ("dcrf", 10),
        ("dcrf_group", 10),
    }
    assert {(r["kind"], r["clients"]) for r in multi["fan_out"]} == {
        ("rx", 1),
        ("rx", 10),
        ("dcrf", 10),
        ("dcrf_group", 10),
    }
    for run in (single, multi):
        assert all(r["lost"] == 0 for r in run["fan_out"]), "every client got every change"
        assert set(run["initial_state"]) >= {"rx_cold", "rx_hot", "rest", "dcrf_retrieve"}
        assert run["write_round_trip"]["other_client_sees_it"]["samples"] == 3
        writes = run["sustained_writes"]
        assert writes["capacity"]["writes_per_s"] > 0
        for offered in (writes["at_80"], writes["at_200"]):  # each write answered, each seen
            assert offered["unanswered"] == 0 and offered["not_seen"] == 0
            assert offered["accepted"] + sum(offered["refused"].values()) == offered["writes"]
        for result in run["fan_out"]:
            cost = result["cost_per_change"]
            if result["kind"] != "rx":
                assert cost is None
                continue
            # Every change was re-read, serialized and encoded in some server process.
            assert cost["flushes"] >= 1 and cost["serialized"] >= 1 and cost["frames"] >= 1
            assert ("redis" in cost) == (run is multi)
    assert all(r["cost_per_change"]["redis"]["publish"] >= 1 for r in multi["fan_out"][:1])
    assert results["client"]["records"] == 1000
    names = {t["target"] for t in results["targets"]}
    assert {"work per change at 10 / at 1", "work per change at 10 / at 1 (multi)"} <= names
    assert "Redis commands per change at 10 / at 1 (multi)" in names
    assert {
        "fan-out p99 at 10: DCRF group observer / RxDjango",
        "sustained writes/s to one process",
    } <= names
    assert "target" in done.stdout and "holds" in done.stdout
