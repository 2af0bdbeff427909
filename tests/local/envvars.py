"""Environment variables from :mod:`.server` to the gunicorn it starts.

Kept apart so the server can name them without importing :mod:`.wsgi`,
which builds Glance at import.
"""

from __future__ import annotations

#: A state directory made by :func:`tests.local.glance.prepare`.
STATE_DIR = 'INSTANCE_AWARE_STATE_DIR'
#: The port served by the ``stacked`` pipeline.
STACK_PORT = 'INSTANCE_AWARE_STACK_PORT'
#: The port served by the ``bare`` pipeline (unset: none).
BARE_PORT = 'INSTANCE_AWARE_BARE_PORT'
#: The pid whose death stops the server (default: gunicorn's parent).
PARENT_PID = 'INSTANCE_AWARE_PARENT_PID'
#: Seconds before the server stops by itself (unset, empty, 0: never).
MAX_LIFETIME = 'INSTANCE_AWARE_MAX_LIFETIME'
#: Set (to the flavor) when the server runs the standalone stack in front
#: of a remote Glance instead of a local Glance.
STANDALONE = 'INSTANCE_AWARE_STANDALONE'
