"""oslo.middleware healthcheck backend ``instance_aware_store``.

Glance's ``/healthcheck`` (``oslo_middleware:Healthcheck``) asks its
``backends``; with this one added::

    [app:healthcheck]
    paste.app_factory = oslo_middleware:Healthcheck.app_factory
    backends = disable_by_file,instance_aware_store

a load balancer takes a node out when the mapping database cannot be
reached or its schema is not the one the package needs: requests that
capture keys would answer 503 there anyway.  The reason it gives names no
host or URL (``/healthcheck`` is often reachable by anyone); the details,
shown only with ``detailed = true``, name the database without password.

The check is one small query (the Alembic revision) on the process-wide
engine the filters use, so it costs a pooled connection, not a new one.
"""

from __future__ import annotations

import os
from typing import Any

import sqlalchemy as sa
from oslo_config import cfg
from oslo_middleware.healthcheck import pluginbase
from sqlalchemy.engine import make_url

from instance_aware import config, database
from instance_aware.store import migration

UNAVAILABLE = 'instance-aware mapping database unavailable'
NO_SCHEMA = 'instance-aware mapping database schema not at head'


class StoreHealthcheck(pluginbase.HealthcheckBaseExtension):
    """Whether the mapping database answers, with the expected schema.

    Options: ``[instance_aware]`` of the service, or keys of the
    healthcheck paste section (``connection`` ...), as for the filters.
    """

    def __init__(self, oslo_conf: cfg.ConfigOpts,
                 conf: dict[str, Any]) -> None:
        super().__init__(oslo_conf, conf)
        self.config = config.FilterConfig.load(oslo_conf, conf)
        self.head = migration.head()

    def healthcheck(self, server_port: int
                    ) -> pluginbase.HealthcheckResult:
        url = self.config.connection
        shown = make_url(url).render_as_string(hide_password=True)
        parsed = make_url(url)
        if (parsed.get_backend_name() == 'sqlite' and parsed.database
                and parsed.database != ':memory:'
                and not os.path.exists(parsed.database)):
            # Connecting would create the file (and its directory).
            return pluginbase.HealthcheckResult(
                False, NO_SCHEMA, f'{shown}: no such file')
        try:
            current = migration.current(database.shared_engine(self.config))
        except (sa.exc.SQLAlchemyError, OSError, ImportError) as exc:
            first = (str(getattr(exc, 'orig', None) or exc).strip()
                     .splitlines() or [type(exc).__name__])[0]
            return pluginbase.HealthcheckResult(False, UNAVAILABLE,
                                                f'{shown}: {first}')
        if current != self.head:
            return pluginbase.HealthcheckResult(
                False, NO_SCHEMA, f'{shown} is at revision {current}, '
                                  f'expected {self.head}')
        return pluginbase.HealthcheckResult(True, 'OK', f'{shown} is at '
                                                        f'{current}')
