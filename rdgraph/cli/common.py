"""Arguments that several commands share."""

from __future__ import annotations

from pathlib import Path

__all__ = ["add_config_arguments"]


def add_config_arguments(parser, default: str = "the built-in default problem") -> None:
    """The ``[CONFIG] [--set SECTION.KEY=VALUE ...]`` arguments every command reads a config by.

    Args:
        parser: An ``argparse`` parser.
        default: What runs without ``CONFIG``.
    """
    parser.add_argument("config", nargs="?", type=Path,
                        help=f"TOML config file (default: {default})")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="SECTION.KEY=VALUE", help="override a config value (repeatable)")
