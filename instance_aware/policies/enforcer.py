"""One oslo.policy enforcer per configuration, shared by the whole stack.

Rules are read from the file named by ``[oslo_policy] policy_file`` of the
service's configuration (Glance's policy file), so operators keep one file.
oslo.policy reloads that file when it changes; nothing is parsed per request.
It also looks for changes (a ``stat`` of every candidate path of the file
and of ``policy_dirs``) on *every* check; a stack makes several checks per
request, so ours looks at most once every :data:`RELOAD_CHECK_INTERVAL`
seconds: an edited policy file applies within that time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

from oslo_config import cfg
from oslo_context import context as oslo_context
from oslo_policy import policy

from instance_aware import policies

_lock = threading.Lock()
# Keyed by id() and holding the ConfigOpts itself, so an id is never reused
# while its entry exists (ConfigOpts is a Mapping, hence unhashable).
_enforcers: dict[int, tuple[cfg.ConfigOpts, policy.Enforcer]] = {}


#: Seconds between two looks for a changed policy file.
RELOAD_CHECK_INTERVAL = 2.0


class Enforcer(policy.Enforcer):
    """oslo.policy's enforcer, looking for file changes less often."""

    _next_look = 0.0

    def load_rules(self, force_reload: bool = False) -> None:
        now = time.monotonic()
        if force_reload or not self.rules or now >= self._next_look:
            super().load_rules(force_reload)
            self._next_look = now + RELOAD_CHECK_INTERVAL


def _build(conf: cfg.ConfigOpts) -> policy.Enforcer:
    enforcer = Enforcer(conf)
    enforcer.register_defaults(policies.list_rules())
    return enforcer


def enforcer_for(conf: cfg.ConfigOpts) -> policy.Enforcer:
    """Return the process-wide enforcer bound to ``conf``."""
    entry = _enforcers.get(id(conf))
    if entry is None:
        with _lock:
            entry = _enforcers.get(id(conf))
            if entry is None:
                entry = _enforcers[id(conf)] = (conf, _build(conf))
    return entry[1]


def allowed(conf: cfg.ConfigOpts, rule: str,
            context: oslo_context.RequestContext,
            target: Mapping[str, Any]) -> bool:
    """Whether ``context`` passes ``rule`` on ``target``.

    ``rule`` must be registered: a typo raises ``PolicyNotRegistered``
    instead of silently allowing or denying.
    """
    return bool(enforcer_for(conf).authorize(
        rule, dict(target), context, do_raise=False))


def get_enforcer() -> policy.Enforcer:
    """Entry point ``oslo.policy.enforcer`` for the oslopolicy-* tools."""
    conf = cfg.ConfigOpts()
    conf([], project='glance')
    return _build(conf)
