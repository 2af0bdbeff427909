"""Image update: captured JSON-patch operations applied to the store.

The captured operations are taken out of the patch (and asserting
headers added as ``add``), the caller's right to update the image is asked
of the registry (:func:`authorise_update`, one probe per request), the
operations are applied to the stored values with Glance's semantics and
validated, the rest of the patch goes to the registry, and the new values
are written once it has accepted it.  The store is read before the
registry is asked anything: when it is down, nothing changes.
"""

from __future__ import annotations

import urllib.parse
import uuid

import webob
from oslo_log import log as logging

from instance_aware.capture import bodies, listing, state
from instance_aware.capture.base import CaptureBase
from instance_aware.http import documents, faults
from instance_aware.http.request import PATCH_V20, PATCH_V21, Request
from instance_aware.store import errors as store_errors
from instance_aware.store import models
from instance_aware.store.records import Stored

LOG = logging.getLogger(__name__)

#: Names the property the update probe removes (it never exists).
PROBE_PREFIX = 'instance_aware_probe_'


def update(flt: CaptureBase, req: Request) -> webob.Response:
    """``PATCH /v2/images/{id}`` through ``flt``."""
    media_type = req.patch_media_type
    asserted = flt.asserted(req)
    document = req.json_body(flt.config.max_json_body_size)
    if media_type is None or not isinstance(document, list):
        return flt.forward(req)  # Glance answers 415 or 400
    operations, forwarded = bodies.split_patch(document, media_type,
                                                flt.keys)
    operations += [bodies.Operation('add', k, v)
                   for k, v in asserted.items()]
    image_id = req.route.image_id
    assert image_id is not None
    # Read before the registry is asked anything: if the store is
    # down, the request fails with 503 and nothing was changed.
    stored = flt.stored_before(req, image_id)
    if not operations:
        before = {image_id: stored} if stored is not None and (
            stored.state == models.ACTIVE) else {}
        response = flt.forward(req)
        _follow_owner(flt, stored, response)
        return flt.give_back_response(req, response, before)
    # Authorisation before validation: a caller who may not change
    # this concern, or whom the registry would refuse, gets that
    # refusal whatever the stored values are.
    flt.authorise(req, image_id)
    refused = authorise_update(flt, req, image_id)
    if refused is not None:
        return refused
    current = stored.values if stored and (
        stored.state == models.ACTIVE) else {}
    values = bodies.apply_operations(current, operations,
                                     PATCH_V21 if media_type ==
                                     PATCH_V21 else PATCH_V20)
    flt.validate(req, values, current)
    if forwarded:
        req.replace_json(forwarded)
        response = flt.forward(req)
    else:
        # Nothing left for the registry to change: the image as the
        # caller sees it is the answer.
        response = flt.show_image(req, image_id)
    if response.status_int != 200:
        return response
    image = documents.read(response)
    if not isinstance(image, dict):
        return response
    owner = image.get('owner')
    try:
        flt.records.replace(
            image_id, flt.CONCERN, owner, values,
            flt.relation(req, owner, values,
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
    flt.give_back(req, [image])
    response.status_int = 200
    documents.write(response, image)
    return response


def _follow_owner(flt: CaptureBase, stored: Stored | None,
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
        flt.records.move(stored.image_id, owner)
    except store_errors.StoreError:
        LOG.exception('Image %s now belongs to %s but its record still '
                      'names %s; reconcile will move it',
                      stored.image_id, owner, stored.project_id)


def authorise_update(flt: CaptureBase, req: Request,
                     image_id: str) -> webob.Response | None:
    """The registry's refusal if the caller may not update the image.

    Asked once per request for every filter of the stack (see
    :func:`_probe`), before any stored value is looked at: the image's
    visibility, owner and the registry's own ``modify_image`` rule
    decide, exactly as bare Glance would, so a caller who may not
    change the image gets the same 403 (or 404) whatever its captured
    values are.  ``None``: the caller may.
    """
    allowed = state.of(req.environ).authorised
    if image_id in allowed:
        return None
    probe = _probe(flt, req)
    if probe.status_int not in (200, 409):
        return probe
    allowed.add(image_id)
    return None


def _probe(flt: CaptureBase, req: Request) -> webob.Response:
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
    return flt.subrequest(
        req, 'PATCH', urllib.parse.quote(req.reading.path_info),
        [{'op': 'remove', 'path': pointer}], PATCH_V21)
