"""A whitelist expression language for potentials, initial densities and sources.

``parse`` reads a string with Python's ``ast`` parser (which runs nothing), accepts only
numbers, ``+ - * / **``, unary signs, parentheses, ``pi``, ``e``, the variables ``x[0..2]``,
``g`` (vertex index), ``t``, per-vertex data ``name[g]`` (a column of ``[model] data``, see
:mod:`rdgraph.problem.data`) and the one-argument functions in :data:`FUNCTIONS`, and turns
the tree into small immutable nodes. Those nodes evaluate to NumPy (nodal values and
particles) here, and to UFL through :func:`rdgraph.discretization.ufl_expressions.to_ufl`
(for forms; this module does not import UFL). Nothing is ever passed to ``eval``, ``exec``
or ``compile``.
"""

from __future__ import annotations

import ast
import difflib
import math
import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from rdgraph.errors import InputError

__all__ = ["FUNCTIONS", "Bin", "Call", "Data", "Expression", "Neg", "Node", "Num",
           "PythonFunction", "Var", "X", "parse"]

FUNCTIONS = ("sin", "cos", "tan", "exp", "log", "sqrt", "tanh", "abs")
CONSTANTS = {"pi": math.pi, "e": math.e}
VARIABLES = ("x", "g", "t")
MAX_LENGTH = 2000
# In tree levels (a flat sum of n terms is n deep). UFL's derivative and form-compiler passes
# recurse about five Python frames per level and overflow near 200 levels: keep a margin.
MAX_DEPTH = 100

_NUMPY = {"sin": np.sin, "cos": np.cos, "tan": np.tan, "exp": np.exp, "log": np.log,
          "sqrt": np.sqrt, "tanh": np.tanh, "abs": np.abs}
_BINARY = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**"}
_OPERATORS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv,
              "**": operator.pow}
# Refused operators, by symbol, to name them in messages.
_OTHER_OPERATORS = {ast.Mod: "%", ast.FloorDiv: "//", ast.MatMult: "@", ast.BitXor: "^",
                    ast.BitAnd: "&", ast.BitOr: "|", ast.LShift: "<<", ast.RShift: ">>",
                    ast.Not: "not", ast.Invert: "~", ast.And: "and", ast.Or: "or"}
_CONSTRUCTS = {ast.IfExp: "a conditional expression", ast.Compare: "a comparison",
               ast.Lambda: "a lambda", ast.Attribute: "attribute access",
               ast.List: "a list", ast.Tuple: "a tuple", ast.Dict: "a dict", ast.Set: "a set",
               ast.NamedExpr: "an assignment", ast.JoinedStr: "a string",
               ast.ListComp: "a comprehension", ast.SetComp: "a comprehension",
               ast.DictComp: "a comprehension", ast.GeneratorExp: "a comprehension",
               ast.Starred: "a starred expression", ast.Slice: "a slice"}
# Common spellings from other languages.
_ALIASES = {"ln": "log", "fabs": "abs", "pow": "**", "arctan": None, "atan": None}


# -- the validated tree (public: rdgraph.problem.separable rewrites it) ------------------------
@dataclass(frozen=True)
class Num:
    """A number."""

    value: float


@dataclass(frozen=True)
class Var:
    """The variable ``g`` or ``t``."""

    name: str  # "g" or "t"


@dataclass(frozen=True)
class X:
    """A coordinate ``x[index]``."""

    index: int


@dataclass(frozen=True)
class Data:
    """``name[g]``: a per-vertex data column at the vertex (a number for each ``g``)."""

    name: str


@dataclass(frozen=True)
class Neg:
    """``-operand``."""

    operand: Node


@dataclass(frozen=True)
class Bin:
    """``left op right`` for ``op`` in ``+ - * / **``."""

    op: str  # a key of _OPERATORS
    left: Node
    right: Node


@dataclass(frozen=True)
class Call:
    """``name(arg)`` for ``name`` in :data:`FUNCTIONS`."""

    name: str  # one of FUNCTIONS
    arg: Node


Node = Num | Var | X | Data | Neg | Bin | Call


def _numpy_function(name: str) -> Callable:
    return _NUMPY[name]


@dataclass(frozen=True)
class Expression:
    """A validated expression in ``x[0..2]``, ``g`` and ``t``; build it with :func:`parse`.

    Attributes:
        source: The expression text (stripped of surrounding blanks).
        tree: The validated tree (:data:`Node`).
        variables: The variables it uses, a subset of ``{"x0", "x1", "x2", "g", "t"}``
            (a data column ``name[g]`` counts as ``g``).
        data: The per-vertex columns ``name[g]`` refers to (name to an ``(N,)`` array).
    """

    source: str
    tree: Node = field(repr=False)
    variables: frozenset[str] = frozenset()
    data: Mapping[str, np.ndarray] | None = field(default=None, repr=False, compare=False,
                                                  hash=False)

    def depends_on(self, name: str) -> bool:
        """Whether ``name`` appears: "x" (any component), "x0".."x2", "g" or "t"."""
        if name == "x":
            return any(v.startswith("x") for v in self.variables)
        return name in self.variables

    def __str__(self) -> str:
        return self.source

    def substitute(self, x, g=None, t=None, *, functions: Callable[[str], Callable],
                   data: Mapping | None = None):
        """The expression built from other objects than NumPy arrays, e.g. UFL.

        ``rdgraph.discretization.forms.to_ufl`` calls this with UFL's functions; this layer
        stays free of UFL.

        Args:
            x: The coordinates (anything indexable by ``0..2``).
            g: The vertex index: an object of that algebra or a number.
            t: The time: an object of that algebra or a number.
            functions: Maps a name of :data:`FUNCTIONS` to the function to apply.
            data: For a ``g`` that is not a number: the object standing for each data column
                ``name[g]`` (e.g. a constant updated per vertex). For a number ``g``, the
                column's value at ``g`` is used.

        Returns:
            The built object, or a float when the expression is a plain number.

        Raises:
            InputError: The expression uses ``g`` or ``t`` and no value was given.
        """
        values = {}
        for name, value in (("g", g), ("t", t)):
            if value is None and name in self.variables:
                raise InputError(f"'{self.source}': '{name}' has no value here")
            # Python numbers as floats, so constant parts fold with float (not int) semantics.
            values[name] = float(value) if isinstance(value, int | float | np.number) else value
        for name in self._data_names():
            if isinstance(g, int | float | np.number):
                values["@" + name] = float(self.data[name][int(g)])
            elif data is not None and name in data:
                values["@" + name] = data[name]
            else:
                raise InputError(f"'{self.source}': '{name}[g]' has no value here")
        return self._visit(self.tree, lambda i: x[i], values, functions)

    def _data_names(self) -> list[str]:
        """The data columns the expression uses."""
        found: list[str] = []

        def walk(node: Node) -> None:
            if isinstance(node, Data):
                if node.name not in found:
                    found.append(node.name)
            elif isinstance(node, Neg):
                walk(node.operand)
            elif isinstance(node, Call):
                walk(node.arg)
            elif isinstance(node, Bin):
                walk(node.left)
                walk(node.right)

        walk(self.tree)
        return found

    def evaluate(self, x: np.ndarray, g=0, t: float = 0.0) -> np.ndarray:
        """Values at points.

        Args:
            x: Coordinates, shape ``(3, P)`` or ``(gdim, P)``.
            g: The vertex index: an int or an integer array of shape ``(P,)``.
            t: The time.

        Returns:
            A new float64 array of shape ``(P,)`` (constants broadcast). NaN and inf are
            returned, not raised or warned about: callers decide.
        """
        x = np.asarray(x, dtype=np.float64)
        points = x.shape[1] if x.ndim == 2 else 1
        values = {"g": np.asarray(g, dtype=np.float64), "t": np.asarray(t, dtype=np.float64)}
        for name in self._data_names():
            values["@" + name] = self.data[name][np.asarray(g, dtype=np.int64)]
        with np.errstate(all="ignore"):
            value = self._visit(self.tree, lambda i: x[i], values, _numpy_function)
            return np.broadcast_to(np.asarray(value, dtype=np.float64), (points,)).copy()

    def _visit(self, node: Node, coordinate: Callable, values: dict, function: Callable):
        # Plain floats fold through NumPy scalars (IEEE: 1/0 -> inf, log(-1) -> nan, no raise);
        # anything else (UFL, arrays) goes through ``function`` and the Python operators.
        if isinstance(node, Num):
            return node.value
        if isinstance(node, X):
            return coordinate(node.index)
        if isinstance(node, Var):
            return values[node.name]
        if isinstance(node, Data):
            return values["@" + node.name]
        if isinstance(node, Neg):
            return -self._visit(node.operand, coordinate, values, function)
        if isinstance(node, Call):
            arg = self._visit(node.arg, coordinate, values, function)
            if isinstance(arg, float):
                with np.errstate(all="ignore"):
                    return float(_NUMPY[node.name](np.float64(arg)))
            return function(node.name)(arg)
        left = self._visit(node.left, coordinate, values, function)
        right = self._visit(node.right, coordinate, values, function)
        if isinstance(left, float) and isinstance(right, float):
            with np.errstate(all="ignore"):
                return float(_OPERATORS[node.op](np.float64(left), np.float64(right)))
        return _OPERATORS[node.op](left, right)


class PythonFunction:
    """A potential or initial density given in the Python API as a callable ``f(x, g)``.

    ``x`` has shape ``(3, P)`` (as for ``dolfinx.fem.Function.interpolate``) and ``g`` is the
    vertex, an ``int``; ``f`` returns ``P`` values (a NumPy array, or a number for a
    constant). It stands where a parsed :class:`Expression` would, for NumPy evaluation
    only: the forms use its interpolant (see ``rdgraph.discretization.model``). It is code
    the user passed in, never text from a config file.

    Args:
        function: The callable.
        what: Its role, for messages ("potential", "initial").
    """

    def __init__(self, function: Callable, what: str):
        if not callable(function):
            raise InputError(f"{what}: expected a callable f(x, g), got {function!r}")
        self.function, self.what = function, what
        self.source = f"{what}={getattr(function, '__qualname__', repr(function))}(x, g)"
        self.variables = frozenset({"x0", "x1", "x2", "g"})
        self.data = None

    def depends_on(self, name: str) -> bool:
        """Any dependence but on ``t`` is assumed: a callable is opaque."""
        return name != "t"

    def __str__(self) -> str:
        return self.source

    def evaluate(self, x: np.ndarray, g=0, t: float = 0.0) -> np.ndarray:
        """Values at points ``x`` of shape ``(3, P)``; ``g`` an int or an ``(P,)`` array.

        Raises:
            InputError: The callable raised, or returned values of the wrong shape.
        """
        x = np.asarray(x, dtype=np.float64)
        points = x.shape[1] if x.ndim == 2 else 1
        if np.ndim(g) == 0:
            return self._call(x, int(g), points)
        g = np.asarray(g, dtype=np.int64)
        out = np.empty(points)
        for vertex in np.unique(g):
            where = g == vertex
            out[where] = self._call(x[:, where], int(vertex), int(where.sum()))
        return out

    def _call(self, x: np.ndarray, g: int, points: int) -> np.ndarray:
        try:
            value = np.asarray(self.function(x, g), dtype=np.float64)
            return np.broadcast_to(value, (points,)).copy()
        except (TypeError, ValueError) as e:
            raise InputError(f"{self.source} for g = {g}: expected {points} numbers for x of "
                             f"shape {x.shape} ({e})") from None


# -- parsing ----------------------------------------------------------------------------------
class _Builder:
    """Turns a parsed ``ast`` tree into ``Node``s, refusing everything off the whitelist."""

    def __init__(self, source: str, allowed: frozenset[str], gdim: int, what: str,
                 data: Mapping[str, np.ndarray] | None = None, data_source: str | None = None):
        self.source, self.allowed, self.gdim, self.what = source, allowed, gdim, what
        self.data, self.data_source = data, data_source
        self.used: set[str] = set()

    def fail(self, why: str) -> InputError:
        return InputError(f"{self.what} '{self.source}': {why}")

    def segment(self, node: ast.AST) -> str:
        return ast.get_source_segment(self.source, node) or type(node).__name__

    def allowed_variables(self) -> str:
        names = [f"x[{i}]" for i in range(self.gdim)] if "x" in self.allowed else []
        names += [v for v in ("g", "t") if v in self.allowed]
        return ", ".join(names) or "none"

    def allowed_everything(self) -> str:
        names = [self.allowed_variables()] if self.allowed else []
        return ", ".join(names + list(CONSTANTS) + [f"{f}()" for f in FUNCTIONS])

    def build(self, node: ast.AST, depth: int = 0) -> Node:
        if depth > MAX_DEPTH:
            raise self.fail(f"nested too deeply (more than {MAX_DEPTH} levels of operators, "
                            "signs and calls; a sum of n terms counts n)")
        if isinstance(node, ast.Expression):
            return self.build(node.body, depth + 1)
        if isinstance(node, ast.Constant):
            return self.constant(node)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            return Bin(_BINARY[type(node.op)], self.build(node.left, depth + 1),
                        self.build(node.right, depth + 1))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.UAdd | ast.USub):
            operand = self.build(node.operand, depth + 1)
            return operand if isinstance(node.op, ast.UAdd) else Neg(operand)
        if isinstance(node, ast.Name):
            return self.name(node.id)
        if isinstance(node, ast.Subscript):
            return self.subscript(node)
        if isinstance(node, ast.Call):
            return self.call(node, depth)
        raise self.refuse(node)

    def refuse(self, node: ast.AST) -> InputError:
        """The error for a node type off the whitelist, naming the construct or operator."""
        op = getattr(node, "op", None)
        if isinstance(node, ast.BoolOp | ast.BinOp | ast.UnaryOp) and type(op) in _OTHER_OPERATORS:
            symbol = _OTHER_OPERATORS[type(op)]
            hint = " (use ** for powers)" if symbol == "^" else ""
            return self.fail(f"operator '{symbol}' is not allowed{hint}; operators: + - * / **")
        what = _CONSTRUCTS.get(type(node), f"'{type(node).__name__}'")
        return self.fail(f"{what} ('{self.segment(node)}') is not allowed; allowed: numbers, "
                         f"+ - * / **, parentheses, {self.allowed_everything()}")

    def constant(self, node: ast.Constant) -> Num:
        value = node.value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(f"{value!r} is not a number")
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise self.fail(f"the number {self.segment(node)} is too large")
        return Num(number)

    def name(self, name: str) -> Node:
        if name in CONSTANTS:
            return Num(CONSTANTS[name])
        if name in VARIABLES and name not in self.allowed:
            shown = "x[i]" if name == "x" else name
            raise self.fail(f"'{shown}' is not allowed here (allowed: {self.allowed_variables()})")
        if name in ("g", "t"):
            self.used.add(name)
            return Var(name)
        if name == "x":
            raise self.fail("'x' needs a component, e.g. x[0]")
        if self.data is not None and name in self.data:
            raise self.fail(f"'{name}' is a data column: write {name}[g]")
        if name in FUNCTIONS:
            raise self.fail(f"'{name}' is a function: write {name}(...)")
        known = list(CONSTANTS) + list(FUNCTIONS) + [v for v in VARIABLES if v in self.allowed]
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise self.fail(f"unknown name '{name}'{hint}; allowed: {self.allowed_everything()}")

    def data_column(self, node: ast.Subscript) -> Data:
        """``name[g]``: a column of ``[model] data`` at the vertex."""
        name = node.value.id
        if self.data is None:
            raise self.fail(f"'{self.segment(node)}' is not allowed: only x is indexed, as "
                            f"x[0], x[1], x[2], and there is no per-vertex data table for "
                            f"'{name}[g]' (set model.data = \"file.csv\")")
        if name not in self.data:
            columns = ", ".join(self.data) or "none"
            close = difflib.get_close_matches(name, list(self.data), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise self.fail(f"unknown data column '{name}'{hint}: {self.data_source} line 1 "
                            f"has the columns {columns}")
        if not (isinstance(node.slice, ast.Name) and node.slice.id == "g"):
            raise self.fail(f"'{self.segment(node)}': a data column is indexed by the vertex, "
                            f"as {name}[g]")
        if "g" not in self.allowed:
            raise self.fail(f"'{self.segment(node)}': 'g' is not allowed here (allowed: "
                            f"{self.allowed_variables()})")
        self.used.add("g")
        return Data(name)

    def subscript(self, node: ast.Subscript) -> X | Data:
        if isinstance(node.value, ast.Name) and node.value.id not in VARIABLES + tuple(
                CONSTANTS) + FUNCTIONS:
            return self.data_column(node)
        if not (isinstance(node.value, ast.Name) and node.value.id == "x"):
            raise self.fail(f"'{self.segment(node)}' is not allowed: only x is indexed, "
                            "as x[0], x[1], x[2]")
        if "x" not in self.allowed:
            raise self.fail(f"'x' is not allowed here (allowed: {self.allowed_variables()})")
        index = node.slice
        if not (isinstance(index, ast.Constant) and type(index.value) is int):
            raise self.fail(f"'{self.segment(node)}': x must be indexed by a literal integer, "
                            "e.g. x[0]")
        i = index.value
        if not 0 <= i < self.gdim:
            last = "x[0]" if self.gdim == 1 else f"x[0]..x[{self.gdim - 1}]"
            raise self.fail(f"x[{i}] does not exist on a {self.gdim}-D mesh (use {last})")
        self.used.add(f"x{i}")
        return X(i)

    def call(self, node: ast.Call, depth: int) -> Call:
        functions = ", ".join(FUNCTIONS)
        if not isinstance(node.func, ast.Name):
            raise self.fail(f"'{self.segment(node.func)}' cannot be called "
                            f"(functions: {functions})")
        name = node.func.id
        if name not in FUNCTIONS:
            if name in _ALIASES:
                alias = _ALIASES[name]
                hint = f" (did you mean '{alias}'?)" if alias else " (not available)"
            else:
                close = difflib.get_close_matches(name, FUNCTIONS, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise self.fail(f"unknown function '{name}'{hint}; functions: {functions}")
        if node.keywords or len(node.args) != 1 or isinstance(node.args[0], ast.Starred):
            raise self.fail(f"{name}() takes exactly one positional argument, "
                            f"got '{self.segment(node)}'")
        return Call(name, self.build(node.args[0], depth + 1))


def parse(
    source: str,
    *,
    variables: Iterable[str] = VARIABLES,
    gdim: int = 3,
    what: str = "expression",
    data: Mapping[str, np.ndarray] | None = None,
    data_source: str | None = None,
) -> Expression:
    """Validate ``source`` and return an :class:`Expression`.

    Example:
        >>> parse("(x[0] - 0.1*g)**2", variables=("x", "g"), what="model.potential")

    Args:
        source: The expression text, e.g. ``"(x[0] - 0.1*g)**2"``.
        variables: Which of ``"x"``, ``"g"``, ``"t"`` may appear.
        gdim: Number of components ``x`` has (1, 2 or 3).
        what: The config key, to prefix messages.
        data: Per-vertex columns usable as ``name[g]`` (``None``: no data table).
        data_source: The data file, for messages.

    Raises:
        InputError: The text is not in the language; the message starts with ``what``,
            quotes the expression and names the offending part.
        ValueError: ``variables`` or ``gdim`` are invalid (a programming error).
    """
    allowed = frozenset(variables)
    if not allowed <= set(VARIABLES):
        raise ValueError(f"variables must be a subset of {VARIABLES}, got {sorted(allowed)}")
    if isinstance(gdim, bool) or gdim not in (1, 2, 3):
        raise ValueError(f"gdim must be 1, 2 or 3, got {gdim!r}")
    if not isinstance(source, str):
        raise InputError(f"{what} = {source!r}: expected an expression string")
    if len(source) > MAX_LENGTH:
        raise InputError(f"{what} '{source[:40]}...': longer than {MAX_LENGTH} characters "
                         f"({len(source)})")
    text = source.strip()
    if not text:
        raise InputError(f"{what} {source!r}: the expression is empty")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as e:
        raise InputError(f"{what} '{text}': not a valid expression ({e.msg})") from None
    except (ValueError, RecursionError, MemoryError):
        raise InputError(f"{what} '{text}': not a valid expression") from None
    builder = _Builder(text, allowed, gdim, what, data, data_source)
    try:
        node = builder.build(tree)
    except RecursionError:
        raise builder.fail("nested too deeply") from None
    return Expression(text, node, frozenset(builder.used), data)
