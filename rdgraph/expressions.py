"""A whitelist expression language for potentials, initial densities and sources.

``parse`` reads a string with Python's ``ast`` parser (which runs nothing), accepts only
numbers, ``+ - * / **``, unary signs, ``pi``, ``e``, the variables ``x[0..2]``, ``g``, ``t``
and the one-argument functions below, and turns the tree into small immutable nodes. Those
nodes evaluate to UFL (for forms) or NumPy (for nodal values and particles). Nothing is ever
passed to ``eval``.
"""

from __future__ import annotations

import ast
import difflib
import math
import operator
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from rdgraph.errors import InputError

__all__ = ["FUNCTIONS", "Expression", "parse"]

FUNCTIONS = ("sin", "cos", "tan", "exp", "log", "sqrt", "tanh", "abs")
CONSTANTS = {"pi": math.pi, "e": math.e}
MAX_LENGTH = 2000
MAX_DEPTH = 60

_NUMPY = {"sin": np.sin, "cos": np.cos, "tan": np.tan, "exp": np.exp, "log": np.log,
          "sqrt": np.sqrt, "tanh": np.tanh, "abs": np.abs}
_BINARY = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**"}
_OPERATORS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv,
              "**": operator.pow}


# -- the validated tree -----------------------------------------------------------------------
@dataclass(frozen=True)
class _Num:
    value: float


@dataclass(frozen=True)
class _Var:
    name: str  # "g" or "t"


@dataclass(frozen=True)
class _X:
    index: int


@dataclass(frozen=True)
class _Neg:
    operand: object


@dataclass(frozen=True)
class _Bin:
    op: str
    left: object
    right: object


@dataclass(frozen=True)
class _Call:
    name: str
    arg: object


def _ufl_function(name: str):
    import ufl

    return {"sin": ufl.sin, "cos": ufl.cos, "tan": ufl.tan, "exp": ufl.exp, "log": ufl.ln,
            "sqrt": ufl.sqrt, "tanh": ufl.tanh, "abs": abs}[name]


@dataclass(frozen=True)
class Expression:
    """A validated expression in ``x[0..2]``, ``g`` and ``t``."""

    source: str
    _tree: object
    variables: frozenset[str]

    def depends_on(self, name: str) -> bool:
        """Whether ``name`` ("x", "x0".."x2", "g", "t") appears."""
        if name == "x":
            return any(v.startswith("x") for v in self.variables)
        return name in self.variables

    def __str__(self) -> str:
        return self.source

    def to_ufl(self, x, g=None, t=None):
        """A UFL expression; ``x`` a SpatialCoordinate, ``g``/``t`` UFL objects or numbers."""
        for name, value in (("g", g), ("t", t)):
            if value is None and name in self.variables:
                raise InputError(f"'{self.source}': '{name}' has no value here")
        return self._visit(self._tree, lambda i: x[i], {"g": g, "t": t}, _ufl_function)

    def evaluate(self, x: np.ndarray, g=0, t: float = 0.0) -> np.ndarray:
        """Values at the points ``x`` (shape ``(gdim or 3, P)``) as a float array ``(P,)``.

        ``g`` may be an int or an integer array of shape ``(P,)``. NaN and inf are returned,
        not raised: callers decide.
        """
        x = np.asarray(x, dtype=np.float64)
        points = x.shape[1] if x.ndim == 2 else 1
        with np.errstate(all="ignore"):
            value = self._visit(self._tree, lambda i: x[i],
                                {"g": np.asarray(g, dtype=np.float64), "t": float(t)},
                                lambda name: _NUMPY[name])
            return np.broadcast_to(np.asarray(value, dtype=np.float64), (points,)).copy()

    def _visit(self, node, coordinate, values, function):
        if isinstance(node, _Num):
            return node.value
        if isinstance(node, _X):
            return coordinate(node.index)
        if isinstance(node, _Var):
            return values[node.name]
        if isinstance(node, _Neg):
            return -self._visit(node.operand, coordinate, values, function)
        if isinstance(node, _Call):
            arg = self._visit(node.arg, coordinate, values, function)
            if isinstance(arg, float):
                with np.errstate(all="ignore"):
                    return float(_NUMPY[node.name](arg))
            return function(node.name)(arg)
        left = self._visit(node.left, coordinate, values, function)
        right = self._visit(node.right, coordinate, values, function)
        if isinstance(left, float) and isinstance(right, float):
            with np.errstate(all="ignore"):
                try:
                    return float(_OPERATORS[node.op](np.float64(left), np.float64(right)))
                except ZeroDivisionError:
                    return math.nan
        return _OPERATORS[node.op](left, right)


# -- parsing ----------------------------------------------------------------------------------
class _Builder:
    def __init__(self, source: str, allowed: frozenset[str], gdim: int, what: str):
        self.source, self.allowed, self.gdim, self.what = source, allowed, gdim, what
        self.used: set[str] = set()

    def fail(self, why: str) -> InputError:
        return InputError(f"{self.what} '{self.source}': {why}")

    def allowed_names(self) -> str:
        names = [f"x[{i}]" for i in range(self.gdim) if "x" in self.allowed]
        names += [v for v in ("g", "t") if v in self.allowed]
        return ", ".join(names + list(CONSTANTS) + [f"{f}()" for f in FUNCTIONS])

    def build(self, node, depth: int = 0):
        if depth > MAX_DEPTH:
            raise self.fail("nested too deeply")
        if isinstance(node, ast.Expression):
            return self.build(node.body, depth + 1)
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
                raise self.fail(f"{node.value!r} is not a number")
            return _Num(float(node.value))
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            return _Bin(_BINARY[type(node.op)], self.build(node.left, depth + 1),
                        self.build(node.right, depth + 1))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
            operand = self.build(node.operand, depth + 1)
            return operand if isinstance(node.op, ast.UAdd) else _Neg(operand)
        if isinstance(node, ast.Name):
            return self.name(node.id)
        if isinstance(node, ast.Subscript):
            return self.subscript(node)
        if isinstance(node, ast.Call):
            return self.call(node, depth)
        token = ast.get_source_segment(self.source, node) or type(node).__name__
        raise self.fail(f"'{token}' is not allowed (allowed: numbers, + - * / **, "
                        f"parentheses, {self.allowed_names()})")

    def name(self, name: str):
        if name in CONSTANTS:
            return _Num(CONSTANTS[name])
        if name in ("g", "t"):
            if name not in self.allowed:
                raise self.fail(f"'{name}' is not allowed here (allowed: {self.allowed_names()})")
            self.used.add(name)
            return _Var(name)
        if name == "x":
            raise self.fail("use a component of x, e.g. x[0]")
        if name in FUNCTIONS:
            raise self.fail(f"'{name}' is a function: write {name}(...)")
        known = list(CONSTANTS) + list(FUNCTIONS) + ["x", "g", "t"]
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise self.fail(f"unknown name '{name}'{hint}; allowed: {self.allowed_names()}")

    def subscript(self, node: ast.Subscript):
        if not (isinstance(node.value, ast.Name) and node.value.id == "x"):
            token = ast.get_source_segment(self.source, node) or "subscript"
            raise self.fail(f"'{token}' is not allowed: only x[0], x[1], x[2] are indexed")
        if "x" not in self.allowed:
            raise self.fail("'x' is not allowed here")
        index = node.slice
        if not (isinstance(index, ast.Constant) and type(index.value) is int):
            raise self.fail("x must be indexed by a literal integer, e.g. x[0]")
        i = index.value
        if not 0 <= i < self.gdim:
            raise self.fail(f"x[{i}] does not exist on a {self.gdim}-D mesh "
                            f"(use x[0]..x[{self.gdim - 1}])")
        self.used.add(f"x{i}")
        return _X(i)

    def call(self, node: ast.Call, depth: int):
        if not isinstance(node.func, ast.Name):
            token = ast.get_source_segment(self.source, node.func) or "call"
            raise self.fail(f"'{token}' cannot be called (functions: {', '.join(FUNCTIONS)})")
        name = node.func.id
        if name not in FUNCTIONS:
            close = difflib.get_close_matches(name, FUNCTIONS, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise self.fail(f"unknown function '{name}'{hint}; functions: {', '.join(FUNCTIONS)}")
        if node.keywords or len(node.args) != 1 or isinstance(node.args[0], ast.Starred):
            raise self.fail(f"{name}() takes exactly one positional argument")
        return _Call(name, self.build(node.args[0], depth + 1))


def parse(
    source: str,
    *,
    variables: Iterable[str] = ("x", "g", "t"),
    gdim: int = 3,
    what: str = "expression",
) -> Expression:
    """Validate ``source`` and return an :class:`Expression`.

    Args:
        source: The expression text, e.g. ``"(x[0] - 0.1*g)**2"``.
        variables: Which of ``x``, ``g``, ``t`` may appear.
        gdim: Number of coordinates ``x`` has.
        what: The config key, to prefix messages.

    Raises:
        InputError: The text is not in the language; the message quotes it.
    """
    if not isinstance(source, str):
        raise InputError(f"{what} = {source!r}: expected an expression string")
    if not source.strip():
        raise InputError(f"{what} is empty")
    if len(source) > MAX_LENGTH:
        raise InputError(f"{what} is longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as e:
        raise InputError(f"{what} '{source}': not a valid expression ({e.msg})") from None
    except (ValueError, RecursionError, MemoryError):
        raise InputError(f"{what} '{source}': not a valid expression") from None
    builder = _Builder(source.strip(), frozenset(variables), gdim, what)
    try:
        node = builder.build(tree)
    except RecursionError:
        raise builder.fail("nested too deeply") from None
    return Expression(source.strip(), node, frozenset(builder.used))
