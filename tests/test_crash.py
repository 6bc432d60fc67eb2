"""The crash harness with 3 kills (benchmarks/crash.py; `make crash N=10` for the full run): every killed build,
rerun, ends with the files, bytes, row counts of an uninterrupted build, no duplicates and no temporaries.

Slow by nature (two clean builds and three kill/rerun pairs, each starting its own Ray: several minutes on 2 cores).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow  # runs the job in its own processes


@pytest.mark.timeout(3600)
def test_three_kills_resume_to_the_uninterrupted_result(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "crash.py"), "--kills", "3", "--seed", "1",
                           "--work", str(tmp_path / "crash")], capture_output=True, text=True, timeout=3500,
                          cwd=str(ROOT))
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
    rows = [ln for ln in proc.stdout.splitlines() if ln.startswith("| ") and ln[2].isdigit()]
    assert len(rows) == 3, proc.stdout
    assert all(r.rstrip(" |").endswith("ok") for r in rows), proc.stdout
    assert "3/3 kills resumed to the uninterrupted result." in proc.stdout
