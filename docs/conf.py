"""Sphinx configuration: the API reference is generated from the docstrings; ``-n -W`` makes every
unresolved reference to lightning_dyn an error (external types cannot be resolved offline and are
listed in ``nitpick_ignore_regex``)."""

import lightning_dyn

project = "lightning_dyn"
author = "the lightning_dyn developers"
copyright = "2026, the lightning_dyn developers"
release = version = lightning_dyn.__version__
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon"]
exclude_patterns = ["_build"]
autodoc_member_order = "bysource"
autodoc_typehints = "none"
autodoc_default_options = {"members": True, "undoc-members": False, "show-inheritance": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True  # dataclass fields once, as fields, not also as attribute entries
html_theme = "alabaster"
nitpicky = True
# references outside the package (torch, Lightning, numpy, Python) cannot be resolved without the
# network (no intersphinx); a reference to lightning_dyn that does not resolve still fails the build
nitpick_ignore_regex = [(r"py:.*", r"(torch|nn|lightning|pl|pytorch_lightning|numpy|np|scipy|typing|collections)\b.*")]
autodoc_inherit_docstrings = False  # not torch.nn.Module.forward's text on every layer
