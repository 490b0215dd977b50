"""Fast versions of the verification studies: observed orders within ±0.2 of the theory."""

from __future__ import annotations

import pytest
from conftest import make_config

from rdgraph.errors import InputError
from rdgraph.problem.config import settings_from_dict
from rdgraph.studies import verification as v


@pytest.mark.parametrize("coupling", ["laplacian", "gibbs"])
@pytest.mark.parametrize("degree", [1, 2])
def test_space_orders_1d(coupling, degree):
    study = v.space_study(v.manufactured(coupling, 1), degree, [4, 8, 16])
    l2, h1 = study.orders
    assert l2[-1] == pytest.approx(degree + 1, abs=0.2)
    assert h1[-1] == pytest.approx(degree, abs=0.2)


def test_space_orders_2d_gibbs_p1():
    l2, h1 = v.space_study(v.manufactured("gibbs", 2), 1, [4, 8, 16]).orders
    assert l2[-1] == pytest.approx(2, abs=0.2)
    assert h1[-1] == pytest.approx(1, abs=0.2)


def test_space_orders_cosine_mode_2d():
    l2, h1 = v.space_study(v.cosine_mode(2), 1, [4, 8, 16]).orders
    assert l2[-1] == pytest.approx(2, abs=0.2)
    assert h1[-1] == pytest.approx(1, abs=0.2)


@pytest.mark.parametrize("scheme,steps", [("implicit-euler", [4, 8, 16]),
                                          ("crank-nicolson", [4, 8, 16]),
                                          ("bdf2", [8, 16, 32])])
def test_time_orders(scheme, steps):
    study = v.time_study(v.manufactured("gibbs", 1), scheme, steps, cells=64)
    expected = {"implicit-euler": 1, "crank-nicolson": 2, "bdf2": 2}[scheme]
    assert study.orders[0][-1] == pytest.approx(expected, abs=0.2)


@pytest.mark.parametrize("scheme,steps", [("implicit-euler", [4, 8, 16]),
                                          ("crank-nicolson", [4, 8, 16]),
                                          ("bdf2", [16, 32, 64])])
def test_vertex_masses_against_matrix_exponential(scheme, steps):
    study = v.mass_study(scheme, steps)
    expected = {"implicit-euler": 1, "crank-nicolson": 2, "bdf2": 2}[scheme]
    assert study.orders[0][-1] == pytest.approx(expected, abs=0.2)


def test_gibbs_entropy_monotone_and_rate_matches_gap():
    result = v.gibbs_study(t_end=3.0, steps=300, cells=16)
    assert result["monotone"]
    assert result["rel_entropy_last"] < 1e-3 * result["rel_entropy_first"]
    assert result["measured_rate"] == pytest.approx(result["spectral_gap"], rel=0.02)


def test_lumping_keeps_p1_density_positive():
    result = v.positivity_study(dim=1, cells=100)
    consistent, lumped = result[False], result[True]
    assert consistent[0] < -1e-3  # the consistent mass undershoots here ...
    assert lumped[0] > -1e-14  # ... the lumped one does not
    assert consistent[1] < 1e-12 and lumped[1] < 1e-12  # both conserve mass


def test_lumping_must_be_a_bool():
    with pytest.raises(InputError, match="space.lumping"):
        settings_from_dict(make_config(space={"lumping": "yes"}))


@pytest.mark.parametrize("scheme", ["implicit-euler", "crank-nicolson", "bdf2"])
def test_space_orders_every_scheme_affine_in_time(scheme):
    # Every scheme is exact in time for this solution: the orders are the spatial ones.
    sol = v.manufactured("gibbs", 2, affine=True)
    l2, h1 = v.space_study(sol, 1, [4, 8, 16], t_end=0.5, steps0=4, scheme=scheme,
                           tau_exponent=0).orders
    assert l2[-1] == pytest.approx(2, abs=0.2)
    assert h1[-1] == pytest.approx(1, abs=0.2)


@pytest.mark.parametrize("scheme", ["implicit-euler", "crank-nicolson", "bdf2"])
def test_affine_in_time_solution_has_no_time_error(scheme):
    # 2 steps or 16: the error is the (tiny, P2) space error either way. With a solution
    # that is not affine in time, 2 implicit-Euler steps would be off by ~1e-2.
    sol = v.manufactured("laplacian", 1, affine=True)
    coarse, fine = (v.space_study(sol, 2, [16], t_end=0.5, steps0=n, scheme=scheme,
                                  tau_exponent=0) for n in (2, 16))
    assert coarse.l2[0] < 1e-4
    assert coarse.l2[0] == pytest.approx(fine.l2[0], rel=0.05)


@pytest.mark.parametrize("dim,cells", [(2, 8), (3, 2)])
def test_semidiscrete_time_orders(dim, cells):
    studies = v.semidiscrete_time_studies(v.manufactured("gibbs", dim), 1, cells, [8, 16, 32])
    for study, expected in zip(studies, (1, 2, 2), strict=True):
        l2, h1 = study.orders
        assert l2[-1] == pytest.approx(expected, abs=0.2), study.name
        assert h1[-1] == pytest.approx(expected, abs=0.2), study.name


@pytest.mark.parametrize("dim,degree,cells", [(1, 2, [8, 16, 32]), (2, 1, [8, 16, 32])])
def test_gibbs_state_with_varying_potentials_converges_in_h(dim, degree, cells):
    study = v.gibbs_state_study(dim, degree, cells)
    l2, h1 = study.orders
    assert l2[-1] == pytest.approx(degree + 1, abs=0.2)
    assert h1[-1] == pytest.approx(degree, abs=0.2)
    # Vertex fractions ∫ρ_g/m against ∫π_g/Σ∫π_h: observed order 2k.
    fractions = v.observed_orders(study.sizes, study.extra["fractions"])
    assert fractions[-1] == pytest.approx(2 * degree, abs=0.2)


def test_lumping_keeps_2d_p1_density_positive():
    consistent, lumped = v.positivity_study(dim=2, cells=64, floor=1e-3).values()
    assert consistent[0] < -1e-3  # the consistent mass undershoots the background ...
    assert lumped[0] > 0  # ... the lumped one stays above 0
    assert consistent[1] < 1e-12 and lumped[1] < 1e-12


def test_only_option_names_known_families():
    import argparse

    from rdgraph.cli import convergence

    parser = argparse.ArgumentParser()
    convergence.add_arguments(parser)
    assert parser.parse_args(["--only", "space,gibbs-state"]).only == ("space", "gibbs-state")
    with pytest.raises(SystemExit):
        parser.parse_args(["--only", "space,nonsense"])
    with pytest.raises(InputError, match="--docs"):
        convergence.run_from_args(parser.parse_args(["--only", "space", "--docs"]))


def _study(orders_l2, orders_h1, expected=(2, 1)):
    """A study whose observed orders are the given ones (errors built backwards)."""
    study = v.Study("synthetic", "space", expected)
    l2, h1, size = 1.0, 1.0, 0.5
    study.add(size, l2, h1, 1.0)
    for p2, p1 in zip(orders_l2, orders_h1, strict=True):
        size /= 2
        l2, h1 = l2 / 2**p2, h1 / 2**p1
        study.add(size, l2, h1, 1.0)
    return study


def test_verdict_reads_the_finest_order_against_the_tolerance():
    ok, line = _study([1.2, 1.9], [0.7, 1.0]).verdict(0.25)
    assert ok and line.startswith("PASS synthetic: L2 order 1.90 (expected 2, tolerance 0.25)")
    ok, line = _study([2.0, 1.7], [1.0, 1.0]).verdict(0.25)
    assert not ok and line.startswith("FAIL") and "L2 order 1.70" in line
    assert _study([2.0, 3.1], [1.0, 1.4]).verdict(0.25)[0]  # superconvergence passes
    assert not _study([2.0, 2.0], [1.0, 0.5]).verdict(0.25)[0]  # H1 counts too
    text = _study([2.0, 2.0], [1.0, 1.0]).text()
    assert "|" not in text and "```" not in text and "L2 error" in text


def test_a_missed_order_exits_4(monkeypatch, capsys, tmp_path):
    import argparse

    from rdgraph.cli import convergence
    from rdgraph.compat import MPI

    parser = argparse.ArgumentParser()
    convergence.add_arguments(parser)
    verdicts = [_study([2, 2], [1, 1]).verdict(0.25), _study([2, 1.5], [1, 1]).verdict(0.25)]
    monkeypatch.setattr(convergence, "run_all", lambda *a, **k: v.Verification("", verdicts))
    args = parser.parse_args(["--only", "space", "--out", str(tmp_path)])
    assert convergence.run_from_args(args) == convergence.EXIT_ORDER_MISSED == 4
    if MPI.COMM_WORLD.rank == 0:
        out = capsys.readouterr().out
        assert "PASS synthetic" in out and "FAIL synthetic" in out
        assert "1 of 2 studies PASS, 1 FAIL" in out
    monkeypatch.setattr(convergence, "run_all",
                        lambda *a, **k: v.Verification("", verdicts[:1]))
    assert convergence.run_from_args(args) == 0
