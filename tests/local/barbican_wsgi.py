"""gunicorn's application: ``tests.local.barbican_wsgi:application``.

:class:`tests.local.barbican.BarbicanServer` starts gunicorn with
``HOME`` pointing to its state directory (Barbican parses
``~/.barbican/barbican.conf`` when ``barbican`` is imported) and the paste
file named by :data:`~tests.local.barbican.PASTE_ENV`.  The
application is built at import, in the worker.  Import this module nowhere
else: importing Barbican parses configuration as a side effect.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, cast

from paste import deploy

from tests.local.barbican import PASTE_ENV

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication


def _load() -> WSGIApplication:
    paste_file = os.environ.get(PASTE_ENV)
    if not paste_file:
        raise RuntimeError(f'{PASTE_ENV} must be set: start this application '
                           'with tests.local.barbican')
    return cast('WSGIApplication',
                deploy.loadapp(f'config:{paste_file}', name='main'))


application = _load()
