"""The capture-strip-store-give-back flow shared by capturing filters.

A capturing filter owns a set of image property names (a *concern*).  On
their way in, those properties are taken out of creates and JSON-patch
updates and written to the mapping store around the registry's call (see
:mod:`instance_aware.store.records` for the write protocol); on their way
out they are put back into every image representation for callers the
concern's read rule allows, and removed for everybody else.  List filters
on them are answered from the store.

This module is the flow, one job per route and method; each job is a
module of :mod:`instance_aware.capture` and what it may ask of the filter
is :class:`~instance_aware.capture.base.CaptureBase`.  Subclasses say
which keys they own, how to validate values and which policy rules
apply; nothing here knows of instances or encryption.
"""

from __future__ import annotations

import webob

from instance_aware.capture import create, delete, lists, update
from instance_aware.capture.base import CaptureBase
from instance_aware.http.request import Request


class CapturingFilter(CaptureBase):
    """Base of filters that capture a set of image properties."""

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

    def create(self, req: Request) -> webob.Response:
        """Store the captured keys around the registry's create."""
        return create.create(self, req)

    def index(self, req: Request) -> webob.Response:
        """Give keys back in a list; answer filters on them."""
        return lists.index(self, req)

    def show(self, req: Request) -> webob.Response:
        """Give keys back in the image the registry shows."""
        response = self.forward(req)
        if response.status_int != 200 or req.verb == 'HEAD':
            return response
        return self.give_back_response(req, response)

    def update(self, req: Request) -> webob.Response:
        """Apply captured patch operations once the registry may."""
        return update.update(self, req)

    def delete(self, req: Request) -> webob.Response:
        """Mark the record deleted once the registry deleted."""
        return delete.delete(self, req)
