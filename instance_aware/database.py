"""The mapping database as the ``[instance_aware]`` options describe it.

The store (:mod:`instance_aware.store`) takes plain values: a URL, pool
sizes, a retry policy.  This is where the options become those values, for
the filters, the healthcheck and the command line alike, so the store
knows nothing of paste keys or of a global configuration.
"""

from __future__ import annotations

import sqlalchemy as sa

from instance_aware.config import FilterConfig
from instance_aware.store import engine as store_engine
from instance_aware.store.retry import RetryPolicy


def retry_policy(config: FilterConfig) -> RetryPolicy:
    """How a write that lost a race is re-run (``db_*retr*`` options)."""
    return RetryPolicy(max_retries=config.db_max_retries,
                       interval=config.db_retry_interval,
                       max_interval=config.db_max_retry_interval)


def shared_engine(config: FilterConfig) -> sa.Engine:
    """The process-wide engine on ``connection``, with the pool options
    (the first caller's settings make it; see :func:`~instance_aware.
    store.engine.get_engine`)."""
    return store_engine.get_engine(
        config.connection, pool_size=config.db_pool_size,
        max_overflow=config.db_max_overflow,
        pool_timeout=config.db_pool_timeout,
        connect_timeout=config.db_connect_timeout,
        ping_after_idle=config.db_ping_after_idle)


def open_database(config: FilterConfig) -> store_engine.Database:
    """Sessions on the shared engine, with the configured retry policy."""
    return store_engine.Database(shared_engine(config),
                                 retry_policy(config))
