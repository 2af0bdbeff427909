# Sphinx configuration of the instance-aware release notes (reno).
#
#   sphinx-build -q -W --keep-going -b html releasenotes/source \
#       releasenotes/build/html
#
# reno reads the notes from git (releasenotes/notes/ at each tag), so the
# build runs in a git checkout.

from __future__ import annotations

project = 'instance-aware release notes'
copyright = 'instance-aware developers'
author = 'instance-aware developers'
version = release = ''

extensions = ['reno.sphinxext']

root_doc = 'index'
source_suffix = {'.rst': 'restructuredtext'}
exclude_patterns: list[str] = []
language = 'en'
html_theme = 'alabaster'
html_title = project
html_show_sourcelink = False
