"""The benchmarks' mpiexec launcher: a worker's result line is read back, a failure is kept."""

from __future__ import annotations

import pytest

from rdgraph.compat import MPI
from rdgraph.studies.launch import run_worker

# mpiexec is not started from inside an MPI job of several ranks.
pytestmark = pytest.mark.skipif(MPI.COMM_WORLD.size > 1, reason="starts mpiexec itself")

WORKER = '''
import json, sys
case = json.loads(sys.argv[sys.argv.index("--worker") + 1])
if case.get("fail"):
    raise SystemExit("worker failed: " + case["fail"])
print("noise")
print("RESULT " + json.dumps({"doubled": 2 * case["x"]}))
'''


def test_worker_result_is_read_back_and_failures_keep_their_message(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    result = run_worker(script, {"x": 21}, ranks=1, timeout=60, root=tmp_path)
    assert result["doubled"] == 42 and result["wall"] > 0
    failed = run_worker(script, {"x": 1, "fail": "bad case"}, ranks=1, timeout=60)
    assert "worker failed: bad case" in failed["error"] and failed["returncode"] != 0
