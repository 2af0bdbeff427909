"""The key part of ``instance-aware-manage reconcile``.

Key manager operations that failed during a request (consumer
registration, secret deletion) wait in the store as ``failed`` rows;
reconcile retries them with the service credentials of
``[instance_aware_keys]``, because no request will come back for them.
"""

from __future__ import annotations

import dataclasses

from oslo_config import cfg

from instance_aware.keys import lifecycle
from instance_aware.keys import opts as key_opts
from instance_aware.store import engine as ia_engine


@dataclasses.dataclass(frozen=True)
class KeyRetries:
    """What the retries did: a summary line, and what failed (``None``:
    nothing)."""

    line: str
    problem: str | None = None


def retry(conf: cfg.ConfigOpts, db: ia_engine.Database,
          registry_id: str) -> KeyRetries | None:
    """Finish the key operations a request could not (``failed`` rows).

    ``None`` when the key lifecycle is off.  Without service credentials
    (a configuration that never set ``[instance_aware_keys]``) the part is
    skipped with a line saying why and how many operations wait.
    """
    if not key_opts.KeyOptions.load(conf).enabled:
        return None
    try:
        keys = lifecycle.KeyLifecycle(conf, db, registry_id)
        contexts = lifecycle.service_contexts(conf)
    except cfg.Error as exc:
        waiting = lifecycle.count_failed(db, registry_id)
        line = (f'Key operations not retried: [{key_opts.GROUP}] is not '
                f'configured ({exc}); {waiting} failed key operations '
                'waiting.  Set its service credentials, or enabled = false '
                'where no key manager is deployed.')
        problem = (f'{waiting} failed key operations could not be retried'
                   if waiting else None)
        return KeyRetries(line, problem)
    result = keys.retry_failed(contexts)
    line = (f'{result.retried} failed key operations retried: '
            f'{result.succeeded} succeeded, {result.failed} failed again, '
            f'{result.skipped} waiting for their image')
    problem = (f'{result.failed} key operations failed again (see the '
               'log)' if result.failed else None)
    return KeyRetries(line, problem)
