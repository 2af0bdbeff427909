"""Image delete: the record kept as history once the registry deleted.

The record is read before the registry is called (a 503 when the store
is down, with nothing deleted), and marked deleted after its ``204``,
once for every concern: the row is the image's, not a filter's.
"""

from __future__ import annotations

import webob
from oslo_log import log as logging

from instance_aware.capture import state
from instance_aware.capture.base import CaptureBase
from instance_aware.http.request import Request
from instance_aware.store import errors as store_errors

LOG = logging.getLogger(__name__)


def delete(flt: CaptureBase, req: Request) -> webob.Response:
    """``DELETE /v2/images/{id}`` through ``flt``."""
    image_id = req.route.image_id
    assert image_id is not None
    stored = flt.stored_before(req, image_id)  # 503 if down
    response = flt.forward(req)
    marked = state.of(req.environ).marked
    if response.status_int == 204 and stored is not None and (
            image_id not in marked):
        try:
            flt.records.mark_deleted(image_id)
            marked.add(image_id)
        except store_errors.StoreError:
            LOG.exception('Image %s was deleted but its record is not '
                          'marked; reconcile will', image_id)
    return response
