"""One oslo.policy enforcer per configuration, shared by the whole stack.

Rules are read from the file named by ``[oslo_policy] policy_file`` of the
service's configuration (Glance's policy file), so operators keep one file.
oslo.policy reloads that file when it changes; nothing is parsed per request.
It also looks for changes (a ``stat`` of every candidate path of the file
and of ``policy_dirs``) on *every* check; a stack makes several checks per
request, so ours looks at most once every :data:`RELOAD_CHECK_INTERVAL`
seconds: an edited policy file applies within that time.

Evaluating a rule is not cheap either: oslo.policy introspects every check
of the rule's tree (``inspect.getfullargspec``) on every evaluation, about
a tenth of a millisecond per rule, several rules per request.  A decision
depends only on the rules, the rule name, the caller's policy values and
the target, so decisions are remembered per enforcer and forgotten
whenever the enforcer looks at the policy file again: a cached decision is
never older than the rules that made it, and at most
:data:`RELOAD_CHECK_INTERVAL` seconds old.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Hashable, Iterable, Mapping
from typing import Any

from oslo_config import cfg
from oslo_context import context as oslo_context
from oslo_policy import policy

from instance_aware import policies

_lock = threading.Lock()
# Keyed by id() and holding the ConfigOpts itself, so an id is never reused
# while its entry exists (ConfigOpts is a Mapping, hence unhashable).
_enforcers: dict[int, tuple[cfg.ConfigOpts, Enforcer]] = {}


#: Seconds between two looks for a changed policy file.
RELOAD_CHECK_INTERVAL = 2.0
#: Decisions remembered between two looks (then all are forgotten).
MAX_DECISIONS = 4096

# The frozen policy values of each live request context, computed once.
_creds_keys: weakref.WeakKeyDictionary[
    oslo_context.RequestContext, Hashable | None] = (
    weakref.WeakKeyDictionary())


class Enforcer(policy.Enforcer):
    """oslo.policy's enforcer, looking for file changes less often."""

    _next_look = 0.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.decisions: dict[Hashable, bool] = {}

    def load_rules(self, force_reload: bool = False) -> None:
        now = time.monotonic()
        if force_reload or not self.rules or now >= self._next_look:
            self.decisions = {}
            super().load_rules(force_reload)
            self._next_look = now + RELOAD_CHECK_INTERVAL

    def decide(self, rule: str, context: oslo_context.RequestContext,
               target: Mapping[str, Any]) -> bool:
        """:meth:`authorize` without raising, remembered (see above)."""
        self.load_rules()
        creds = _creds_key(context)
        frozen = None if creds is None else _freeze(target)
        key = None if frozen is None else (rule, creds, frozen)
        decisions = self.decisions
        if key is not None:
            cached = decisions.get(key)
            if cached is not None:
                return cached
        decision = bool(self.authorize(rule, dict(target), context,
                                       do_raise=False))
        if key is not None:
            if len(decisions) >= MAX_DECISIONS:
                decisions.clear()
            decisions[key] = decision
        return decision


#: Values that are their own frozen form.
_PLAIN = frozenset({str, int, float, bool, type(None)})


def _freeze(value: Any) -> Hashable | None:
    """A hashable copy of policy values or a target (``None``: cannot).

    Runs for every decision (the target) and every request (the caller's
    values), so plain values, the usual case, take the shortest path.
    """
    kind = type(value)
    if kind in _PLAIN:
        return value  # type: ignore[no-any-return]
    if isinstance(value, Mapping):
        keys = list(value)
        frozen = _freeze_all([value[key] for key in keys])
        if frozen is None:
            return None
        pairs = zip(keys, frozen, strict=True)
        return ('map', tuple(sorted(pairs, key=_key_text)))
    if isinstance(value, (list, tuple)):
        frozen = _freeze_all(value)
        return None if frozen is None else ('seq', frozen)
    if isinstance(value, (str, int, float)):  # subclasses (enums, ...)
        return value
    return None


def _freeze_all(items: Iterable[Any]) -> tuple[Hashable, ...] | None:
    """Each item frozen, ``None`` if one cannot be."""
    frozen = []
    for item in items:
        if type(item) not in _PLAIN:
            item = _freeze(item)
            if item is None:  # not plain, so None means "cannot"
                return None
        frozen.append(item)
    return tuple(frozen)


def _key_text(pair: tuple[Any, Any]) -> str:
    return str(pair[0])


def _creds_key(context: oslo_context.RequestContext) -> Hashable | None:
    try:
        return _creds_keys[context]
    except KeyError:
        pass
    except TypeError:  # not weakly referenceable
        return _freeze(context.to_policy_values())
    key = _creds_keys[context] = _freeze(context.to_policy_values())
    return key


def _build(conf: cfg.ConfigOpts) -> Enforcer:
    enforcer = Enforcer(conf)
    enforcer.register_defaults(policies.list_rules())
    return enforcer


def enforcer_for(conf: cfg.ConfigOpts) -> Enforcer:
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
    return enforcer_for(conf).decide(rule, context, target)


def get_enforcer() -> policy.Enforcer:
    """Entry point ``oslo.policy.enforcer`` for the oslopolicy-* tools."""
    conf = cfg.ConfigOpts()
    conf([], project='glance')
    return _build(conf)
