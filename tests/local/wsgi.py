"""gunicorn's application: ``tests.local.wsgi:application``.

:class:`tests.local.server.GlanceServer` starts gunicorn with the
environment of :mod:`tests.local.envvars`; the application is
built at import, in the worker, so each worker process has its own Glance
(configuration, engines, pools), or its own standalone stack when
:data:`~tests.local.envvars.STANDALONE` is set
(:class:`~tests.local.server.StandaloneServer`).  Import this
module nowhere else.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from tests.local import envvars, glance, standalone

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication


def from_environ(environ: Mapping[str, str]) -> WSGIApplication:
    """Build the application described by ``environ``."""
    try:
        state_dir = environ[envvars.STATE_DIR]
        stack_port = int(environ[envvars.STACK_PORT])
    except (KeyError, ValueError) as exc:
        raise RuntimeError(
            f'{envvars.STATE_DIR} and {envvars.STACK_PORT} must be set: start '
            'this application with tests.local.server') from exc
    flavor = environ.get(envvars.STANDALONE)
    if flavor:
        return standalone.load_app(standalone.StandaloneState(state_dir),
                                   flavor)
    bare = environ.get(envvars.BARE_PORT)
    return glance.build_dispatcher(glance.StateDir(state_dir), stack_port,
                                   int(bare) if bare else None)


application = from_environ(os.environ)
