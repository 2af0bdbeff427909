"""Image lists: keys given back, and filters on captured keys answered.

A list without a filter on this concern's keys goes to the registry and
its images get their keys back.  A filter on them is answered from the
store (see :mod:`instance_aware.capture.listing` for the fast and slow
paths and why); this module runs those paths against the registry.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

import webob
from oslo_config import cfg

from instance_aware.capture import listing, state
from instance_aware.capture.base import CaptureBase
from instance_aware.http import documents, faults
from instance_aware.http.request import Request


def index(flt: CaptureBase, req: Request) -> webob.Response:
    """``GET /v2/images`` through ``flt``."""
    query = listing.Query.parse(req.query(), flt.keys)
    if not query.captured:
        return _give_back_list(flt, req, flt.forward(req), None)
    projects = filter_scope(flt, req)
    descending = True
    plan = None
    if projects is not None and len(projects) == 1 and (
            not flt.checks.is_admin(req.context)):
        plan = listing.fast_plan(query, *_limits(flt.oslo_conf))
        descending = plan.descending if plan else True
    prefetched: dict[str, dict[str, dict[str, str]]] = {}
    matches = flt.records.matching(query.captured, projects,
                                   descending, prefetched) if (
        projects is None or projects) else []
    if prefetched:
        # What giving back the answer needs, read with the matches.
        shared = state.of(req.environ).loaded
        for image_id, _created in matches:
            shared.setdefault(image_id, prefetched.get(image_id, {}))
    if plan is not None and flt.fetch_by_shows:
        fast = _fast_list(flt, req, query, plan, matches)
        if fast is not None:
            return fast
    return _slow_list(flt, req, query, [m[0] for m in matches])


def filter_scope(flt: CaptureBase, req: Request) -> list[str] | None:
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
    if flt.checks.is_admin(req.context, own) and (
            flt.may_read(req, foreign)):
        return None
    if own and flt.may_read(req, own):
        return [own]
    return []


def _limits(conf: cfg.ConfigOpts) -> tuple[int, int]:
    """The registry's default and largest page size."""
    try:
        return int(conf.limit_param_default), int(conf.api_limit_max)
    except (cfg.NoSuchOptError, AttributeError):
        return 25, 1000


def _slow_list(flt: CaptureBase, req: Request, query: listing.Query,
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
    response = flt.forward(sub)
    return _give_back_list(flt, req, response, query)


def _give_back_list(flt: CaptureBase, req: Request,
                    response: webob.Response,
                    query: listing.Query | None) -> webob.Response:
    document = documents.read(response)
    if response.status_int != 200 or not isinstance(document, dict):
        return response
    images = document.get('images')
    changed = isinstance(images, list) and flt.give_back(req, images)
    if query is not None:
        marker = listing.marker_of(document.get('next'))
        document.update(listing.links(query, marker))
        if marker is None:
            document.pop('next', None)
        changed = True
    documents.write(response, document, changed=changed)
    return response


def _fast_list(flt: CaptureBase, req: Request, query: listing.Query,
               plan: listing.FastPlan, matches: list[tuple[str, Any]]
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
        shown = flt.show_image(req, image_id)
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
    flt.give_back(req, page)
    next_marker = page[-1]['id'] if page and (
        len(page) == plan.limit) else None
    return documents.json_response(
        listing.list_document(page, query, next_marker))
