"""The Stepper interface: one factory, history/restore, and one retry loop for every scheme.

Every test runs serially and under ``mpiexec -n 2`` (the meshes are distributed).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_config

from rdgraph.errors import SolverError
from rdgraph.problem.config import Scheme, settings_from_dict
from rdgraph.simulation import Simulation
from rdgraph.timestepping import RobustStepper, Stepper
from rdgraph.timestepping.accelerated import AcceleratedStepper
from rdgraph.timestepping.jko import JKOStepper
from rdgraph.timestepping.linear import TimeStepper
from rdgraph.timestepping.upwind import UpwindStepper

GIBBS = {"coupling": "gibbs", "beta": 0.5, "potential": "(x[0] - 0.3*g)**2",
         "initial": "1 + 0.25*cos(pi*x[0])*(g + 1)"}
# scheme name -> (config sections, the class the factory must choose)
CASES = {
    "implicit-euler": ({"model": GIBBS}, TimeStepper),
    "crank-nicolson": ({"model": GIBBS}, TimeStepper),
    "bdf2": ({"model": GIBBS}, TimeStepper),
    "jko": ({"model": GIBBS}, JKOStepper),
    "upwind": ({"model": {**GIBBS, "coupling": "upwind"}}, UpwindStepper),
    "accelerated": ({"model": GIBBS, "time": {"damping": "nesterov", "restart": True}},
                    AcceleratedStepper),
}


def settings_of(case: str, dt: float = 0.02, t_end: float = 0.12):
    sections, _ = CASES[case]
    scheme = "implicit-euler" if case == "upwind" else case
    return settings_from_dict(make_config(
        mesh={"shape": "interval", "cells": [24]},
        **{**sections, "time": {"scheme": scheme, "dt": dt, "t_end": t_end,
                                **sections.get("time", {})}}))


@pytest.mark.parametrize("case", list(CASES))
def test_factory_chooses_the_scheme_class_and_wraps_it_in_the_retry_loop(case):
    sim = Simulation(settings_of(case))
    try:
        assert type(sim.stepper) is CASES[case][1]
        assert isinstance(sim.stepper, Stepper) and isinstance(sim.guard, RobustStepper)
        assert sim.guard.stepper is sim.stepper
        assert sim.stepper.scheme is Scheme(sim.settings.time.scheme)
    finally:
        sim.destroy()


@pytest.mark.parametrize("case", list(CASES))
def test_restoring_the_history_repeats_the_step_exactly(case):
    """history() + restore() hold everything the next step needs: the step repeated from
    them gives the same state (BDF2's ρ^{n-1}; the accelerated S, log ρ and clock)."""
    sim = Simulation(settings_of(case))
    try:
        for _ in range(2):
            sim.advance()
        start, history = sim.state.copy(), sim.stepper.history()
        sim.stepper.step(sim.state, sim.t)
        first = sim.state.array_r.copy()
        sim.stepper.step(sim.state, sim.t + sim.stepper.dt)  # moves the history on
        start.copy(sim.state)
        sim.stepper.restore(sim.state, history)
        sim.stepper.step(sim.state, sim.t)
        assert np.allclose(sim.state.array_r, first, rtol=1e-12, atol=1e-14)
        start.destroy()
    finally:
        sim.destroy()


@pytest.mark.parametrize("case", list(CASES))
def test_a_failed_step_is_two_half_steps_for_every_scheme(case):
    """The one retry loop: a step that fails once equals two steps of dt / 2 from the same
    state (a multistep scheme restarts from ρ^n alone), and the run goes on."""
    sim = Simulation(settings_of(case))
    ref = Simulation(settings_of(case, dt=0.01, t_end=0.12))
    try:
        real_step, calls = sim.stepper.step, []

        def failing_first(x, t):
            calls.append(t)
            if len(calls) == 1:
                raise SolverError("forced failure")
            return real_step(x, t)

        sim.stepper.step = failing_first
        sim.advance()
        ref.advance()
        ref.advance()
        assert sim.guard.retries == 1 and sim.step_index == 1
        assert np.allclose(sim.state.array_r, ref.state.array_r, rtol=1e-10, atol=1e-13)
        if sim.extra_columns:  # the accelerated diagnostics count both half steps' Newton
            newton = sim.diagnostics().extra[-1]
            assert newton == sim.guard.last_step_stats["nonlinear_iterations"] > 0
        sim.advance()  # a full step again, from the history the half steps left
        assert len(calls) == 2 and sim.guard.retries == 1
        assert np.all(np.isfinite(sim.state.array_r))
    finally:
        sim.destroy()
        ref.destroy()


def test_a_step_that_keeps_failing_leaves_the_last_good_state(monkeypatch):
    """Every halving fails (NaN): the state and BDF2's history are those before the step."""
    sim = Simulation(settings_of("bdf2"))
    try:
        sim.advance()
        sim.advance()
        before, history = sim.state.array_r.copy(), sim.stepper.history()

        def nan_step(self, x, t):
            x.set(np.nan)
            return 0

        monkeypatch.setattr(TimeStepper, "step", nan_step)  # the substeppers' too
        with pytest.raises(SolverError, match="failed after 3 halvings.*NaN"):
            sim.advance()
        assert np.array_equal(sim.state.array_r, before)
        assert np.array_equal(sim.stepper.history().vectors["previous"],
                              history.vectors["previous"])
    finally:
        sim.destroy()
