"""The README cannot drift from the code: its config examples are run through the loader."""

from __future__ import annotations

import dataclasses
import re
import shlex
import tomllib
from pathlib import Path

import pytest

from rdgraph.cli import SUBCOMMANDS
from rdgraph.problem.config import (
    _SECTION_CLASSES,
    apply_overrides,
    parse_override,
    read_config,
    settings_from_dict,
)
from rdgraph.problem.defaults import default_config
from rdgraph.studies.sweep import parse_sweep

ROOT = Path(__file__).resolve().parents[1]
TEXT = (ROOT / "README.md").read_text(encoding="utf-8")


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)


def section(title: str) -> str:
    """The README text under ``## title`` up to the next ``## `` heading."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", TEXT, flags=re.S | re.M)
    assert match, f"README has no section '## {title}'"
    return match.group(1)


TOML_BLOCKS = code_blocks(TEXT, "toml")


def test_readme_has_config_and_sweep_examples():
    assert len(TOML_BLOCKS) >= 2
    assert any("base" in tomllib.loads(b) for b in TOML_BLOCKS)


@pytest.mark.parametrize("block", TOML_BLOCKS, ids=[f"toml{i}" for i in range(len(TOML_BLOCKS))])
def test_every_toml_block_is_a_valid_config_or_sweep(block):
    data = tomllib.loads(block)
    if "base" in data:  # a sweep file; its paths are relative to the repository root
        sweep = parse_sweep(data, source="README sweep", base_dir=ROOT)
        assert sweep.cases()
    else:
        settings_from_dict(data, source="README config")


def set_examples() -> list[tuple[str, str]]:
    """``(command, section.key=value)`` for every ``--set`` in code blocks and code spans."""
    commands = []
    for block in code_blocks(TEXT, "bash"):
        commands += block.replace("\\\n", " ").splitlines()
    prose = re.sub(r"^```.*?^```", "", TEXT, flags=re.S | re.M)
    commands += re.findall(r"`([^`]*--set [^`]*)`", prose)
    found = []
    for command in commands:
        tokens = shlex.split(command, comments=True)
        for i, token in enumerate(tokens[:-1]):
            value = tokens[i + 1]
            # Placeholders of the usage lines, not examples.
            if token == "--set" and not value.startswith("section.") and "..." not in value:
                found.append((command, value))
    return found


def test_every_set_example_is_valid_for_the_config_it_names():
    examples = set_examples()
    assert len(examples) >= 6
    for command, override in examples:
        parse_override(override)
        # The config the command runs: a file of the repository, the API script's, or the
        # built-in default.
        files = [t for t in shlex.split(command, comments=True)
                 if t.endswith(".toml") and (ROOT / t).is_file()]
        if files:
            data = read_config(ROOT / files[0])
        elif "api_script.py" in command:
            data = read_config(ROOT / "examples" / "convergence_1d.toml")
        else:
            data = default_config()
        settings_from_dict(apply_overrides(data, [override]), source=f"README: {command}")


def configuration_keys() -> dict[str, set[str]]:
    """Keys written (or commented) under each ``[section]`` of the Configuration block."""
    blocks = code_blocks(section("Configuration"), "toml")
    assert len(blocks) == 1
    keys: dict[str, set[str]] = {}
    current = None
    for line in blocks[0].splitlines():
        header = re.match(r"^\[(\w+)\]", line)
        if header:
            current = header.group(1)
            keys[current] = set()
        if current is not None:
            keys[current] |= set(re.findall(r"(\w+)\s*=", line))
    return keys


def test_configuration_section_names_every_key():
    documented = configuration_keys()
    assert set(documented) == set(_SECTION_CLASSES)
    missing = [f"{name}.{f.name}" for name, cls in _SECTION_CLASSES.items()
               for f in dataclasses.fields(cls) if f.name not in documented[name]]
    assert not missing, f"README Configuration section does not mention {missing}"


def test_every_subcommand_is_documented():
    for name in ["run", *SUBCOMMANDS]:
        assert f"rdgraph {name}" in TEXT, f"README never shows 'rdgraph {name}'"
