"""gunicorn's application: ``instance_aware.local.wsgi:application``.

:class:`instance_aware.local.server.GlanceServer` starts gunicorn with the
environment of :mod:`instance_aware.local.envvars`; the application is
built at import, in the worker, so each worker process has its own Glance
(configuration, engines, pools).  Import this module nowhere else.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from instance_aware.local import envvars, glance


def from_environ(environ: Mapping[str, str]) -> glance.PortDispatcher:
    """Build the dispatcher described by ``environ``."""
    try:
        state_dir = environ[envvars.STATE_DIR]
        stack_port = int(environ[envvars.STACK_PORT])
    except (KeyError, ValueError) as exc:
        raise RuntimeError(
            f'{envvars.STATE_DIR} and {envvars.STACK_PORT} must be set: start '
            'this application with instance_aware.local.server') from exc
    bare = environ.get(envvars.BARE_PORT)
    return glance.build_dispatcher(glance.StateDir(state_dir), stack_port,
                                   int(bare) if bare else None)


application = from_environ(os.environ)
