"""Sphinx configuration of the rdgraph documentation (built by ``scripts/docs.sh``).

Everything here works offline: no intersphinx, no remote images, no theme from the network.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE / "_ext"))
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MPLBACKEND", "Agg")

import rdgraph  # noqa: E402

project = "rdgraph"
author = "the rdgraph authors"
copyright = "the rdgraph authors"
version = release = rdgraph.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx_gallery.gen_gallery",
    "rdgraph_config",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = [
    "_build",
    "Thumbs.db",
    ".DS_Store",
    # Outputs of scripts/compare_dynamics.py: tables quoted by dynamics.md, not pages.
    "dynamics/*.md",
    "dynamics_beta1/*.md",
    # sphinx-gallery's own listing of execution times.
    "sg_execution_times.rst",
]

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3
# The verification report (written by `rdgraph convergence --docs`) jumps from # to ###.
suppress_warnings = ["myst.header"]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False

# MathJax is loaded by the reader's browser; the build itself needs no network.
html_theme = "alabaster"
html_title = f"rdgraph {release}"
html_static_path: list[str] = []
html_theme_options = {"description": "Reaction–diffusion gradient flows on R^d × G",
                      "fixed_sidebar": True}

sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": str(HERE / "auto_examples"),
    "filename_pattern": r"/plot_",
    "ignore_pattern": r"(api_script|__init__)\.py",
    "download_all_examples": False,
    "remove_config_comments": True,
    "within_subsection_order": "FileNameSortKey",
    "matplotlib_animations": False,
    "image_scrapers": ("matplotlib",),
    "abort_on_example_error": True,
    "only_warn_on_example_error": False,
    "show_memory": False,
    "write_computation_times": False,
    # Run every example on every build, so that the test command runs them.
    "run_stale_examples": True,
}
