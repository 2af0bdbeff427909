"""Error responses in the registry's style.

Glance answers errors with ``webob.exc`` exceptions, rendered by webob as
HTML, JSON or plain text following the client's ``Accept`` header.  Every
error the stack produces goes through here, so clients parse ours exactly
like Glance's.
"""

from __future__ import annotations

import webob.exc


def bad_request(message: str) -> webob.exc.WSGIHTTPException:
    return webob.exc.HTTPBadRequest(explanation=message)


def forbidden(message: str) -> webob.exc.WSGIHTTPException:
    return webob.exc.HTTPForbidden(explanation=message)


def not_found(message: str) -> webob.exc.WSGIHTTPException:
    return webob.exc.HTTPNotFound(explanation=message)


def conflict(message: str) -> webob.exc.WSGIHTTPException:
    return webob.exc.HTTPConflict(explanation=message)


def property_conflict(detail: str) -> webob.exc.WSGIHTTPException:
    """409 as Glance words a JSON-patch conflict: webob's explanation
    ("There was a conflict when trying to complete your request.") with
    the reason as detail."""
    return webob.exc.HTTPConflict(detail=detail)


def too_large(message: str) -> webob.exc.WSGIHTTPException:
    return webob.exc.HTTPRequestEntityTooLarge(explanation=message)


def unsupported_media_type(message: str) -> webob.exc.WSGIHTTPException:
    return webob.exc.HTTPUnsupportedMediaType(explanation=message)


def unavailable(message: str) -> webob.exc.WSGIHTTPException:
    exc = webob.exc.HTTPServiceUnavailable(explanation=message)
    exc.headers['Retry-After'] = '5'
    return exc


def bad_gateway(message: str) -> webob.exc.WSGIHTTPException:
    return webob.exc.HTTPBadGateway(explanation=message)


def gateway_timeout(message: str) -> webob.exc.WSGIHTTPException:
    return webob.exc.HTTPGatewayTimeout(explanation=message)
