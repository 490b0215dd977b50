"""The whitelist expression language: accepted forms, values, and every rejection."""

from __future__ import annotations

import numpy as np
import pytest
import ufl

from rdgraph.errors import InputError
from rdgraph.expressions import parse

POINTS = np.array([[0.1, 0.5, 0.9], [0.2, -0.3, 1.5], [1.0, 2.0, 3.0]])


@pytest.mark.parametrize(
    "source, expected",
    [
        ("1", lambda x, g, t: np.ones(3)),
        ("-2.5e-1 + +3", lambda x, g, t: np.full(3, 2.75)),
        ("x[0]**2 + 3*x[1] - x[2]/2", lambda x, g, t: x[0] ** 2 + 3 * x[1] - x[2] / 2),
        ("sin(pi*x[0])*cos(x[1]) + tan(0.3)", lambda x, g, t:
            np.sin(np.pi * x[0]) * np.cos(x[1]) + np.tan(0.3)),
        ("exp(-t)*log(2 + x[0]) + sqrt(abs(x[1])) + tanh(g)", lambda x, g, t:
            np.exp(-t) * np.log(2 + x[0]) + np.sqrt(np.abs(x[1])) + np.tanh(g)),
        ("e**x[0] - (g + 1)**-0.5", lambda x, g, t: np.e ** x[0] - (g + 1) ** -0.5),
    ],
)
def test_values(source, expected):
    e = parse(source)
    assert np.allclose(e.evaluate(POINTS, g=2, t=0.7), expected(POINTS, 2, 0.7))
    g = np.array([0, 1, 2])
    assert np.allclose(e.evaluate(POINTS, g=g, t=0.7), expected(POINTS, g, 0.7))


def test_variables_and_depends_on():
    e = parse("x[1]*g + 1")
    assert e.variables == {"x1", "g"}
    assert e.depends_on("x") and e.depends_on("x1") and not e.depends_on("x0")
    assert not e.depends_on("t")
    assert str(e) == "x[1]*g + 1"


@pytest.mark.parametrize(
    "source, message",
    [
        ("__import__('os')", "unknown function '__import__'"),
        ("x.__class__", "not allowed"),
        ("open('f')", "unknown function 'open'"),
        ("(lambda: 1)()", "cannot be called"),
        ("1 if 1 else 2", "not allowed"),
        ("x[0] < 1", "not allowed"),
        ("'a'", "not a number"),
        ("True", "not a number"),
        ("1j", "not a number"),
        ("max(1, 2)", "unknown function 'max'"),
        ("sin(1, 2)", "exactly one positional argument"),
        ("sin(x=1)", "exactly one positional argument"),
        ("sin(*x)", "exactly one positional argument"),
        ("sinn(x[0])", "did you mean 'sin'"),
        ("y + 1", "unknown name 'y'"),
        ("x[3]", "does not exist"),
        ("x[0.5]", "literal integer"),
        ("x", "component of x"),
        ("sin", "is a function"),
        ("1 +", "not a valid expression"),
        ("", "empty"),
        ("[1, 2]", "not allowed"),
        ("x[0] @ x[1]", "not allowed"),
        ("a.b(1)", "cannot be called"),
        ("+".join(["1"] * 2000), "longer than"),
        ("sin(" * 80 + "1" + ")" * 80, "nested too deeply"),
    ],
)
def test_rejections_quote_the_expression(source, message):
    with pytest.raises(InputError) as info:
        parse(source, what="model.potential")
    text = str(info.value)
    assert message in text
    assert text.startswith("model.potential")
    if source and len(source) < 100:
        assert source in text


def test_variable_restrictions():
    with pytest.raises(InputError, match="'t' is not allowed"):
        parse("x[0]*t", variables=("x", "g"), what="model.potential")
    with pytest.raises(InputError, match="does not exist on a 2-D mesh"):
        parse("x[2]", gdim=2)
    with pytest.raises(InputError, match="expected an expression string"):
        parse(3.0)


def test_to_ufl():
    basix = pytest.importorskip("basix.ufl")
    mesh = ufl.Mesh(basix.element("Lagrange", "triangle", 1, shape=(2,)))
    x = ufl.SpatialCoordinate(mesh)
    e = parse("x[0]**2 + g*sin(x[1])")
    assert isinstance(e.to_ufl(x, g=2.0), ufl.core.expr.Expr)
    with pytest.raises(InputError, match="'g' has no value"):
        e.to_ufl(x)
    assert parse("2*pi").to_ufl(x) == pytest.approx(2 * np.pi)
