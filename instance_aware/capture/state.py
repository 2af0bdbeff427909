"""What the capturing filters of one request learned, kept in one place.

The capturing filters of a stack (``instance_metadata`` and
``encryption_properties``) handle the same request one after the other.
Much of what one of them asks (the store's record of the image, whether
the registry lets the caller update it) would be the same question asked
again by the next, and some writes must happen once per image, not once
per filter.  So they share one :class:`RequestState`, under one environ
key (:data:`KEY`), made by the first filter that needs it.  A sub-request
of a filter starts with a fresh environment and so a fresh state.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from instance_aware.store.records import Snapshot

#: The environ key of the request's :class:`RequestState`.
KEY = 'instance_aware.capture'


@dataclasses.dataclass(slots=True)
class RequestState:
    """Per-request knowledge shared by the capturing filters.

    Every set and mapping is keyed by image id.
    """

    #: Values asserted by request headers (``X-Instance-UUID``): popped
    #: when the request arrives, so the registry never sees them, and
    #: picked up by the filter owning the key.  Property -> value.
    asserted: dict[str, str] = dataclasses.field(default_factory=dict)
    #: The store's record of each image as the request found it, read
    #: once for every concern on the way in, before any filter writes.
    before: dict[str, Snapshot | None] = dataclasses.field(
        default_factory=dict)
    #: Stored values (concern -> values) a read-only request loaded for
    #: the first filter to give keys back; the others find theirs here.
    loaded: dict[str, dict[str, dict[str, str]]] = dataclasses.field(
        default_factory=dict)
    #: Images whose pending row a filter began: the next filter's create
    #: joins that row instead of refusing a duplicate id.
    begun: set[str] = dataclasses.field(default_factory=set)
    #: Images whose row this request marked deleted (one row serves
    #: every concern).
    marked: set[str] = dataclasses.field(default_factory=set)
    #: Images the registry's update probe let the caller change (asked
    #: once per request, whatever the number of filters).
    authorised: set[str] = dataclasses.field(default_factory=set)
    #: Owner and status of images as the registry showed them to the
    #: caller (``encryption_properties`` asks twice per update: authorise,
    #: then validate; the registry is asked once).
    targets: dict[str, tuple[str | None, str]] = dataclasses.field(
        default_factory=dict)


def of(environ: dict[str, Any]) -> RequestState:
    """The request's state, made on first use."""
    state: RequestState | None = environ.get(KEY)
    if state is None:
        state = environ[KEY] = RequestState()
    return state
