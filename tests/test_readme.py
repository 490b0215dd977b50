"""The README and the docs cannot drift from the code or from each other.

Their config examples are run through the loader, their ``--set`` examples through the
override parser, and every relative link and image they contain must resolve inside the
repository. The README stays a short page for users.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest

from rdgraph.cli import SUBCOMMANDS
from rdgraph.problem.config import (
    apply_overrides,
    parse_override,
    read_config,
    settings_from_dict,
)
from rdgraph.problem.defaults import default_config
from rdgraph.studies.sweep import parse_sweep

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
TEXT = README.read_text(encoding="utf-8")
MAX_README_LINES = 250
# The manual's Markdown pages and notes (not the build output or the generated gallery).
DOC_PAGES = sorted(p for p in (ROOT / "docs").rglob("*.md")
                   if not {"_build", "auto_examples"} & set(p.relative_to(ROOT).parts))
PAGES = [README, *DOC_PAGES]
ALL_TEXT = "\n".join(p.read_text(encoding="utf-8") for p in PAGES)


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)


TOML_BLOCKS = code_blocks(ALL_TEXT, "toml")


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
    for block in code_blocks(ALL_TEXT, "bash"):
        commands += block.replace("\\\n", " ").splitlines()
    prose = re.sub(r"^```.*?^```", "", ALL_TEXT, flags=re.S | re.M)
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


def test_every_subcommand_is_documented():
    running = (ROOT / "docs" / "running.md").read_text(encoding="utf-8")
    for name in ["run", *SUBCOMMANDS]:
        assert f"rdgraph {name}" in TEXT, f"README never shows 'rdgraph {name}'"
        assert f"rdgraph {name}" in running, f"docs/running.md never shows 'rdgraph {name}'"


def test_readme_is_short():
    lines = len(TEXT.splitlines())
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines, at most {MAX_README_LINES}"


def test_readme_keeps_the_users_order():
    """What it solves, quick start, running, config, search spaces, output, API, docs, layout,
    tests, citing."""
    headings = re.findall(r"^## (.+)$", TEXT, flags=re.M)
    assert headings == ["Quick start", "Running", "A minimal config",
                        "Search spaces of real size", "What a run writes",
                        "Python API", "Documentation", "Repository layout",
                        "Tests and contributing", "Citing"]
    quick_start = TEXT.split("## Quick start")[1].split("## ")[0]
    blocks = code_blocks(quick_start, "bash")
    assert len(blocks) == 1, "the quick start shows one block of commands"
    commands = [line.split("#")[0].strip() for line in blocks[0].splitlines()]
    assert commands == ["bash scripts/quickstart.sh", "bash scripts/test.sh"]


def relative_links(text: str) -> list[str]:
    """Targets of Markdown links and images outside code, without web links or anchors."""
    prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    prose = re.sub(r"`[^`\n]*`", "", prose)
    targets = re.findall(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", prose)
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


def test_link_finder_sees_links_and_images_but_not_code():
    text = ("See [a](docs/a.md#x) and ![b](fig.png \"title\"), [web](https://x.org), [c](#top).\n"
            "`[not](code.md)`\n```\n[no](block.md)\n```\n")
    assert relative_links(text) == ["docs/a.md#x", "fig.png"]


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_relative_link_and_image_resolves_inside_the_repository(page):
    broken = []
    for target in relative_links(page.read_text(encoding="utf-8")):
        path = (page.parent / target.split("#")[0]).resolve()
        if not path.exists() or not path.is_relative_to(ROOT):
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)}: links that do not resolve: {broken}"


def test_readme_shows_a_figure_of_the_default_run():
    images = [t for t in relative_links(TEXT) if t.endswith(".png")]
    assert images == ["docs/figures/default-masses.png"]


MANUAL = [README, *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("page", MANUAL, ids=[str(p.relative_to(ROOT)) for p in MANUAL])
def test_readme_and_manual_stand_alone(page):
    """No tracker numbers, dated runs or files outside the repository (notes keep history)."""
    text = page.read_text(encoding="utf-8")
    for pattern in (r"\b[Ii]ssues? \d", r"\bMODEL\.md\b", r"\.\./shared",
                    r"\b20\d\d-\d\d-\d\d\b", r"\b[Rr]ounds? \d"):
        found = re.findall(pattern, text)
        assert not found, f"{page.relative_to(ROOT)} mentions {found}"
