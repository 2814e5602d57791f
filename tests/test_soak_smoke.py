"""The load run (``make soak``) in its short form: 100 churning clients, changes flowing."""

from __future__ import annotations

import json

import pytest

from support import run_harness

# The harness chooses its own database and backend: one pass of make test runs it.
pytestmark = pytest.mark.harness


def test_a_short_soak_has_no_errors_and_every_client_converges(tmp_path):
    output = tmp_path / "soak.json"
    done = run_harness("soak.py", "--short", "--output", str(output))
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    result = json.loads(output.read_text())
    assert result["passed"] and result["failures"] == []
    assert result["errors"] == 0, (result["error_kinds"], result["error_samples"])
    assert result["server_log"] == []
    assert result["converged"] and result["settled"] and result["database_agrees"]
    assert all(check["converged"] and check["mismatched"] == 0 for check in result["checks"])
    connections = result["connections"]
    clients = result["config"]["clients"]
    assert connections["ready"] == clients
    # Connections were closed and opened again, both ways, and some resumed.
    assert connections["opened"] > clients
    assert connections["closed"] > 0 and connections["resumed"] > 0
    assert result["changes"]["committed"] > 0
    assert result["frames_received"] > 0
    # The final state the clients agree on is the writer's last title.
    assert result["checks"][0]["reference"]["title"] == result["expected"]["title"]
    rss = result["rss_kib"]
    assert all(rss[name] > 0 for name in ("idle", "connected", "start", "end", "max"))
    assert rss["series"], "RSS was sampled during the run"
    assert "passed" in done.stdout
