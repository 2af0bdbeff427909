"""Capturing properties out of registry requests, the registry's way.

Pure functions shared by the capturing filters (instance keys, encryption
keys): split a create body or a JSON-patch document into the captured part
and the part forwarded to the registry, apply captured patch operations
with Glance's own semantics, and merge stored values back into image
representations.  JSON pointers are decoded exactly as Glance decodes them
(``~1``, ``~0``, and each token stripped of white space), so no spelling of
a captured key slips past the filter to the registry.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from instance_aware.http import faults
from instance_aware.http.request import PATCH_V20, PATCH_V21

OPERATIONS = ('add', 'remove', 'replace')
#: The pointer of a change that has none (Glance answers 400).
MISSING = object()

#: Glance's limit on a custom property name, and on a captured value (the
#: length we index on).
MAX_KEY_LENGTH = 255
MAX_VALUE_LENGTH = 255


@dataclasses.dataclass(frozen=True)
class Operation:
    """One captured JSON-patch operation on a top-level property."""

    op: str
    key: str
    value: str | None = None


def encode_pointer(key: str) -> str:
    """The JSON pointer (RFC 6901) of top-level property ``key``."""
    return '/' + key.replace('~', '~0').replace('/', '~1')


def decode_pointer(pointer: Any) -> list[str] | None:
    """Glance's decoding of a JSON pointer; ``None`` if Glance rejects it.

    A pointer Glance rejects is never captured: it is forwarded so the
    registry answers with its own 400.
    """
    if not isinstance(pointer, str) or not pointer.startswith('/'):
        return None
    if re.search(r'/\s*?/', pointer[1:]) or (
            len(pointer) > 1 and pointer.endswith('/')):
        return None
    if re.search('~[^01]', pointer) or pointer.endswith('~'):
        return None
    return [part.replace('~1', '/').replace('~0', '~').strip()
            for part in pointer.lstrip('/').split('/')]


def op_and_pointer(raw: Any, media_type: str) -> tuple[Any, Any]:
    """``(op, pointer)`` of a raw change as Glance reads them: v2.1 names
    them ``op`` and ``path``, v2.0 names the member after the operation.

    Neither is checked: the op is ``None`` when there is none (v2.0: no
    member named after an operation), the pointer :data:`MISSING`.
    """
    if not isinstance(raw, dict):
        return None, MISSING
    if media_type == PATCH_V21:
        return raw.get('op'), raw.get('path', MISSING)
    for op in OPERATIONS:
        if op in raw:
            return op, raw[op]
    return None, MISSING


def check_value(key: str, value: Any) -> str:
    """A captured value must be a string Glance would have accepted."""
    if not isinstance(value, str):
        raise faults.bad_request(
            f"Invalid value for property '{key}': expected a string, got "
            f'{type(value).__name__}.')
    if not _is_unicode(value):
        raise faults.bad_request(
            f"Invalid value for property '{key}': not valid Unicode text "
            '(a lone surrogate).')
    if len(value) > MAX_VALUE_LENGTH:
        raise faults.bad_request(
            f"Invalid value for property '{key}': longer than "
            f'{MAX_VALUE_LENGTH} characters.')
    return value


def split_create(body: Mapping[str, Any], keys: Collection[str]
                 ) -> tuple[dict[str, str], dict[str, Any]]:
    """Split a create body into ``(captured, forwarded)``."""
    captured = {k: check_value(k, v) for k, v in body.items() if k in keys}
    forwarded = {k: v for k, v in body.items() if k not in keys}
    return captured, forwarded


def split_patch(document: list[Any], media_type: str,
                keys: Collection[str]
                ) -> tuple[list[Operation], list[Any]]:
    """Split a JSON-patch document into captured ops and forwarded ops.

    Operations Glance would reject as malformed stay in the forwarded part,
    so Glance answers them with its own error.  Operations on a captured
    key are validated here: a deeper path (``/instance_uuid/x``) or a
    non-string value is a 400.
    """
    captured: list[Operation] = []
    forwarded: list[Any] = []
    for raw in document:
        op, pointer = op_and_pointer(raw, media_type)
        # A malformed operation (or an unknown op) is never captured.
        path = decode_pointer(pointer) if op in OPERATIONS else None
        if path is None or path[0] not in keys:
            forwarded.append(raw)
            continue
        key = path[0]
        if len(path) != 1:
            raise faults.bad_request(
                "Invalid JSON pointer for this resource: "
                f"'/{'/'.join(path)}'")
        if op == 'remove':
            captured.append(Operation(op, key))
            continue
        if 'value' not in raw:
            raise faults.bad_request(
                f'Operation "{op}" requires a member named "value".')
        captured.append(Operation(op, key, check_value(key, raw['value'])))
    return captured, forwarded


def apply_operations(current: Mapping[str, str],
                     operations: Iterable[Operation],
                     media_type: str) -> dict[str, str]:
    """Apply captured ops to ``current`` with Glance's semantics.

    v2.1 ``add`` of an existing property replaces it; v2.0 ``add`` of an
    existing one is a conflict; ``replace`` and ``remove`` of a missing one
    are conflicts.  Raises 409 in the registry's style.
    """
    result = dict(current)
    for operation in operations:
        exists = operation.key in result
        if operation.op == 'add' and exists and media_type == PATCH_V20:
            raise faults.property_conflict(
                f"Property {operation.key} already present.")
        if operation.op in ('replace', 'remove') and not exists:
            raise faults.property_conflict(
                f"Property {operation.key} does not exist.")
        if operation.op == 'remove':
            del result[operation.key]
        else:
            assert operation.value is not None
            result[operation.key] = operation.value
    return result


def merge_into(image: dict[str, Any], values: Mapping[str, str]) -> bool:
    """Give stored values back in an image representation; ``True`` if
    that changed it."""
    changed = any(image.get(key, _ABSENT) != value
                  for key, value in values.items())
    if changed:
        image.update(values)
    return changed


def strip_from(image: dict[str, Any], keys: Collection[str]) -> bool:
    """Remove captured keys from an image representation (defence in depth:
    the registry should never have them, but an image created before the
    stack was deployed may); ``True`` if there were any."""
    found = [key for key in keys if key in image]
    for key in found:
        del image[key]
    return bool(found)


def _is_unicode(value: str) -> bool:
    """Whether ``value`` is text UTF-8 can hold (no lone surrogate)."""
    try:
        value.encode('utf-8')
    except UnicodeEncodeError:
        return False
    return True


#: No value of a JSON document.
_ABSENT = object()


__all__ = [
    'MAX_KEY_LENGTH',
    'MISSING',
    'OPERATIONS',
    'PATCH_V20',
    'PATCH_V21',
    'Operation',
    'apply_operations',
    'check_value',
    'decode_pointer',
    'merge_into',
    'op_and_pointer',
    'split_create',
    'split_patch',
    'strip_from',
]
