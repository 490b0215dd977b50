"""The configuration reference, generated from the config schema at docs-build time.

The schema is ``rdgraph/problem/config.py``: one dataclass per TOML section, each field
followed by its docstring. This extension reads those docstrings with :mod:`ast` (Python
keeps no attribute docstrings at run time) and the types and defaults from the dataclasses
themselves, and renders one table per section wherever a page says::

    ```{rdgraph-config}
    ```

``tests/test_docs.py`` checks that every key of every section has a meaning here.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective

from rdgraph.problem import config

__all__ = ["Key", "field_docs", "schema", "section_markdown", "setup"]


@dataclasses.dataclass(frozen=True)
class Key:
    """One config key: ``[section] name``, its type, default and meaning."""

    section: str
    name: str
    type: str
    default: Any
    doc: str


def field_docs(class_source: str) -> dict[str, str]:
    """``{field: docstring}`` from the source of one class: the string after each field."""
    body = ast.parse(class_source).body[0].body
    docs = {}
    for stmt, after in itertools.pairwise(body):
        if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
                and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)):
            docs[stmt.target.id] = inspect.cleandoc(after.value.value)
    return docs


def schema() -> dict[str, list[Key]]:
    """Every key of every config section, in the schema's order; ``doc`` is empty if missing."""
    out = {}
    for section, cls in config._SECTION_CLASSES.items():
        docs = field_docs(inspect.getsource(cls))
        keys = []
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                default = dataclasses.MISSING
            keys.append(Key(section, f.name, str(f.type), default, docs.get(f.name, "")))
        out[section] = keys
    return out


def _toml(value: Any) -> str:
    """A default as it would be written in TOML; None is an unset key."""
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, dict):
        return "`{}`" if not value else f"`{value}`"
    return f"`{value!r}`"


def _cell(text: str) -> str:
    """Text for one cell of a Markdown table: one line, no bare column separator."""
    return " ".join(text.split()).replace("|", "\\|")


def section_markdown(section: str, keys: list[Key]) -> list[str]:
    """One section's rubric, description and table, as Markdown (MyST) lines."""
    cls = config._SECTION_CLASSES[section]
    lines = ["```{rubric} [" + section + "]", "```", "", _cell(inspect.cleandoc(cls.__doc__ or "")),
             "", "| key | type | default | meaning |", "|---|---|---|---|"]
    for key in keys:
        lines.append(f"| `{key.name}` | `{_cell(key.type)}` | {_cell(_toml(key.default))} "
                     f"| {_cell(key.doc)} |")
    return lines + [""]


class ConfigReference(SphinxDirective):
    """``rdgraph-config``: the tables of every config section (in a MyST page)."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        lines = []
        for section, keys in schema().items():
            lines += section_markdown(section, keys)
        self.env.note_dependency(inspect.getsourcefile(config))
        container = nodes.container()
        self.state.nested_parse(StringList(lines, source="rdgraph/problem/config.py"),
                                self.content_offset, container)
        return container.children


def setup(app) -> dict[str, Any]:
    app.add_directive("rdgraph-config", ConfigReference)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1"}
