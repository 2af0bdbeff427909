"""What the client is told when the exchange with the upstream fails.

Each failure of the upstream (unreachable, too slow, broken off) or of the
client's own body becomes one error response in the registry's style
(:mod:`instance_aware.http.faults`), with the log level and the words the
proxy logs it with.
"""

from __future__ import annotations

import urllib3.exceptions
import webob.exc
from oslo_log import log as logging

from instance_aware.http import faults
from instance_aware.proxy import transfer


def classify(exc: Exception, body: transfer.RequestBody | None,
             deadline: transfer.Deadline, connect_timeout: float,
             read_timeout: float
             ) -> tuple[int, str, webob.exc.WSGIHTTPException]:
    """Log level, what happened and the client's error response."""
    if body is not None and body.error is not None:
        return logging.WARNING, 'Client request body failed', (
            faults.bad_request(
                'The request body could not be read to its end.'))
    if isinstance(exc, transfer.TransferTimeout) or (
            isinstance(exc, urllib3.exceptions.TimeoutError)
            and deadline.expired):
        return logging.ERROR, 'Upstream exceeded transfer_timeout', (
            faults.gateway_timeout(
                'The image service behind this endpoint did not '
                'complete the transfer within '
                f'{deadline.seconds:g} seconds.'))
    if isinstance(exc, urllib3.exceptions.NewConnectionError):
        return logging.ERROR, 'Upstream unreachable', (
            faults.bad_gateway(
                'The image service behind this endpoint could not be '
                'reached.  Retry later.'))
    if isinstance(exc, urllib3.exceptions.ConnectTimeoutError):
        return logging.ERROR, 'Upstream connection timed out', (
            faults.gateway_timeout(
                'The image service behind this endpoint did not '
                'accept the connection within '
                f'{connect_timeout:g} seconds.  Retry '
                'later.'))
    if isinstance(exc, (urllib3.exceptions.TimeoutError,
                        TimeoutError)):
        return logging.ERROR, 'Upstream timed out', (
            faults.gateway_timeout(
                'The image service behind this endpoint did not '
                f'answer within {read_timeout:g} '
                'seconds.'))
    return logging.ERROR, 'Upstream failed', faults.bad_gateway(
        'The image service behind this endpoint sent no valid '
        'response.')
