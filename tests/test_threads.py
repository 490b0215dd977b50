"""One BLAS thread per process, whether NumPy was imported before rdgraph or not."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import serial_only

from rdgraph.threads import BLAS_THREAD_VARIABLES, single_threaded_blas

PROBE = """
import json, sys
{imports}
from threadpoolctl import threadpool_info
print(json.dumps([pool["num_threads"] for pool in threadpool_info()
                  if pool["user_api"] == "blas"]))
"""


def blas_threads(imports: str, **env_settings: str) -> list[int]:
    """The BLAS thread counts of a fresh interpreter after ``imports``."""
    env = {k: v for k, v in os.environ.items() if k not in BLAS_THREAD_VARIABLES}
    env.update(env_settings)
    out = subprocess.run([sys.executable, "-c", PROBE.format(imports=imports)], env=env,
                         capture_output=True, text=True, check=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


@serial_only
@pytest.mark.parametrize("imports", ["import rdgraph\nimport numpy",
                                     "import numpy\nimport rdgraph"],
                         ids=["rdgraph-first", "numpy-first"])
def test_rdgraph_leaves_one_blas_thread_per_process(imports):
    threads = blas_threads(imports)
    assert threads and all(count == 1 for count in threads), threads


@serial_only
def test_a_user_thread_count_wins():
    if os.cpu_count() < 2:
        pytest.skip("one core: OpenBLAS keeps one thread whatever is asked")
    threads = blas_threads("import numpy\nimport rdgraph", OPENBLAS_NUM_THREADS="2")
    assert threads and all(count == 2 for count in threads), threads


@serial_only
def test_import_order_does_not_matter_when_another_library_is_told():
    # OMP_NUM_THREADS alone: OpenBLAS keeps rdgraph's one thread in either order.
    first, second = (blas_threads(imports, OMP_NUM_THREADS="2") for imports in
                     ("import rdgraph\nimport numpy", "import numpy\nimport rdgraph"))
    assert first == second and all(count == 1 for count in first), (first, second)


def test_defaults_fill_only_what_the_user_left_unset():
    env = {"OMP_NUM_THREADS": "4"}
    single_threaded_blas(env)
    assert env == {"OMP_NUM_THREADS": "4", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
