"""gunicorn's application: ``tests.local.keystone_wsgi:application``.

Keystone parses ``sys.argv`` with oslo.config when it builds its
application, and gunicorn's own arguments are not Keystone's: they are
cleared first.  :class:`tests.local.keystone.KeystoneServer`
points Keystone at its configuration with ``OS_KEYSTONE_CONFIG_FILES``.
Import this module nowhere else: it builds Keystone at import.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

sys.argv = sys.argv[:1]

from keystone.server import wsgi  # noqa: E402 - argv first

application = cast('WSGIApplication', wsgi.initialize_public_application())
