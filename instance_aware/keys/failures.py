"""Key lifecycle failures, and what castellan's errors mean for them.

castellan reports almost everything as ``KeyManagerError``; what happened
is only in the barbicanclient exception it was raised from (an HTTP status,
or ``SecretHasConsumers``), or in a keystoneauth exception it did not wrap
at all (connection refused, timeout).  :func:`classify` turns that into the
three outcomes callers act on:

* :class:`KeyNotAccessible`: the secret does not exist or the caller may
  not use it (404, 403): the caller's fault, a 400 on image create;
* :class:`ConsumersRemain`: the secret was not deleted because other
  consumers still use it: a warning, the intended outcome of the spec;
* :class:`KeyManagerUnavailable`: anything else (unreachable, 5xx, 401 on
  a token our own pipeline accepted): a 503, retried.

:class:`KeyManagerNotConfigured` is decided from the configuration, before
any call: no key manager, or no way to authenticate to it.  Retrying
cannot help, so it is a 400 that says so, not a 503.
"""

from __future__ import annotations

from barbicanclient import (  # type: ignore[import-untyped]
    exceptions as barbican_exceptions,
)
from castellan.common import exception as castellan_exception
from keystoneauth1 import exceptions as ks_exceptions

NOT_FOUND = 'not_found'
FORBIDDEN = 'forbidden'


class KeyLifecycleError(Exception):
    """Base of the key lifecycle's errors."""


class KeyNotAccessible(KeyLifecycleError):
    """The secret does not exist or the caller may not use it.

    ``reason`` is :data:`NOT_FOUND` or :data:`FORBIDDEN`.  Both mean the
    same to a client (a 400 that does not say which, so that no project
    learns whether another project's secret exists).
    """

    def __init__(self, message: str, reason: str = NOT_FOUND) -> None:
        super().__init__(message)
        self.reason = reason


class KeyManagerUnavailable(KeyLifecycleError):
    """The key manager could not be reached or failed: retry later."""


class KeyManagerNotConfigured(KeyLifecycleError):
    """The deployment has no usable key manager configuration; the
    message names the missing option (for the log, not the client)."""


class ConsumersRemain(KeyLifecycleError):
    """The secret was kept: other consumers still use it."""


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _status(exc: BaseException) -> int | None:
    for item in _chain(exc):
        if isinstance(item, barbican_exceptions.HTTPAuthError):
            return 401  # its constructor skips setting status_code
        if isinstance(item, barbican_exceptions.HTTPError):
            return int(getattr(item, 'status_code', 0)) or None
        if isinstance(item, ks_exceptions.HttpError):
            return int(item.http_status)
    return None


def classify(exc: Exception, key_id: str) -> KeyLifecycleError:
    """The lifecycle error that ``exc`` (from a castellan call) means."""
    if isinstance(exc, KeyLifecycleError):
        return exc
    chain = _chain(exc)
    if any(isinstance(item, barbican_exceptions.SecretHasConsumers)
           for item in chain):
        return ConsumersRemain(f'secret {key_id} still has consumers')
    if isinstance(exc, (castellan_exception.ManagedObjectNotFoundError,
                        KeyError)):
        return KeyNotAccessible(f'secret {key_id} not found', NOT_FOUND)
    status = _status(exc)
    if status == 404:
        return KeyNotAccessible(f'secret {key_id} not found', NOT_FOUND)
    if status == 403:
        return KeyNotAccessible(f'secret {key_id}: access forbidden',
                                FORBIDDEN)
    if status == 400 and 'consumer' in str(exc).lower():
        return ConsumersRemain(f'secret {key_id} still has consumers')
    detail = str(exc) or type(exc).__name__
    return KeyManagerUnavailable(f'key manager error on secret {key_id}: '
                                 f'{detail}')
