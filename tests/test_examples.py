"""examples/: every config and sweep loads, the NAS toy is the default, the API script runs."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

import numpy as np
import pytest
from conftest import load_module

from rdgraph.compat import MPI
from rdgraph.problem.config import load_settings
from rdgraph.problem.validation import graph_from_settings, vertex_data
from rdgraph.studies.sweep import load_sweep

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
TOML_FILES = sorted(EXAMPLES.glob("*.toml"))


def is_sweep(path: Path) -> bool:
    """Sweep files have a base config; configs have sections only."""
    return "base" in tomllib.loads(path.read_text())


def test_the_examples_folder_has_what_the_readme_promises():
    names = {p.name for p in EXAMPLES.iterdir()}
    assert {"nas_toy.toml", "convergence_1d.toml", "sweep.toml", "api_script.py"} <= names


@pytest.mark.parametrize("path", TOML_FILES, ids=[p.name for p in TOML_FILES])
def test_every_example_loads(path):
    if is_sweep(path):
        cases = load_sweep(path).cases()
        assert cases
    else:
        load_settings(path)
    # Commented: a reader learns from the file itself.
    assert path.read_text().lstrip().startswith("#")


def test_nas_toy_is_the_built_in_default():
    assert load_settings(EXAMPLES / "nas_toy.toml") == load_settings(None)


def test_sweep_example_expands_to_its_cases():
    sweep = load_sweep(EXAMPLES / "sweep.toml")
    cases = sweep.cases()
    assert len(cases) == 3 * 2 * 2
    assert cases[0].name == "beta=0.05_weight=0.5_dim=2"
    assert all(c.settings.mesh.cells == [32, 32] and c.settings.time.t_end == 2.0 for c in cases)
    assert {c.settings.graph.dim for c in cases} == {2, 3}


def load_api_script():
    return load_module(EXAMPLES / "api_script.py")


def test_api_script_matches_the_exact_solution_at_second_order():
    script = load_api_script()
    errors = [script.main(["--set", f"mesh.cells=[{cells}]", "--set", f"time.dt={dt}",
                           "--set", "time.t_end=0.1"], comm=MPI.COMM_WORLD)
              for cells, dt in ((16, 0.01), (32, 0.005))]
    coarse, fine = errors
    assert coarse["field_error"] < 5e-4 and coarse["mass_error"] < 1e-5
    # P1 in space and Crank–Nicolson in time: halving h and dt divides the errors by 4.
    assert 3.5 < coarse["field_error"] / fine["field_error"] < 4.5
    assert 3.5 < coarse["mass_error"] / fine["mass_error"] < 4.5


def test_slurm_script_is_valid_bash_and_runs_a_sweep():
    script = ROOT / "scripts" / "slurm_sweep.sh"
    subprocess.run(["bash", "-n", str(script)], check=True, timeout=30)
    text = script.read_text()
    assert "#SBATCH --ntasks" in text and "rdgraph sweep" in text and "srun" in text


def test_search_space_table_is_the_generators_output_and_matches_the_graph():
    """``examples/search_space.csv`` is what ``scripts/make_search_space.py`` writes, its
    labels are H(6, 5)'s words in vertex order, and the config reads it as ``loss[g]``."""
    script = load_module(ROOT / "scripts" / "make_search_space.py")
    labels, loss = script.loss_table(seed=0)
    settings = load_settings(EXAMPLES / "search_space.toml")
    graph = graph_from_settings(settings)
    assert graph.n == 5**6 == len(labels)
    assert list(graph.labels) == labels
    data = vertex_data(settings.model, graph)
    np.testing.assert_allclose(data.columns["loss"], loss, atol=5e-5)  # 4 decimals
    # Words in the order of numpy.ravel_multi_index: the label names vertex g's operations.
    g = int(np.ravel_multi_index((3, 3, 2, 3, 2, 3), (5,) * 6))
    assert graph.labels[g] == "c3-c3-c1-c3-c1-c3"
    assert loss.min() == 0.0 and loss.max() == 1.0
