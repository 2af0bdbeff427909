"""``python -m tests.local serve``: what ``./tools/dev serve`` runs."""

from __future__ import annotations

import sys

from tests.local import serve

sys.exit(serve.main())
