"""A registry stand-in for filter tests: one image document."""

from __future__ import annotations

import json
from typing import Any

IMAGE = '/v2/images/3d5a1d0a-7a43-4b93-9cde-6f49f64a3a1f'


def registry(environ: dict[str, Any], start_response: Any) -> Any:
    """Answer every request with the same image document (compact)."""
    body = json.dumps({'id': 'x', 'name': 'from registry'}).encode()
    start_response('200 OK', [('Content-Type', 'application/json'),
                              ('Content-Length', str(len(body)))])
    return [body]
