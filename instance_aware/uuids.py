"""UUID checks, one definition for every layer.

Nova and Glance accept a UUID in several spellings (upper case, without
dashes, in braces, as a URN: oslo's ``is_uuid_like``), and the stack must
accept exactly what they accept while indexing one spelling, the
canonical one.  Every "is this a UUID" of the filters, the query API, the
store and the command line is asked here, so no two of them disagree.
This module imports nothing of the package: any layer may use it.
"""

from __future__ import annotations

import re
import uuid

from oslo_utils import uuidutils

#: The ``id`` pattern of Glance's image schema: an image id must be
#: spelled 8-4-4-4-12 (any case), stricter than :func:`is_uuid`.
_IMAGE_ID = re.compile(
    r'^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}'
    r'-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$')


def is_uuid(value: object) -> bool:
    """Whether ``value`` is a UUID in a spelling Nova and Glance accept."""
    return uuidutils.is_uuid_like(value)


def canonical(value: str) -> str:
    """A UUID :func:`is_uuid` accepts, in canonical form (lower case,
    dashed); raises :class:`ValueError` for most other values."""
    return str(uuid.UUID(value))


def is_canonical(value: str) -> bool:
    """Whether ``value`` is a UUID spelled canonically (the only spelling
    the store indexes)."""
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


def is_image_id(value: str) -> bool:
    """Whether Glance's image schema accepts ``value`` as an image id."""
    return _IMAGE_ID.match(value) is not None
