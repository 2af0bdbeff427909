"""The installed distribution's version, for ``--version``."""

from __future__ import annotations

import importlib.metadata

DISTRIBUTION = 'instance-aware'


def version_string() -> str:
    """The version pip installed (``unknown`` from a bare source tree)."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return 'unknown'
