"""Sphinx configuration of symjac's documentation.

Build: ``sphinx-build -W --keep-going -b html docs docs/_build/html`` (from
the repository root, with ``pip install -e '.[docs]'``).
"""

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))           # document this checkout, not another installed copy
# The gallery builds kernels: keep them in a private cache unless one is given.
os.environ.setdefault("SYMJAC_CACHE_DIR", tempfile.mkdtemp(prefix="symjac-docs-"))
os.environ.setdefault("MPLBACKEND", "Agg")

import symjac  # noqa: E402

project = "symjac"
author = "the symjac developers"
copyright = "2026, the symjac developers"
release = version = symjac.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinx_gallery.gen_gallery",

]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "none"
autosummary_generate = False

html_theme = "pydata_sphinx_theme"
html_title = f"symjac {release}"
html_theme_options = {"navigation_with_keys": False, "show_prev_next": True}

# The gallery: docs/examples/*.py are run at build time (small sizes), their
# figures saved as PNGs. sphinx-gallery is what scikit-learn and matplotlib
# use: thumbnails, captured output, downloadable scripts and notebooks.
sphinx_gallery_conf = {
    "examples_dirs": "examples",
    "gallery_dirs": "gallery",
    "filename_pattern": r"/plot_",
    "download_all_examples": False,
    "remove_config_comments": True,
    "matplotlib_animations": False,
    "within_subsection_order": "FileNameSortKey",
}
