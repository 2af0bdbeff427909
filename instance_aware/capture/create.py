"""Image create: captured keys stored around the registry's call.

The captured keys are taken out of the body (and asserting headers
added), validated, and written as a *pending* record before the registry
is called (:meth:`~instance_aware.store.records.Records.begin`); the
registry's ``201`` makes the record active, any other answer removes it.
A timeout leaves it pending: the registry may have created the image after
all, and ``reconcile`` settles it either way.
"""

from __future__ import annotations

import uuid

import webob
from oslo_log import log as logging

from instance_aware import uuids
from instance_aware.capture import bodies, listing, state
from instance_aware.capture.base import CaptureBase
from instance_aware.http import documents, faults
from instance_aware.http.request import Request
from instance_aware.store import errors as store_errors

LOG = logging.getLogger(__name__)


def create(flt: CaptureBase, req: Request) -> webob.Response:
    """``POST /v2/images`` through ``flt``."""
    asserted = flt.asserted(req)
    # The body as Glance reads it, whatever its Content-Type.
    body = req.json_body(flt.config.max_json_body_size)
    if body is None and not asserted:
        return flt.forward(req)  # Glance: "Body expected"
    if body is None:
        body = {}  # only asserting headers: an image of defaults
    if not isinstance(body, dict):
        # Glance fails on it with a 500.
        raise faults.bad_request(
            'Request body must be a JSON object of image properties.')
    captured, forwarded = bodies.split_create(body, flt.keys)
    captured.update(asserted)
    if not captured:
        return _created(flt, req, flt.forward(req), None)
    image_id = forwarded.get('id')
    if image_id is None:
        image_id = forwarded['id'] = str(uuid.uuid4())
    if not isinstance(image_id, str) or not uuids.is_image_id(image_id):
        # Glance refuses the id itself; nothing to store.
        req.replace_json(forwarded)
        return flt.forward(req)
    owner = forwarded.get('owner') or req.context.project_id
    flt.validate(req, captured, None)
    begun = state.of(req.environ).begun
    try:
        flt.records.begin(image_id, owner, flt.CONCERN, captured,
                          flt.relation(req, owner, captured, None),
                          joining=image_id in begun)
    except store_errors.LostRace:
        raise  # retried and lost again: the base's "retry" 409
    except store_errors.Conflict:
        raise faults.conflict(  # Glance's words for a duplicate id
            f'Image ID {image_id} already exists!') from None
    begun.add(image_id)
    req.replace_json(forwarded)
    try:
        response = flt.forward(req)
    except BaseException:
        _abort(flt, image_id)
        raise
    if response.status_int == 504:
        # The registry may have created the image after all: keep the
        # record pending; reconcile activates or discards it.
        LOG.warning('Create of image %s timed out upstream; its record '
                    'stays pending for reconcile', image_id)
        return response
    if response.status_int != 201:
        _abort(flt, image_id)
        return response
    return _created(flt, req, response, image_id)


def _abort(flt: CaptureBase, image_id: str) -> None:
    try:
        flt.records.abort(image_id, flt.CONCERN)
    except store_errors.StoreError:
        LOG.exception('Could not remove the pending record of image %s;'
                      ' reconcile will', image_id)


def _created(flt: CaptureBase, req: Request, response: webob.Response,
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
        flt.records.commit(
            image_id, flt.CONCERN, document.get('owner'),
            listing.parse_time(document.get('created_at')))
    except store_errors.StoreError:
        LOG.exception('Image %s was created but its record stays '
                      'pending; reconcile will activate it', image_id)
        return response
    flt.give_back(req, [document])
    documents.write(response, document)
    return response
