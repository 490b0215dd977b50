"""Run one benchmark case in its own ``mpiexec`` process and read its result back.

The benchmark scripts (``scripts/benchmark_graphs.py``, ``scripts/benchmark_solvers.py``)
measure every case in a fresh set of MPI processes, so that each case's peak memory and
compiled forms are its own. The script re-runs itself with ``--worker CASE`` (the case as
JSON); its worker prints one line ``RESULT {json}`` on rank 0, which :func:`run_worker` parses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from rdgraph.threads import single_threaded_blas

__all__ = ["RESULT_PREFIX", "run_worker"]

#: The line a worker prints on rank 0 before its result as JSON.
RESULT_PREFIX = "RESULT "
#: How many characters of a failed worker's output the error keeps.
ERROR_TAIL = 2000


def run_worker(script: str | Path, case: dict, ranks: int, timeout: float, *,
               root: str | Path | None = None) -> dict:
    """Run ``script --worker CASE`` under ``mpiexec -n ranks`` and return its result.

    Args:
        script: The benchmark script; it must accept ``--worker`` and print
            ``RESULT {json}`` on rank 0.
        case: The case, passed to the worker as JSON.
        ranks: MPI ranks.
        timeout: Seconds before the run is abandoned.
        root: Put first on the worker's ``PYTHONPATH`` (the checkout the script belongs to).

    Returns:
        The worker's result with ``wall`` (seconds, launch included) added, or
        ``{"error": message}`` (the end of the worker's output, or the time-out) with
        ``returncode`` where the worker exited.
    """
    env = dict(os.environ)
    if root is not None:
        env["PYTHONPATH"] = str(root) + os.pathsep + os.environ.get("PYTHONPATH", "")
    # The same single-threaded BLAS for every case, set before the worker starts: no
    # oversubscription of the ranks' cores.
    single_threaded_blas(env)
    mpiexec = str(Path(sys.executable).parent / "mpiexec")
    command = [mpiexec, "-n", str(ranks), sys.executable, str(script), "--worker",
               json.dumps(case)]
    start = time.perf_counter()
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            result = json.loads(line[len(RESULT_PREFIX):])
            result["wall"] = time.perf_counter() - start
            return result
    message = (proc.stderr or proc.stdout).strip()
    return {"error": message[-ERROR_TAIL:] or f"exit status {proc.returncode}",
            "returncode": proc.returncode}
