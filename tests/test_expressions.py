"""The whitelist expression language: accepted forms, values, and every rejection."""

from __future__ import annotations

import numpy as np
import pytest

from rdgraph.errors import InputError
from rdgraph.problem.expressions import MAX_DEPTH, MAX_LENGTH, Expression, parse

POINTS = np.array([[0.1, 0.5, 0.9], [0.2, -0.3, 1.5], [1.0, 2.0, 3.0]])


# -- values -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "source, expected",
    [
        ("1", lambda x, g, t: np.ones(3)),
        ("-2.5e-1 + +3", lambda x, g, t: np.full(3, 2.75)),
        ("1e-3 * 2", lambda x, g, t: np.full(3, 2e-3)),
        ("2**3**2", lambda x, g, t: np.full(3, 2.0**9)),  # right-associative, as in Python
        ("-x[0]**2", lambda x, g, t: -(x[0] ** 2)),
        ("x[0]**2 + 3*x[1] - x[2]/2", lambda x, g, t: x[0] ** 2 + 3 * x[1] - x[2] / 2),
        ("(x[0] - 0.1*g)**2 / (1 + t)", lambda x, g, t: (x[0] - 0.1 * g) ** 2 / (1 + t)),
        ("sin(pi*x[0])*cos(x[1]) + tan(0.3)", lambda x, g, t:
            np.sin(np.pi * x[0]) * np.cos(x[1]) + np.tan(0.3)),
        ("exp(-t)*log(2 + x[0]) + sqrt(abs(x[1])) + tanh(g)", lambda x, g, t:
            np.exp(-t) * np.log(2 + x[0]) + np.sqrt(np.abs(x[1])) + np.tanh(g)),
        ("e**x[0] - (g + 1)**-0.5", lambda x, g, t: np.e ** x[0] - (g + 1) ** -0.5),
        ("  x[2] * g  ", lambda x, g, t: x[2] * g),
    ],
)
def test_values(source, expected):
    e = parse(source)
    value = e.evaluate(POINTS, g=2, t=0.7)
    assert value.shape == (3,) and value.dtype == np.float64
    assert np.allclose(value, expected(POINTS, 2, 0.7))
    g = np.array([0, 1, 2])  # one vertex per particle
    assert np.allclose(e.evaluate(POINTS, g=g, t=0.7), expected(POINTS, g, 0.7))


def test_evaluate_shapes_and_non_finite_values():
    e = parse("x[0] + x[1]", gdim=2)
    assert np.allclose(e.evaluate(POINTS[:2]), POINTS[0] + POINTS[1])  # (gdim, P)
    assert np.allclose(e.evaluate(POINTS), POINTS[0] + POINTS[1])  # (3, P)
    constant = parse("2*pi").evaluate(POINTS)
    assert np.array_equal(constant, np.full(3, 2 * np.pi))
    constant[0] = 0.0  # a fresh, writable array
    assert parse("g").evaluate(POINTS, g=np.array([3, 4, 5])).tolist() == [3.0, 4.0, 5.0]
    assert parse("t").evaluate(np.zeros((3, 0))).shape == (0,)
    with np.errstate(all="raise"):  # NaN and inf are returned, no warning raised
        assert np.isinf(parse("1/0").evaluate(POINTS)).all()
        assert np.isnan(parse("log(-1) + x[0]").evaluate(POINTS)).all()
        assert np.isnan(parse("sqrt(x[1])").evaluate(POINTS))[1]
        assert np.isinf(parse("exp(1000*x[2])").evaluate(POINTS)).all()
        assert np.isnan(parse("(-8)**(1/3)").evaluate(POINTS)).all()


def test_variables_and_depends_on():
    e = parse("x[1]*g + 1")
    assert isinstance(e, Expression)
    assert e.variables == {"x1", "g"}
    assert e.depends_on("x") and e.depends_on("x1") and not e.depends_on("x0")
    assert e.depends_on("g") and not e.depends_on("t")
    assert str(e) == "x[1]*g + 1" == e.source
    assert parse("pi*e + sin(2)").variables == frozenset()
    assert not parse("pi").depends_on("x")
    assert parse("x[0] + x[2] + t").variables == {"x0", "x2", "t"}
    assert parse("x[0]*g") == parse("x[0]*g")  # immutable values, comparable and hashable
    assert len({parse("x[0]*g"), parse("x[0]*g")}) == 1


# -- rejections -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "source, message",
    [
        ("__import__('os')", "unknown function '__import__'"),
        ("__import__('os').system('ls')", "cannot be called"),
        ("x.__class__", "attribute access ('x.__class__') is not allowed"),
        ("().__class__.__bases__", "attribute access"),
        ("open('f')", "unknown function 'open'"),
        ("(lambda: 1)()", "'lambda: 1' cannot be called"),
        ("lambda: 1", "a lambda"),
        ("1 if 1 else 2", "a conditional expression ('1 if 1 else 2') is not allowed"),
        ("x[0] < 1", "a comparison ('x[0] < 1') is not allowed"),
        ("x[0] and 1", "operator 'and' is not allowed"),
        ("not x[0]", "operator 'not' is not allowed"),
        ("~1", "operator '~' is not allowed"),
        ("x[0]^2", "operator '^' is not allowed (use ** for powers)"),
        ("x[0] % 2", "operator '%' is not allowed"),
        ("x[0] // 2", "operator '//' is not allowed"),
        ("x[0] @ x[1]", "operator '@' is not allowed"),
        ("'a'", "'a' is not a number"),
        ("b'a'", "b'a' is not a number"),
        ("f'{x}'", "a string"),
        ("True", "True is not a number"),
        ("None", "None is not a number"),
        ("1j", "1j is not a number"),
        ("...", "Ellipsis is not a number"),
        ("1e400", "the number 1e400 is too large"),
        ("1" + "0" * 400, "is too large"),
        ("max(1, 2)", "unknown function 'max'"),
        ("ln(x[0])", "unknown function 'ln' (did you mean 'log'?)"),
        ("sin(1, 2)", "sin() takes exactly one positional argument, got 'sin(1, 2)'"),
        ("sin()", "exactly one positional argument"),
        ("sin(x=1)", "exactly one positional argument"),
        ("sin(1, x=1)", "exactly one positional argument"),
        ("sin(*x)", "exactly one positional argument"),
        ("sin(**x)", "exactly one positional argument"),
        ("sinn(x[0])", "unknown function 'sinn' (did you mean 'sin'?)"),
        ("y + 1", "unknown name 'y'"),
        ("sinn + 1", "unknown name 'sinn' (did you mean 'sin'?)"),
        ("tt", "unknown name 'tt' (did you mean 't'?)"),
        ("x[3]", "x[3] does not exist on a 3-D mesh (use x[0]..x[2])"),
        ("x[-1]", "x must be indexed by a literal integer"),
        ("x[0.5]", "literal integer"),
        ("x[True]", "literal integer"),
        ("x[g]", "literal integer"),
        ("x[0:2]", "literal integer"),
        ("x[0][0]", "only x is indexed"),
        ("g[0]", "only x is indexed"),
        ("x", "'x' needs a component, e.g. x[0]"),
        ("sin", "'sin' is a function: write sin(...)"),
        ("[1, 2]", "a list ('[1, 2]') is not allowed"),
        ("(1, 2)", "a tuple"),
        ("{1: 2}", "a dict"),
        ("[i for i in x]", "a comprehension"),
        ("(y := 1)", "an assignment"),
        ("a.b(1)", "'a.b' cannot be called"),
        ("1 +", "not a valid expression"),
        ("x[0] = 1", "not a valid expression"),
        ("import os", "not a valid expression"),
        ("1; 2", "not a valid expression"),
        ("sin(x[0]", "not a valid expression"),
    ],
)
def test_rejections_quote_the_expression(source, message):
    with pytest.raises(InputError) as info:
        parse(source, what="model.potential")
    text = str(info.value)
    assert message in text
    assert text.startswith(f"model.potential '{source}': ")


@pytest.mark.parametrize(
    "source, message",
    [
        ("", "the expression is empty"),
        ("   ", "the expression is empty"),
        ("+".join(["1"] * (MAX_LENGTH // 2 + 1)), f"longer than {MAX_LENGTH} characters"),
        ("-" * (MAX_DEPTH + 5) + "1", "nested too deeply"),
        ("+".join(["x[0]"] * (MAX_DEPTH + 5)), "nested too deeply"),
        ("sin(" * 300 + "1" + ")" * 300, "not a valid expression"),  # Python's own limit
    ],
)
def test_rejections_of_size(source, message):
    with pytest.raises(InputError) as info:
        parse(source, what="model.initial")
    assert message in str(info.value)
    assert str(info.value).startswith("model.initial ")


def test_limits_allow_reasonable_expressions():
    assert parse("sin(" * 50 + "x[0]" + ")" * 50).evaluate(POINTS).shape == (3,)
    terms = MAX_DEPTH // 2
    total = parse("+".join(["x[0]"] * terms)).evaluate(POINTS)
    assert np.allclose(total, terms * POINTS[0])


def test_non_strings_are_rejected():
    for value in (3.0, None, b"x[0]", ["x[0]"]):
        with pytest.raises(InputError, match="model.source = .*: expected an expression string"):
            parse(value, what="model.source")


def test_nothing_is_evaluated(monkeypatch):
    import ast
    import builtins

    real_compile = builtins.compile
    calls = []

    def forbidden(*args, **kwargs):
        calls.append(args)
        raise AssertionError("eval/exec called")

    def ast_only_compile(source, filename, mode, flags=0, *args, **kwargs):
        if not flags & ast.PyCF_ONLY_AST:  # ast.parse itself compiles to a tree, never code
            calls.append(source)
            raise AssertionError("compile to code called")
        return real_compile(source, filename, mode, flags, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(builtins, "eval", forbidden)
        patch.setattr(builtins, "exec", forbidden)
        patch.setattr(builtins, "compile", ast_only_compile)
        e = parse("sin(x[0]) + g*t")
        value = e.evaluate(POINTS, g=1, t=2.0)
    assert not calls
    assert np.allclose(value, np.sin(POINTS[0]) + 2.0)


def test_variable_and_dimension_restrictions():
    with pytest.raises(InputError) as info:
        parse("x[0]*t", variables=("x", "g"), gdim=2, what="model.potential")
    assert str(info.value) == (
        "model.potential 'x[0]*t': 't' is not allowed here (allowed: x[0], x[1], g)"
    )
    with pytest.raises(InputError, match="'g' is not allowed here"):
        parse("g", variables=("x",))
    with pytest.raises(InputError, match=r"'x' is not allowed here \(allowed: g, t\)"):
        parse("x[0]", variables=("g", "t"))
    with pytest.raises(InputError, match=r"'x\[i\]' is not allowed here"):
        parse("x", variables=("t",))
    with pytest.raises(InputError, match=r"does not exist on a 2-D mesh \(use x\[0\]..x\[1\]\)"):
        parse("x[2]", gdim=2)
    with pytest.raises(InputError, match=r"on a 1-D mesh \(use x\[0\]\)"):
        parse("x[1]", gdim=1)
    assert parse("x[1]", gdim=2).variables == {"x1"}
    assert parse("1 + pi", variables=()).variables == frozenset()
    with pytest.raises(ValueError, match="variables"):
        parse("1", variables=("y",))
    with pytest.raises(ValueError, match="gdim"):
        parse("1", gdim=4)


# -- UFL --------------------------------------------------------------------------------------
@pytest.fixture
def coordinate():
    ufl = pytest.importorskip("ufl")
    basix_ufl = pytest.importorskip("basix.ufl")
    mesh = ufl.Mesh(basix_ufl.element("Lagrange", "triangle", 1, shape=(2,)))
    return mesh, ufl.SpatialCoordinate(mesh)


def test_to_ufl_matches_evaluate(coordinate):
    import ufl

    from rdgraph.discretization.ufl_expressions import to_ufl

    mesh, x = coordinate
    sources = [
        "x[0]**2 + g*sin(x[1])",
        "exp(-t)*log(2 + x[0]) + sqrt(abs(x[1])) + tanh(g) - cos(pi*x[1])*tan(0.3)",
        "(x[0] - 0.1*g)**2 / (1 + t) - e**(-x[1])",
        "-x[0] + +x[1] - 2**-1",
    ]
    point = (0.3, -0.4)
    for source in sources:
        e = parse(source, gdim=2)
        value = to_ufl(e, x, g=2, t=0.5)
        assert isinstance(value, ufl.core.expr.Expr)
        expected = e.evaluate(np.array([[point[0]], [point[1]]]), g=2, t=0.5)[0]
        assert value(point) == pytest.approx(expected)  # UFL's own point evaluation
        # g and t as UFL objects (as fem.Constant is), valued at evaluation.
        g, t = ufl.Constant(mesh), ufl.Constant(mesh)
        assert to_ufl(e, x, g=g, t=t)(point, {g: 2.0, t: 0.5}) == pytest.approx(expected)


def test_to_ufl_numbers_and_missing_values(coordinate):
    from rdgraph.discretization.ufl_expressions import to_ufl

    _, x = coordinate
    e = parse("x[0]**2 + g*sin(x[1])")
    with pytest.raises(InputError, match="'g' has no value"):
        to_ufl(e, x)
    with pytest.raises(InputError, match="'t' has no value"):
        to_ufl(parse("t*x[0]"), x, g=1)
    assert to_ufl(parse("x[0]"), x) is not None  # g and t only needed when used
    assert to_ufl(parse("2*pi"), x) == pytest.approx(2 * np.pi)  # plain numbers fold to floats
    assert isinstance(to_ufl(parse("sin(1)**2"), x), float)
    assert to_ufl(parse("1/g"), x, g=0) == np.inf  # folded with IEEE semantics, no exception
    assert np.isnan(to_ufl(parse("(-8)**(1/3)"), x))
