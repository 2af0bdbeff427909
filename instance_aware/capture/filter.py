"""The capture-strip-store-give-back flow shared by capturing filters.

A capturing filter owns a set of image property names (a *concern*).  On
their way in, those properties are taken out of creates and JSON-patch
updates and written to the mapping store around the registry's call (see
:mod:`instance_aware.store.records` for the write protocol); on their way
out they are put back into every image representation for callers the
concern's read rule allows, and removed for everybody else.  List filters
on them are answered by :mod:`instance_aware.capture.listing`.

Subclasses say which keys they own, how to validate values and which
policy rules apply; this module knows nothing of instances or encryption.
"""

from __future__ import annotations

import functools
import re
import urllib.parse
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import webob
from oslo_config import cfg
from oslo_log import log as logging

from instance_aware.capture import bodies, listing, strategy
from instance_aware.filters import base
from instance_aware.http import documents, faults
from instance_aware.http.request import PATCH_V20, PATCH_V21, Request
from instance_aware.store import errors as store_errors
from instance_aware.store import models
from instance_aware.store.records import RelationFields, Snapshot, Stored

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

LOG = logging.getLogger(__name__)

#: Names the property the update probe removes (it never exists).
PROBE_PREFIX = 'instance_aware_probe_'
#: Environ key: stored values a read-only request already loaded.
LOADED = 'instance_aware.loaded'
#: Environ key: image ids whose row a filter of this request began.
BEGUN = 'instance_aware.begun'
#: Environ key: records as this request found them (image id -> snapshot).
BEFORE = 'instance_aware.before'
#: Environ key: image ids this request marked deleted.
MARKED = 'instance_aware.marked'
#: Environ key: image ids the registry lets this request's caller update.
AUTHORISED = 'instance_aware.authorised'
_UUID_PATTERN = (
    r'^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}'
    r'-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$')


class CapturingFilter(base.Filter):
    """Base of filters that capture a set of image properties."""

    ROUTES = frozenset({'images', 'image'})
    #: ``ia_properties.concern`` of this filter's rows.
    CONCERN: ClassVar[str]
    #: Rule to read the captured keys of an image.
    #: Request headers that assert values: header environ key -> property.
    HEADERS: ClassVar[Mapping[str, str]] = {}

    # -- what subclasses define -------------------------------------------

    @property
    def keys(self) -> frozenset[str]:
        """The property names this filter captures."""
        raise NotImplementedError

    def validate(self, req: Request, values: Mapping[str, str],
                 previous: Mapping[str, str] | None) -> None:
        """Refuse (4xx) values that must not be stored.

        Called before the registry is asked anything, with the values the
        image had before (``None`` on create).
        """

    def relation(self, req: Request, owner: str | None,
                 values: Mapping[str, str],
                 previous: RelationFields | None,
                 before: Mapping[str, str] | None = None
                 ) -> RelationFields | None:
        """The indexed relation to keep with ``values`` (if any);
        ``previous`` and ``before`` are the relation and the values the
        image had (``None`` on create)."""
        return None

    # -- request flow ------------------------------------------------------

    def handles(self, environ: WSGIEnvironment) -> bool:
        # Asserting headers never reach the registry, handled or not.
        for header, key in self.HEADERS.items():
            value = environ.pop(header, None)
            if value is not None:
                environ.setdefault('instance_aware.asserted', {})[key] = value
        return super().handles(environ)

    def process_request(self, req: Request) -> webob.Response | None:
        name, method = req.route.name, req.verb
        if name == 'images' and method == 'POST':
            return self.create(req)
        if name == 'images' and method in ('GET', 'HEAD'):
            return self.index(req)
        if name == 'image' and method in ('GET', 'HEAD'):
            return self.show(req)
        if name == 'image' and method == 'PATCH':
            return self.update(req)
        if name == 'image' and method == 'DELETE':
            return self.delete(req)
        return None

    def asserted(self, req: Request) -> dict[str, str]:
        """Values asserted by request headers for this filter's keys."""
        found = req.environ.get('instance_aware.asserted', {})
        return {k: v for k, v in found.items() if k in self.keys}

    def stored_before(self, req: Request, image_id: str) -> Stored | None:
        """This concern's record of ``image_id`` before the request.

        Read once for every filter of the stack (the first to ask reads
        every concern): the filters all ask on the way in, before any of
        them writes, so the snapshot is what the store held.  Raises
        :class:`~instance_aware.store.errors.StoreUnavailable` when the
        store is down, before the registry is called.
        """
        snapshots: dict[str, Snapshot | None] = req.environ.setdefault(
            BEFORE, {})
        if image_id not in snapshots:
            snapshots[image_id] = self.records.snapshot(image_id)
        found = snapshots[image_id]
        return None if found is None else found.of(self.CONCERN)

    # -- give back ---------------------------------------------------------

    def may_read(self, req: Request, owner: str | None) -> bool:
        """This concern's named read check for an image of ``owner``."""
        raise NotImplementedError

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
        values = ({k: v.values for k, v in stored.items()}
                  if stored is not None
                  else self._values_of(req, readable))
        changed = False
        for image in images:
            if not isinstance(image, dict):
                continue
            image_id = image.get('id')
            if image_id not in readable:
                changed = bodies.strip_from(image, self.keys) or changed
            elif isinstance(image_id, str) and image_id in values:
                changed = bodies.merge_into(
                    image, values[image_id]) or changed
        return changed

    def _values_of(self, req: Request, image_ids: set[str]
                   ) -> dict[str, dict[str, str]]:
        """This concern's stored values of ``image_ids``.

        A read-only request (show, list) reads the store once for every
        capturing filter of the stack: the first one loads all concerns
        into the request environment, the others find theirs there.
        Requests that write never share, so nobody sees values from
        before their own write.
        """
        if not image_ids:
            return {}
        if req.verb not in ('GET', 'HEAD'):
            loaded = self.records.values_of(image_ids)
        else:
            shared: dict[str, dict[str, dict[str, str]]] = (
                req.environ.setdefault(LOADED, {}))
            missing = image_ids - shared.keys()
            if missing:
                fresh = self.records.values_of(missing)
                for image_id in missing:
                    shared[image_id] = fresh.get(image_id, {})
            loaded = {i: shared[i] for i in image_ids}
        return {image_id: concerns[self.CONCERN]
                for image_id, concerns in loaded.items()
                if self.CONCERN in concerns}

    def _give_back_response(self, req: Request, response: webob.Response,
                            stored: Mapping[str, Stored] | None = None
                            ) -> webob.Response:
        document = documents.read(response)
        if isinstance(document, dict) and 'id' in document:
            documents.write(response, document,
                            changed=self.give_back(req, [document], stored))
        return response

    def show(self, req: Request) -> webob.Response:
        response = self.forward(req)
        if response.status_int != 200 or req.verb == 'HEAD':
            return response
        return self._give_back_response(req, response)

    # -- create ------------------------------------------------------------

    def create(self, req: Request) -> webob.Response:
        asserted = self.asserted(req)
        # The body as Glance reads it, whatever its Content-Type.
        body = req.json_body(self.config.max_json_body_size)
        if body is None and not asserted:
            return self.forward(req)  # Glance: "Body expected"
        if body is None:
            body = {}  # only asserting headers: an image of defaults
        if not isinstance(body, dict):
            # Glance fails on it with a 500.
            raise faults.bad_request(
                'Request body must be a JSON object of image properties.')
        captured, forwarded = bodies.split_create(body, self.keys)
        captured.update(asserted)
        if not captured:
            return self._created(req, self.forward(req),
                                 None)
        image_id = forwarded.get('id')
        if image_id is None:
            image_id = forwarded['id'] = str(uuid.uuid4())
        if not isinstance(image_id, str) or not _is_uuid(image_id):
            # Glance refuses the id itself; nothing to store.
            req.replace_json(forwarded)
            return self.forward(req)
        owner = forwarded.get('owner') or req.context.project_id
        self.validate(req, captured, None)
        begun: set[str] = req.environ.setdefault(BEGUN, set())
        try:
            self.records.begin(image_id, owner, self.CONCERN, captured,
                               self.relation(req, owner, captured, None),
                               joining=image_id in begun)
        except store_errors.LostRace:
            raise  # retried and lost again: the base's "retry" 409
        except store_errors.Conflict:
            raise faults.conflict(  # Glance's words for a duplicate id
                f'Image ID {image_id} already exists!') from None
        begun.add(image_id)
        req.replace_json(forwarded)
        try:
            response = self.forward(req)
        except BaseException:
            self._abort(image_id)
            raise
        if response.status_int == 504:
            # The registry may have created the image after all: keep the
            # record pending; reconcile activates or discards it.
            LOG.warning('Create of image %s timed out upstream; its record '
                        'stays pending for reconcile', image_id)
            return response
        if response.status_int != 201:
            self._abort(image_id)
            return response
        return self._created(req, response, image_id)

    def _abort(self, image_id: str) -> None:
        try:
            self.records.abort(image_id, self.CONCERN)
        except store_errors.StoreError:
            LOG.exception('Could not remove the pending record of image %s;'
                          ' reconcile will', image_id)

    def _created(self, req: Request, response: webob.Response,
                 image_id: str | None) -> webob.Response:
        document = documents.read(response)
        if response.status_int != 201 or not isinstance(document, dict):
            return response
        if image_id is None:
            # Nothing captured, nothing stored, nothing to give back: the
            # store is not needed (down, it must not turn the image Glance
            # created into a 503 that invites a retry).
            return response
        try:
            self.records.commit(
                image_id, self.CONCERN, document.get('owner'),
                listing.parse_time(document.get('created_at')))
        except store_errors.StoreError:
            LOG.exception('Image %s was created but its record stays '
                          'pending; reconcile will activate it', image_id)
            return response
        self.give_back(req, [document])
        documents.write(response, document)
        return response

    # -- update ------------------------------------------------------------

    def update(self, req: Request) -> webob.Response:
        media_type = req.patch_media_type
        asserted = self.asserted(req)
        document = req.json_body(self.config.max_json_body_size)
        if media_type is None or not isinstance(document, list):
            return self.forward(req)  # Glance answers 415 or 400
        operations, forwarded = bodies.split_patch(document, media_type,
                                                    self.keys)
        operations += [bodies.Operation('add', k, v)
                       for k, v in asserted.items()]
        image_id = req.route.image_id
        assert image_id is not None
        # Read before the registry is asked anything: if the store is
        # down, the request fails with 503 and nothing was changed.
        stored = self.stored_before(req, image_id)
        if not operations:
            before = {image_id: stored} if stored is not None and (
                stored.state == models.ACTIVE) else {}
            response = self.forward(req)
            self._follow_owner(stored, response)
            return self._give_back_response(req, response, before)
        # Authorisation before validation: a caller who may not change
        # this concern, or whom the registry would refuse, gets that
        # refusal whatever the stored values are.
        self.authorise(req, image_id)
        refused = self.authorise_update(req, image_id)
        if refused is not None:
            return refused
        current = stored.values if stored and (
            stored.state == models.ACTIVE) else {}
        values = bodies.apply_operations(current, operations,
                                          PATCH_V21 if media_type ==
                                          PATCH_V21 else PATCH_V20)
        self.validate(req, values, current)
        if forwarded:
            req.replace_json(forwarded)
            response = self.forward(req)
        else:
            # Nothing left for the registry to change: the image as the
            # caller sees it is the answer.
            response = self.show_image(req, image_id)
        if response.status_int != 200:
            return response
        image = documents.read(response)
        if not isinstance(image, dict):
            return response
        owner = image.get('owner')
        try:
            self.records.replace(
                image_id, self.CONCERN, owner, values,
                self.relation(req, owner, values,
                              stored.relation if stored else None, current),
                listing.parse_time(image.get('created_at')))
        except store_errors.StoreError as exc:
            # Unavailable, or still losing races after the retries: the
            # registry's part is done, so this is not the caller's conflict.
            LOG.exception('Image %s updated without its captured keys',
                          image_id)
            reason = ('is unavailable' if isinstance(
                exc, store_errors.StoreUnavailable) else
                'is too busy with concurrent changes of this image')
            return faults.unavailable(
                'The registry applied the other changes, but the '
                'instance-aware properties could not be saved: the '
                f'mapping database {reason}.  Retry the request.')
        self.give_back(req, [image])
        response.status_int = 200
        documents.write(response, image)
        return response

    def _follow_owner(self, stored: Stored | None,
                      response: webob.Response) -> None:
        """Move the record along when the registry changed the owner.

        Only an administrator's ``replace /owner`` does that; the relation
        belongs to the new owner from then on (its filters and query API),
        no longer to the old one.
        """
        if stored is None or stored.state != models.ACTIVE or (
                response.status_int != 200):
            return
        image = documents.read(response)
        owner = image.get('owner') if isinstance(image, dict) else None
        if not isinstance(owner, str) or owner == stored.project_id:
            return
        try:
            self.records.move(stored.image_id, owner)
        except store_errors.StoreError:
            LOG.exception('Image %s now belongs to %s but its record still '
                          'names %s; reconcile will move it',
                          stored.image_id, owner, stored.project_id)

    def authorise_update(self, req: Request,
                         image_id: str) -> webob.Response | None:
        """The registry's refusal if the caller may not update the image.

        Asked once per request for every filter of the stack (see
        :meth:`_probe`), before any stored value is looked at: the image's
        visibility, owner and the registry's own ``modify_image`` rule
        decide, exactly as bare Glance would, so a caller who may not
        change the image gets the same 403 (or 404) whatever its captured
        values are.  ``None``: the caller may.
        """
        allowed: set[str] = req.environ.setdefault(AUTHORISED, set())
        if image_id in allowed:
            return None
        probe = self._probe(req)
        if probe.status_int not in (200, 409):
            return probe
        allowed.add(image_id)
        return None

    def authorise(self, req: Request, image_id: str) -> None:
        """Refuse (403, or the registry's 404) a caller who may not
        change this concern's keys of the image; decided on the image's
        visibility and owner only, before any stored value is looked
        at."""

    def _probe(self, req: Request) -> webob.Response:
        """Ask the registry whether the caller may update the image.

        Removing a property the registry does not have is refused with 403
        (or 404) before it is found missing (409), and changes nothing.
        The property is named afresh each time, so it cannot exist, not
        even on an image that kept instance keys from before the stack was
        deployed.  The probe goes to the path the caller used, so a
        spelling the registry does not route (a trailing slash) is its 404
        here too.
        """
        pointer = f'/{PROBE_PREFIX}{uuid.uuid4().hex}'
        return self.subrequest(
            req, 'PATCH', urllib.parse.quote(req.reading.path_info),
            [{'op': 'remove', 'path': pointer}], PATCH_V21)

    # -- delete ------------------------------------------------------------

    def delete(self, req: Request) -> webob.Response:
        image_id = req.route.image_id
        assert image_id is not None
        stored = self.stored_before(req, image_id)  # 503 if down
        response = self.forward(req)
        marked: set[str] = req.environ.setdefault(MARKED, set())
        if response.status_int == 204 and stored is not None and (
                image_id not in marked):  # one row for every concern
            try:
                self.records.mark_deleted(image_id)
                marked.add(image_id)
            except store_errors.StoreError:
                LOG.exception('Image %s was deleted but its record is not '
                              'marked; reconcile will', image_id)
        return response

    # -- list --------------------------------------------------------------

    def index(self, req: Request) -> webob.Response:
        query = listing.Query.parse(req.query(), self.keys)
        if not query.captured:
            return self._give_back_list(
                req, self.forward(req), None)
        projects = self.filter_scope(req)
        descending = True
        plan = None
        if projects is not None and len(projects) == 1 and (
                not self.checks.is_admin(req.context)):
            plan = listing.fast_plan(query, *self._limits())
            descending = plan.descending if plan else True
        prefetched: dict[str, dict[str, dict[str, str]]] = {}
        matches = self.records.matching(query.captured, projects,
                                        descending, prefetched) if (
            projects is None or projects) else []
        if prefetched:
            # What giving back the answer needs, read with the matches.
            shared: dict[str, dict[str, dict[str, str]]] = (
                req.environ.setdefault(LOADED, {}))
            for image_id, _created in matches:
                shared.setdefault(image_id, prefetched.get(image_id, {}))
        if plan is not None and self.fetch_by_shows:
            fast = self._fast_list(req, query, plan, matches)
            if fast is not None:
                return fast
        return self._slow_list(req, query, [m[0] for m in matches])

    @functools.cached_property
    def fetch_by_shows(self) -> bool:
        """Whether filtered lists fetch their images one show at a time
        (option ``list_strategy``; ``auto`` looks at the registry's own
        database when the stack runs inside it)."""
        return strategy.fetch_by_shows(self.config.list_strategy,
                                       self.oslo_conf)

    def filter_scope(self, req: Request) -> list[str] | None:
        """Owners whose stored values may answer the caller's filters.

        ``None`` means every project (an administrator who may read any
        project's keys); an empty list means none, so the filter matches
        nothing.  Anybody else's filters match their own project's images
        only, even under a policy that lets them read other projects'
        keys: values another project's users asserted on their own public
        or shared images must not land in this project's answers (Nova's
        backup rotation would count, and try to delete, such an image).
        """
        own = req.context.project_id
        foreign = f'not-{own}'
        if self.checks.is_admin(req.context, own) and (
                self.may_read(req, foreign)):
            return None
        if own and self.may_read(req, own):
            return [own]
        return []

    def _limits(self) -> tuple[int, int]:
        conf = self.oslo_conf
        try:
            return int(conf.limit_param_default), int(conf.api_limit_max)
        except (cfg.NoSuchOptError, AttributeError):
            return 25, 1000

    def _slow_list(self, req: Request, query: listing.Query,
                   ids: list[str]) -> webob.Response:
        wanted = ids
        client_ids = query.single().get('id')
        if client_ids is not None:
            try:
                keep = set(listing.filter_values(client_ids))
            except ValueError as exc:
                raise faults.bad_request(str(exc)) from None
            wanted = [i for i in ids if i in keep]
        forwarded = query.forwarded({'id': 'in:' + ','.join(wanted)})
        sub = req.copy_get()
        sub.query_string = urllib.parse.urlencode(forwarded)
        response = self.forward(sub)
        return self._give_back_list(req, response, query)

    def _give_back_list(self, req: Request, response: webob.Response,
                        query: listing.Query | None) -> webob.Response:
        document = documents.read(response)
        if response.status_int != 200 or not isinstance(document, dict):
            return response
        images = document.get('images')
        changed = isinstance(images, list) and self.give_back(req, images)
        if query is not None:
            marker = listing.marker_of(document.get('next'))
            document.update(listing.links(query, marker))
            if marker is None:
                document.pop('next', None)
            changed = True
        documents.write(response, document, changed=changed)
        return response

    def _fast_list(self, req: Request, query: listing.Query,
                   plan: listing.FastPlan,
                   matches: list[tuple[str, Any]]
                   ) -> webob.Response | None:
        stamps = [m[1] for m in matches]
        if None in stamps or len(set(stamps)) != len(stamps):
            return None  # unknown or tied created_at: Glance must order
        ids = [m[0] for m in matches]
        stamp_of = dict(matches)
        start = 0
        if plan.marker is not None:
            if plan.marker not in ids:
                return None
            start = ids.index(plan.marker) + 1
        page: list[dict[str, Any]] = []
        for image_id in ids[start:]:
            if len(page) >= plan.limit:
                break
            shown = self.show_image(req, image_id)
            if shown.status_int == 404:
                continue
            image = documents.read(shown)
            if shown.status_int != 200 or not isinstance(image, dict):
                return None
            if listing.parse_time(image.get('created_at')) != (
                    stamp_of[image_id]):
                return None  # our order is stale: let Glance order
            if plan.predicate(image):
                page.append(image)
        self.give_back(req, page)
        next_marker = page[-1]['id'] if page and (
            len(page) == plan.limit) else None
        response = webob.Response(status=200)
        response.content_type = 'application/json'
        response.charset = None
        response.body = listing.list_body(page, query, next_marker)
        return response


def _is_uuid(value: str) -> bool:
    return re.match(_UUID_PATTERN, value) is not None
