"""The configuration reference of the docs is generated from the config schema, completely.

``docs/_ext/rdgraph_config.py`` reads each key's type and default from the dataclasses of
``rdgraph/problem/config.py`` and its meaning from the docstring under the field; the page
``docs/configuration.md`` renders it. Nothing may be left out: a new key without a docstring
fails here, not silently in the docs.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import sys
from pathlib import Path

import pytest

from rdgraph.problem.config import _SECTION_CLASSES

ROOT = Path(__file__).resolve().parents[1]
EXTENSION = ROOT / "docs" / "_ext" / "rdgraph_config.py"

pytest.importorskip("sphinx", reason="the docs extra is not installed")


def load_extension():
    spec = importlib.util.spec_from_file_location("rdgraph_config", EXTENSION)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def reference():
    return load_extension()


def test_every_section_and_key_of_the_schema_is_in_the_reference(reference):
    schema = reference.schema()
    assert list(schema) == list(_SECTION_CLASSES)
    for section, cls in _SECTION_CLASSES.items():
        assert [k.name for k in schema[section]] == [f.name for f in dataclasses.fields(cls)]


def test_every_key_has_a_meaning(reference):
    undocumented = [f"{k.section}.{k.name}" for keys in reference.schema().values()
                    for k in keys if len(k.doc.split()) < 3]
    assert not undocumented, f"config keys without a docstring in the schema: {undocumented}"


def test_every_section_has_a_description(reference):
    for section, cls in _SECTION_CLASSES.items():
        assert cls.__doc__ and f"[{section}]" in cls.__doc__, section


def test_the_rendered_tables_name_every_key_with_its_default(reference):
    for section, keys in reference.schema().items():
        defaults = _SECTION_CLASSES[section]()
        lines = reference.section_markdown(section, keys)
        assert f"[{section}]" in lines[0]
        rows = [line for line in lines if line.startswith("| `")]
        assert len(rows) == len(keys)
        for key, row in zip(keys, rows, strict=True):
            cells = re.split(r"(?<!\\)\|", row)[1:-1]
            assert len(cells) == 4, row  # a stray | in a docstring would add a column
            assert cells[0].strip() == f"`{key.name}`"
            default = getattr(defaults, key.name)
            expected = ("(unset)" if default is None else str(default).lower()
                        if isinstance(default, bool) else str(default))
            assert expected in cells[2], row


def test_docstrings_are_read_from_the_source_not_guessed(reference):
    """The parser takes the string right after a field and nothing else."""
    source = (
        "class Example:\n"
        '    """Section."""\n'
        "\n"
        "    a: int = 1\n"
        '    """Meaning of a."""\n'
        "    b: int = 2\n"
        "    # a comment is no docstring\n"
        '    c: str = "x"\n'
        '    """Meaning of c,\n'
        '    on two lines."""\n'
    )
    assert reference.field_docs(source) == {"a": "Meaning of a.",
                                            "c": "Meaning of c,\non two lines."}
