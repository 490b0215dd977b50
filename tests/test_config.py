"""Config reading, validation and --set overrides (no MPI work)."""

from __future__ import annotations

import pytest

from rdgraph.errors import InputError
from rdgraph.problem.config import (
    apply_overrides,
    load_settings,
    parse_override,
    settings_from_dict,
)


def test_default_problem_is_valid():
    s = load_settings()
    assert s.model.coupling == "gibbs"
    assert s.graph.kind == "hypercube" and s.graph.dim == 3
    assert s.num_steps == round(s.time.t_end / s.time.dt)


@pytest.mark.parametrize(
    "data, message",
    [
        ({"mesh": {"shap": "box"}}, "did you mean 'shape'"),
        ({"meshes": {}}, "did you mean 'mesh'"),
        ({"time": {"dt": 0}}, "time.dt = 0"),
        ({"time": {"dt": "fast"}}, "expected a number"),
        ({"time": {"t_end": -1.0}}, "time.t_end"),
        ({"time": {"dt": 0.3, "t_end": 1.0}}, "whole number of steps"),
        ({"space": {"degree": 0}}, "space.degree"),
        ({"space": {"degree": True}}, "expected an integer"),
        ({"mesh": {"shape": "rectangle", "cells": [4]}}, "expected 2 entries"),
        ({"mesh": {"shape": "interval", "cells": [4], "lower": [1.0], "upper": [0.0]}},
         "less than"),
        ({"mesh": {"shape": "file"}}, "mesh.file"),
        ({"model": {"coupling": "upwnd"}}, "must be one of"),
        ({"model": {"beta": float("nan")}}, "finite"),
        ({"model": {"potential": "x[0]", "potentials": ["x[0]"]}}, "not both"),
        ({"graph": {"weight": -1.0}}, "graph.weight"),
        ({"output": {"npz": "yes"}}, "output.npz"),
        ({"solver": {"factorization_precision": "half"}}, "solver.factorization_precision"),
    ],
)
def test_invalid_settings_are_refused(data, message):
    with pytest.raises(InputError, match=None) as info:
        settings_from_dict(data)
    assert message in str(info.value)


def test_overrides_parse_toml_values_and_reject_unknown_keys():
    assert parse_override("time.dt=1e-3") == ("time", "dt", 1e-3)
    assert parse_override("mesh.cells=[4, 5]") == ("mesh", "cells", [4, 5])
    assert parse_override("model.potential=x[0]**2") == ("model", "potential", "x[0]**2")
    with pytest.raises(InputError, match="did you mean 'dt'"):
        parse_override("time.dtt=1")
    with pytest.raises(InputError, match="section.key"):
        parse_override("dt=1")
    data = apply_overrides({"time": {"dt": 1.0}}, ["time.dt=0.5", "graph.n=4"])
    assert data == {"time": {"dt": 0.5}, "graph": {"n": 4}}


def test_config_file_paths_are_relative_to_the_file(tmp_path):
    (tmp_path / "sub").mkdir()
    cfg = tmp_path / "sub" / "c.toml"
    cfg.write_text('[mesh]\nshape = "file"\nfile = "m.msh"\n')
    s = load_settings(cfg)
    assert s.mesh.file == str(tmp_path / "sub" / "m.msh")


def test_missing_and_malformed_config_files(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[mesh\n")
    with pytest.raises(InputError, match="not valid TOML"):
        load_settings(bad)


@pytest.mark.parametrize("single", ["potential", "initial", "source"])
def test_set_of_one_of_an_either_or_pair_replaces_the_other(tmp_path, single):
    many = single + "s"
    path = tmp_path / "c.toml"
    path.write_text(f'[graph]\nkind = "path"\nn = 2\n[model]\n{many} = ["1", "2"]\n')
    s = load_settings(path, [f"model.{single}=3*g"])
    assert getattr(s.model, single) == "3*g" and getattr(s.model, many) is None
    path.write_text(f'[graph]\nkind = "path"\nn = 2\n[model]\n{single} = "g"\n')
    s = load_settings(path, [f"model.{many}=['1', 'x[0]']"])
    assert getattr(s.model, many) == ["1", "x[0]"] and getattr(s.model, single) is None
    # Both in the file is still an error: nothing on the command line chose.
    path.write_text(f'[model]\n{single} = "g"\n{many} = ["1"]\n')
    with pytest.raises(InputError, match="not both"):
        load_settings(path)


@pytest.mark.parametrize("dt, t_end, steps, fixed_t_end, fixed_dt", [
    (0.3, 1.0, 3, "0.9", "0.333333333333"),
    (0.05, 1.01, 20, "1", "0.0505"),
    (0.4, 0.1, 1, "0.4", "0.1"),
])
def test_t_end_off_the_step_grid_suggests_a_fix(dt, t_end, steps, fixed_t_end, fixed_dt):
    with pytest.raises(InputError) as error:
        settings_from_dict({"time": {"dt": dt, "t_end": t_end}})
    message = str(error.value)
    assert f"time.t_end = {fixed_t_end} ({steps} steps)" in message
    assert f"time.dt = {fixed_dt} to end at" in message
    # Both suggestions are valid settings.
    settings_from_dict({"time": {"dt": dt, "t_end": float(fixed_t_end)}})
    settings_from_dict({"time": {"dt": float(fixed_dt), "t_end": t_end}})
