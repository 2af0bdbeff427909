"""What a capturing filter is, as the capture jobs see it.

A capturing filter owns a set of image property names (a *concern*).
:class:`CaptureBase` holds what the jobs (:mod:`.create`, :mod:`.update`,
:mod:`.delete`, :mod:`.lists`) may ask of it: the hooks a concrete filter
defines (its keys, its validation, its read and write rules, the relation
it indexes), what the request already knows (asserted header values, the
stored record as the request found it) and giving keys back.  The request
flow that calls the jobs is :class:`~instance_aware.capture.filter.
CapturingFilter`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import webob

from instance_aware.capture import give_back, state, strategy
from instance_aware.filters import base
from instance_aware.http import documents
from instance_aware.http.request import Request
from instance_aware.store.records import RelationFields, Stored

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment


class CaptureBase(base.Filter):
    """The hooks and shared reads of a filter capturing image properties."""

    ROUTES = frozenset({'images', 'image'})
    #: ``ia_properties.concern`` of this filter's rows.
    CONCERN: ClassVar[str]
    #: Request headers that assert values: header environ key -> property.
    HEADERS: ClassVar[Mapping[str, str]] = {}

    # -- what subclasses define -------------------------------------------

    @property
    def keys(self) -> frozenset[str]:
        """The property names this filter captures."""
        raise NotImplementedError

    def may_read(self, req: Request, owner: str | None) -> bool:
        """This concern's named read check for an image of ``owner``."""
        raise NotImplementedError

    def validate(self, req: Request, values: Mapping[str, str],
                 previous: Mapping[str, str] | None) -> None:
        """Refuse (4xx) values that must not be stored.

        Called before the registry is asked anything, with the values the
        image had before (``None`` on create).
        """

    def authorise(self, req: Request, image_id: str) -> None:
        """Refuse (403, or the registry's 404) a caller who may not
        change this concern's keys of the image; decided on the image's
        visibility and owner only, before any stored value is looked
        at."""

    def relation(self, req: Request, owner: str | None,
                 values: Mapping[str, str],
                 previous: RelationFields | None,
                 before: Mapping[str, str] | None = None
                 ) -> RelationFields | None:
        """The indexed relation to keep with ``values`` (if any);
        ``previous`` and ``before`` are the relation and the values the
        image had (``None`` on create)."""
        return None

    # -- what the request knows ---------------------------------------------

    def handles(self, environ: WSGIEnvironment) -> bool:
        # Asserting headers never reach the registry, handled or not.
        for header, key in self.HEADERS.items():
            value = environ.pop(header, None)
            if value is not None:
                state.of(environ).asserted[key] = value
        return super().handles(environ)

    def asserted(self, req: Request) -> dict[str, str]:
        """Values asserted by request headers for this filter's keys."""
        found: state.RequestState | None = req.environ.get(state.KEY)
        if found is None:
            return {}
        return {k: v for k, v in found.asserted.items() if k in self.keys}

    def stored_before(self, req: Request, image_id: str) -> Stored | None:
        """This concern's record of ``image_id`` before the request.

        Read once for every filter of the stack (the first to ask reads
        every concern): the filters all ask on the way in, before any of
        them writes, so the snapshot is what the store held.  Raises
        :class:`~instance_aware.store.errors.StoreUnavailable` when the
        store is down, before the registry is called.
        """
        snapshots = state.of(req.environ).before
        if image_id not in snapshots:
            snapshots[image_id] = self.records.snapshot(image_id)
        found = snapshots[image_id]
        return None if found is None else found.of(self.CONCERN)

    @functools.cached_property
    def fetch_by_shows(self) -> bool:
        """Whether filtered lists fetch their images one show at a time
        (option ``list_strategy``; ``auto`` looks at the registry's own
        database when the stack runs inside it)."""
        return strategy.fetch_by_shows(self.config.list_strategy,
                                       self.oslo_conf)

    # -- give back ---------------------------------------------------------

    def readable(self, req: Request, owner: str | None,
                 cache: dict[str | None, bool] | None = None) -> bool:
        """Whether the caller may read this concern's keys of ``owner``."""
        if cache is not None and owner in cache:
            return cache[owner]
        allowed = self.may_read(req, owner)
        if cache is not None:
            cache[owner] = allowed
        return allowed

    def give_back(self, req: Request, images: list[dict[str, Any]],
                  stored: Mapping[str, Stored] | None = None) -> bool:
        """Put stored values into readable images, strip them elsewhere;
        ``True`` if any image changed.

        ``stored`` are values loaded before the registry was called (the
        store is then not read again).
        """
        cache: dict[str | None, bool] = {}
        readable = {
            img['id'] for img in images
            if isinstance(img, dict) and isinstance(img.get('id'), str)
            and self.readable(req, img.get('owner'), cache)}
        values: Mapping[str, Mapping[str, str]] = {}
        if stored is not None:
            values = {k: v.values for k, v in stored.items()}
        elif readable:
            # Read-only requests share what they load (writes never do).
            shared = state.of(req.environ).loaded if req.verb in (
                'GET', 'HEAD') else None
            values = give_back.values_of(self.records, self.CONCERN,
                                         readable, shared)
        return give_back.restore(images, self.keys, readable, values)

    def give_back_response(self, req: Request, response: webob.Response,
                           stored: Mapping[str, Stored] | None = None
                           ) -> webob.Response:
        """:meth:`give_back` into the image document of ``response``."""
        document = documents.read(response)
        if isinstance(document, dict) and 'id' in document:
            documents.write(response, document,
                            changed=self.give_back(req, [document], stored))
        return response
