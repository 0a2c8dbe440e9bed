"""The README's main command: the demo converges with faults on and exits 0."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.harness import ROOT


def test_demo_converges_with_light_faults_and_exits_0() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSBRIDGE_")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bridge.cli",
            "demo",
            "--customers",
            "12",
            "--seconds",
            "12",
            "--faults",
            "light",
            "--seed",
            "7",
            "--json",
        ],
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["converged"] is True
    assert summary["duplicates_in_systems"] == 0
    assert summary["customers"] >= 12
    for system, check in summary["check"]["systems"].items():
        assert check["records"] == summary["customers"], system
        assert check["agree"] == summary["customers"], system
    assert summary["echoes_suppressed"] > 0
    assert summary["orders"]["linked"] >= 1
    assert summary["seconds"] < 120
