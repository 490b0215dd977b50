"""The particle sampler: jumps, Langevin moves, reflection, the FEM comparison, the command.

Statistical checks use fixed seeds and |z| ≤ z_limit(number of checks): 3 standard errors,
raised by Bonferroni to a 1 % chance of failing a correct sampler (at 3 SE, 4 of 40 seeds
failed the 44 checks of the pure-jump test, whose z's had mean 0.00 and spread 1.00). Under
MPI every rank runs its own stream, so serial and 2-rank runs draw different (equally
valid) samples.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from conftest import make_config, write_config

from rdgraph.cli import main
from rdgraph.compat import MPI
from rdgraph.errors import InputError
from rdgraph.particles.plot import bin_fractions
from rdgraph.particles.run import EXIT_DISAGREE, compare_fractions, simulate, z_limit
from rdgraph.particles.sampler import ParticleProblem, ParticleSystem, reflect
from rdgraph.problem.config import settings_from_dict

Z = 3.0


def interval(cells=50, lower=0.0, upper=1.0, **sections) -> dict:
    return make_config(mesh={"shape": "interval", "cells": [cells], "lower": [lower],
                             "upper": [upper]}, **sections)


def test_reflect_folds_into_the_box():
    lower, upper = np.array([0.0, -1.0]), np.array([1.0, 1.0])
    x = np.array([[0.3, -0.2, 1.3, 2.5, -3.7], [0.0, -1.5, 1.25, 5.5, 0.99]])
    reflect(x, lower, upper)
    assert np.allclose(x, [[0.3, 0.2, 0.7, 0.5, 0.3], [0.0, -0.5, 0.75, 0.5, 0.99]])


def test_pure_jumps_follow_exp_minus_tL():
    """laplacian, V = 0, spatially uniform ρ0_g = c_g: particle fractions ~ exp(−tL) m0."""
    weights = [[0, 1, 2.0], [1, 2, 0.5], [2, 3, 1.0], [0, 3, 0.25]]
    data = interval(graph={"kind": "edges", "n": 4, "edges": weights},
                    model={"coupling": "laplacian", "beta": 0.1, "potential": "0",
                           "initials": ["3", "1", "0", "0.5"]},
                    time={"dt": 0.05, "t_end": 1.0})
    settings = settings_from_dict(data)
    particles = 20_000
    result = simulate(settings, particles=particles, seed=1, outputs=10, snapshots=1)
    problem = ParticleProblem.from_settings(settings)
    m0 = np.array([3, 1, 0, 0.5]) / 4.5
    lam, q = problem.graph.spectrum()

    def exact(times):
        return np.array([(q * np.exp(-t * lam)) @ q.T @ m0 for t in times])

    z = compare_fractions(result.fractions, exact(result.times), particles)
    assert np.abs(z).max() <= z_limit(z.size), z
    assert result.fractions[0, 2] == 0  # no mass at vertex 2 at first
    # The test can fail: the masses move by many SE, and the unnormalised rates matter
    # (a chain twice as fast, or the rates w_gh/deg_g, is rejected).
    assert np.abs(result.fractions[-1] - m0).max() > 20 * result.standard_errors[-1].max()
    assert np.abs(compare_fractions(result.fractions, exact(2 * result.times),
                                    particles)).max() > 2 * Z
    w = problem.graph.weights
    d = w.sum(axis=1)
    mu, v = np.linalg.eigh(w / np.sqrt(np.outer(d, d)))  # random walk: rates w_gh / d_g
    walk = np.array([np.sqrt(d) * ((v * np.exp(t * (mu - 1))) @ v.T @ (m0 / np.sqrt(d)))
                     for t in result.times])
    assert np.abs(compare_fractions(result.fractions, walk, particles)).max() > 2 * Z
    assert np.allclose(result.fractions.sum(axis=1), 1.0)


def test_gibbs_jumps_with_constant_potentials():
    """V_g = c_g: rates k_gh = w_gh exp((c_g − c_h)/2β), fractions ~ exp(tQ) m0 → ∝ exp(−c/β)."""
    beta, c = 0.5, np.array([0.0, 0.3, 0.6])
    data = interval(graph={"kind": "path", "n": 3, "weight": 1.5},
                    model={"coupling": "gibbs", "beta": beta, "potential": "0.3*g",
                           "initials": ["1", "1", "2"]},
                    time={"dt": 0.1, "t_end": 3.0})
    particles = 20_000
    result = simulate(settings_from_dict(data), particles=particles, seed=6, substeps=20,
                      outputs=10, snapshots=1)
    w = np.array([[0, 1.5, 0], [1.5, 0, 1.5], [0, 1.5, 0]])
    k = w * np.exp((c[:, None] - c[None, :]) / (2 * beta))  # k[g, h]: rate g -> h
    generator = k.T - np.diag(k.sum(axis=1))  # m' = generator @ m
    mu, v = np.linalg.eig(generator)
    m0 = np.array([0.25, 0.25, 0.5])
    exact = np.array([np.real(v @ (np.exp(mu * t) * np.linalg.solve(v, m0)))
                      for t in result.times])
    z = compare_fractions(result.fractions, exact, particles)
    assert np.abs(z).max() <= z_limit(z.size), z
    gibbs = np.exp(-c / beta) / np.exp(-c / beta).sum()
    assert np.allclose(exact[-1], gibbs, atol=5e-3)  # t = 3 is near the stationary state
    # The direction of the exponent matters: the reversed rates are rejected.
    reversed_rates = w * np.exp((c[None, :] - c[:, None]) / (2 * beta))
    mu, v = np.linalg.eig(reversed_rates.T - np.diag(reversed_rates.sum(axis=1)))
    wrong = np.array([np.real(v @ (np.exp(mu * t) * np.linalg.solve(v, m0)))
                      for t in result.times])
    assert np.abs(compare_fractions(result.fractions, wrong, particles)).max() > 3 * Z


def test_ornstein_uhlenbeck_mean_and_variance():
    """V = λx²/2 on a wide interval: Gaussian with the analytic mean and variance."""
    lam, beta, m0, s0 = 2.0, 0.5, 1.5, 0.04
    data = interval(lower=-6.0, upper=6.0, graph={"kind": "path", "n": 1},
                    model={"coupling": "laplacian", "beta": beta, "potential": f"{lam}/2*x[0]**2",
                           "initial": f"exp(-(x[0] - {m0})**2/(2*{s0}))"},
                    time={"dt": 0.05, "t_end": 0.5})
    particles = 20_000
    result = simulate(settings_from_dict(data), particles=particles, seed=2, substeps=25,
                      outputs=10, snapshots=5)
    if MPI.COMM_WORLD.rank != 0:
        return
    assert result.positions.shape == (6, particles, 1)
    limit = z_limit(2 * 6)
    for t, x in zip(result.snapshot_times, result.positions[:, :, 0], strict=True):
        mean = m0 * np.exp(-lam * t)
        var = s0 * np.exp(-2 * lam * t) + beta / lam * (1 - np.exp(-2 * lam * t))
        assert abs(x.mean() - mean) <= limit * np.sqrt(var / particles), (t, x.mean(), mean)
        # Gaussian samples: the variance estimate has standard error var sqrt(2/n).
        assert abs(x.var() - var) <= limit * var * np.sqrt(2 / particles), (t, x.var(), var)
    # The law did move: the mean fell from 1.5 to 1.5/e, the variance grew 5-fold.
    assert result.positions[-1].mean() < 0.6 and result.positions[0].mean() > 1.4
    assert result.positions[-1].var() > 5 * result.positions[0].var()


def test_rejection_sampling_survives_a_peak_between_quadrature_points():
    """A narrow initial bump that the coarse grid misses: the bound must be raised."""
    data = interval(cells=2, model={"initial": "exp(-(x[0] - 0.3)**2/(2*0.0001))"},
                    graph={"kind": "path", "n": 1})
    problem = ParticleProblem.from_settings(settings_from_dict(data))
    system = ParticleSystem(problem, 5000, np.random.default_rng(5))
    x = system.x[0]
    assert abs(x.mean() - 0.3) <= Z * 0.01 / np.sqrt(x.size)
    assert abs(x.std() - 0.01) <= Z * 0.01 / np.sqrt(2 * x.size)
    assert 0 < system.accepted / system.proposals < 1


def test_bin_fractions_integrate_the_density():
    x = np.linspace(0.0, 2.0, 21)
    bins = np.linspace(0.0, 2.0, 5)
    assert np.allclose(bin_fractions(x[:, None], 1 + x, [bins]), 0.5 + np.diff(bins**2) / 2)
    gx, gy = np.meshgrid(np.linspace(0, 1, 11), np.linspace(0, 2, 21), indexing="ij")
    points = np.column_stack([gx.ravel(), gy.ravel()])
    edges = [np.linspace(0, 1, 3), np.linspace(0, 2, 5)]
    masses = bin_fractions(points, points[:, 0] + 2 * points[:, 1], edges)
    mid = [0.5 * (e[1:] + e[:-1]) for e in edges]
    assert np.allclose(masses, 0.25 * (mid[0][:, None] + 2 * mid[1][None, :]))


def test_reflected_diffusion_becomes_uniform():
    """V = 0 in a box: reflection keeps particles in and spreads them uniformly."""
    data = make_config(model={"beta": 1.0, "potential": "0", "initial": "exp(-50*x[0]**2)"},
                       graph={"kind": "path", "n": 1}, time={"dt": 0.05, "t_end": 1.0})
    particles = 10_000
    result = simulate(settings_from_dict(data), particles=particles, seed=3, snapshots=1)
    if MPI.COMM_WORLD.rank != 0:
        return
    start, end = result.positions[0], result.positions[-1]
    assert ((end >= 0) & (end <= 1)).all()
    assert start[:, 0].mean() < 0.15
    assert np.all(np.abs(end.mean(axis=0) - 0.5) <= z_limit(4) * np.sqrt(1 / 12 / particles))
    assert np.all(np.abs(end.var(axis=0) - 1 / 12) <= z_limit(4) * np.sqrt(1 / 180 / particles))


def test_same_seed_same_result():
    data = make_config(graph={"kind": "cycle", "n": 3},
                       model={"coupling": "gibbs", "beta": 0.5, "potential": "(x[0] - 0.3*g)**2",
                              "initial": "1 + x[1]"},
                       time={"dt": 0.02, "t_end": 0.1})
    settings = settings_from_dict(data)
    a = simulate(settings, particles=2000, seed=7, outputs=5)
    b = simulate(settings, particles=2000, seed=7, outputs=5)
    c = simulate(settings, particles=2000, seed=8, outputs=5)
    assert np.array_equal(a.fractions, b.fractions)
    assert not np.array_equal(a.fractions, c.fractions)
    if MPI.COMM_WORLD.rank == 0:
        assert np.array_equal(a.positions, b.positions) and np.array_equal(a.labels, b.labels)
        assert not np.array_equal(a.positions, c.positions)


GIBBS_1D = {
    "mesh": {"shape": "interval", "cells": [80], "lower": [-1.0], "upper": [1.0]},
    "graph": {"kind": "path", "n": 3, "weight": 1.0},
    "model": {"coupling": "gibbs", "beta": 0.3, "potential": "(x[0] - 0.4*(g - 1))**2 + 0.2*g",
              "initial": "1 + 0.5*x[0]*(g - 1)"},
    "time": {"dt": 0.005, "t_end": 0.3},
}


def test_compare_passes_on_a_small_gibbs_problem(shared_tmp):
    config = write_config(shared_tmp / "gibbs1d.toml", make_config(**GIBBS_1D))
    out = shared_tmp / "run"
    status = main(["particles", config, "--out", str(out), "--particles", "10000",
                   "--seed", "4", "--outputs", "10", "--compare", "--quiet"])
    assert status == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["passed"] and summary["max_abs_z"] <= summary["z_limit"]
    assert summary["tests"] == 33 and summary["z_limit"] == pytest.approx(z_limit(33))
    assert summary["ranks"] == MPI.COMM_WORLD.size and summary["particles"] == 10000
    with open(out / "particles.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["step", "t", "particles", "frac_0", "frac_1", "frac_2", "se_0", "se_1",
                       "se_2"]
    table = np.array(rows[1:], dtype=float)
    assert np.array_equal(table[:, 0], np.arange(0, 61, 6))
    assert np.allclose(table[:, 3:6].sum(axis=1), 1.0)
    positions = np.load(out / "positions.npz")
    assert positions["x"].shape == (4, 10000, 1) and positions["g"].shape == (4, 10000)
    assert np.allclose(positions["t"], [0.0, 0.1, 0.2, 0.3])
    assert (out / "comparison.png").stat().st_size > 0
    # The final histograms of the three vertices fit the FEM densities (χ²/dof near 1).
    chi2 = summary["density_chi2_per_dof"]
    assert len(chi2) == 3 and all(0.3 < v < 2.0 for v in chi2.values()), chi2
    assert (out / "fem" / "diagnostics.csv").exists()
    # The vertex masses did move, by more than the SE: the check has something to check.
    drift = np.abs(table[-1, 3:6] - table[0, 3:6]).max()
    assert drift > 10 * table[-1, 6:9].max()


def test_compare_fails_when_the_particle_step_is_too_coarse(shared_tmp):
    """A stiff potential with a coarse Euler–Maruyama step: the 3-SE check must catch it."""
    data = make_config(**GIBBS_1D)
    data["model"]["potential"] = "8*(x[0] - 0.5*(g - 1))**2 + 0.5*g"
    data["time"] = {"dt": 0.1, "t_end": 0.5}
    config = write_config(shared_tmp / "stiff.toml", data)
    status = main(["particles", config, "--out", str(shared_tmp / "stiff"), "--particles",
                   "20000", "--compare", "--quiet"])
    assert status == EXIT_DISAGREE
    summary = json.loads((shared_tmp / "stiff" / "summary.json").read_text())
    assert not summary["passed"] and summary["max_abs_z"] > summary["z_limit"]


def test_z_limit_is_3_or_bonferroni():
    assert z_limit(1) == Z and z_limit(2) == Z
    # 168 tests at 1 % family-wise error: P(|z| > limit) = 0.01 / 168 each.
    assert z_limit(168) == pytest.approx(4.01, abs=0.01)
    assert z_limit(10**6) > z_limit(168)


@pytest.mark.parametrize("change, message", [
    ({"mesh": {"shape": "file", "file": "mesh.msh", "cells": [8, 8]}}, "box mesh"),
    ({"model": {"source": "x[0]"}}, "source"),
    ({"model": {"initial": "x[0] - 0.5"}}, "negative"),
    ({"model": {"initial": "0"}}, "zero total mass"),
])
def test_bad_config_is_refused(shared_tmp, capsys, change, message):
    data = make_config(**change)
    name = message.replace(" ", "_")
    config = write_config(shared_tmp / f"{name}.toml", data)
    out = shared_tmp / f"bad-{name}"
    status = main(["particles", config, "--out", str(out), "--particles", "100"])
    assert status == 2
    assert not out.exists()
    if MPI.COMM_WORLD.rank == 0:
        assert message in capsys.readouterr().err
    with pytest.raises(InputError, match=message):
        ParticleProblem.from_settings(settings_from_dict(data))


def test_bad_arguments_are_refused(shared_tmp, capsys):
    config = write_config(shared_tmp / "ok.toml", make_config())
    status = main(["particles", config, "--out", str(shared_tmp / "none"), "--particles", "0"])
    assert status == 2
    assert not (shared_tmp / "none").exists()
    if MPI.COMM_WORLD.rank == 0:
        assert "--particles 0" in capsys.readouterr().err


# A product graph, K_3 □ P_4 (12 vertices, weighted degrees 4 and 6): the jumps read its CSR
# rows.
PRODUCT = {"kind": "product", "n": 12, "factors": [{"kind": "complete", "n": 3},
                                           {"kind": "path", "n": 4, "weight": 2.0}]}


def test_laplacian_jumps_on_a_product_graph_follow_exp_minus_tL():
    """V = 0, uniform ρ0_g ∝ 1 + g: the fractions follow exp(−tL) m0, L from the factors."""
    data = interval(cells=4, graph=PRODUCT,
                    model={"coupling": "laplacian", "beta": 0.1, "potential": "0",
                           "initial": "1 + g"},
                    time={"dt": 0.1, "t_end": 1.0})
    particles = 20_000
    result = simulate(settings_from_dict(data), particles=particles, seed=11, outputs=5,
                      snapshots=1)
    # L built here from the factors' Laplacians (Kronecker sums), not from rdgraph's graph.
    k3 = 2 * np.eye(3) - (np.ones((3, 3)) - np.eye(3))
    p4 = 2.0 * (np.diag([1, 2, 2, 1]) - np.eye(4, k=1) - np.eye(4, k=-1))
    L = np.kron(k3, np.eye(4)) + np.kron(np.eye(3), p4)
    m0 = (1 + np.arange(12)) / np.sum(1 + np.arange(12))
    lam, q = np.linalg.eigh(L)
    exact = np.array([q @ (np.exp(-t * lam) * (q.T @ m0)) for t in result.times])
    z = compare_fractions(result.fractions, exact, particles)
    assert np.abs(z).max() <= z_limit(z.size), z
    # The test can fail: the fractions moved by many standard errors over the run.
    assert np.abs(result.fractions[-1] - m0).max() > 10 * result.standard_errors[-1].max()


def test_gibbs_jumps_on_a_product_graph_reach_their_stationary_law():
    """V_g = 0.2 g (constant in x): each step a particle leaves g with probability
    1 − exp(−κ_g τ), κ_g = Σ_h k_gh, to h with probability k_gh/κ_g, k_gh = w_gh e^{(V_g−V_h)/2β}.
    After many steps the occupation is that chain's stationary law (built here from the
    factors; it tends to ∝ exp(−V_g/β) as τ → 0, and differs from it at τ = 0.25)."""
    beta, tau = 0.5, 0.25
    data = interval(cells=4, graph=PRODUCT,
                    model={"coupling": "gibbs", "beta": beta, "potential": "0.2*g",
                           "initial": "1"},
                    time={"dt": tau, "t_end": 25.0})
    particles = 20_000
    result = simulate(settings_from_dict(data), particles=particles, seed=12, outputs=2,
                      snapshots=1)
    k3 = np.ones((3, 3)) - np.eye(3)
    p4 = 2.0 * (np.eye(4, k=1) + np.eye(4, k=-1))
    w = np.kron(k3, np.eye(4)) + np.kron(np.eye(3), p4)
    v = 0.2 * np.arange(12)
    k = w * np.exp((v[:, None] - v[None, :]) / (2 * beta))
    kappa = k.sum(axis=1)
    leave = -np.expm1(-kappa * tau)
    chain = np.diag(1 - leave) + (leave / kappa)[:, None] * k
    values, vectors = np.linalg.eig(chain.T)
    stationary = np.real(vectors[:, np.argmin(np.abs(values - 1))])
    stationary /= stationary.sum()
    # The slowest mode of the chain decays by more than e^-20 over the 100 steps.
    assert np.sort(np.abs(values))[-2] ** 100 < np.exp(-20)
    z = compare_fractions(result.fractions[-1], stationary, particles)
    assert np.abs(z).max() <= z_limit(z.size), z
    # The test can fail: the uniform start and the τ → 0 law are many SE away.
    for other in (np.full(12, 1 / 12), np.exp(-v / beta) / np.exp(-v / beta).sum()):
        assert np.abs(compare_fractions(result.fractions[-1], other, particles)).max() > 5


def test_large_graph_outputs_aggregate_and_name_the_top_vertices(shared_tmp, capsys):
    """H(3,5), 125 vertices (> CSV_VERTEX_COLUMNS): aggregates in particles.csv and
    comparison.csv, every value in fractions.npz and comparison.npz, and the end table lists
    the 10 heaviest with their labels."""
    data = interval(cells=4, graph={"kind": "hamming", "dim": 3, "choices": 5, "n": 125},
                    model={"coupling": "gibbs", "beta": 0.5, "potential": "0.02*g",
                           "initial": "1"},
                    time={"dt": 0.1, "t_end": 0.3})
    config = write_config(shared_tmp / "h35.toml", data)
    out = shared_tmp / "h35"
    # With the FEM comparison (whose verdict is not the point here: τ·κ ≈ 1 is coarse).
    status = main(["particles", config, "--out", str(out), "--particles", "3000",
                   "--outputs", "3", "--seed", "2", "--compare"])
    assert status in (0, EXIT_DISAGREE)
    report = capsys.readouterr().out
    with open(out / "comparison.csv") as f:
        assert next(csv.reader(f)) == ["step", "t", "max_abs_z", "max_abs_z_vertex"]
    comparison = np.load(out / "comparison.npz")
    assert comparison["z"].shape == comparison["fem"].shape == (4, 125)
    assert (out / "comparison.png").stat().st_size > 0
    with open(out / "particles.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["step", "t", "particles", "frac_max", "frac_max_vertex",
                       "frac_effective_vertices"]
    fractions = np.load(out / "fractions.npz")
    assert fractions["fractions"].shape == (4, 125)
    assert np.allclose(fractions["fractions"].sum(axis=1), 1.0)
    final = fractions["fractions"][-1]
    last = np.array(rows[-1], dtype=float)
    assert last[3] == final.max() and int(last[4]) == int(np.argmax(final))
    if MPI.COMM_WORLD.rank == 0:
        top = np.argsort(-final, kind="stable")[:10]
        table = report[report.index("t = 0.3:"):].splitlines()[2:12]
        assert [int(line.split()[0]) for line in table] == top.tolist()
        # Vertex g of H(3, 5) is labelled by its word, e.g. 7 = (0, 1, 2) -> "0-1-2".
        word = "-".join(map(str, np.unravel_index(top[0], (5, 5, 5))))
        assert table[0].split()[-1] == word
        assert "the 10 of 125 vertices with the most particles" in report
