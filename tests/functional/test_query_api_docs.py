"""The examples of the query API page are what the stack answers.

``doc/source/user/query-api.rst`` shows each example as a request (a
``none`` block with one ``GET`` line) followed by its JSON answer.  The
test creates the images of the list example, as the documented owner and
with a service token (so the relations are ``trusted``), sends every
documented request as a member of that project and compares the whole
answer with the documented one.  Only ``created_at`` differs: the images
are created now; it must still be an ISO 8601 UTC timestamp.
"""

from __future__ import annotations

import json
import re
from typing import Any

from tests import docsnippets
from tests.functional.conftest import Api

PAGE = docsnippets.DOC / 'user' / 'query-api.rst'
_TIMESTAMP = re.compile(r'^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$')


def _blocks(kind: str, text: str) -> list[tuple[int, str]]:
    """``(offset, dedented content)`` of every ``code-block:: kind``."""
    found = []
    pattern = re.compile(
        rf'^\.\. code-block:: {kind}\n\n((?:(?:   .*)?\n)+)', re.MULTILINE)
    for match in pattern.finditer(text):
        lines = [line[3:] for line in match.group(1).splitlines()]
        found.append((match.start(), '\n'.join(lines).strip()))
    return found


def examples() -> list[tuple[str, Any]]:
    """Each documented ``GET`` with the JSON block right after it."""
    text = PAGE.read_text(encoding='utf-8')
    answers = _blocks('json', text)
    pairs = []
    for offset, request in _blocks('none', text):
        if not request.startswith('GET ') or '{' in request:
            continue  # a route template, not an example
        after = [body for start, body in answers if start > offset]
        assert after, request
        pairs.append((request[len('GET '):], json.loads(after[0])))
    return pairs


def _status(answer: Any) -> int:
    if isinstance(answer, dict) and 'code' in answer and 'title' in answer:
        return int(answer['code'].split()[0])
    return 200


def _created_at_from(actual: Any, documented: Any) -> Any:
    """``documented`` with the ``created_at`` values of ``actual``."""
    if isinstance(documented, dict) and isinstance(actual, dict):
        merged = {}
        for key, value in documented.items():
            if key == 'created_at' and key in actual:
                assert _TIMESTAMP.match(actual[key]), actual[key]
                merged[key] = actual[key]
            else:
                merged[key] = _created_at_from(actual.get(key), value)
        return merged
    if isinstance(documented, list) and isinstance(actual, list):
        return [_created_at_from(a, d)
                for a, d in zip(actual, documented, strict=False)] + (
                    documented[len(actual):])
    return documented


def test_page_has_examples_of_every_status() -> None:
    statuses = sorted({_status(answer) for _path, answer in examples()})
    assert statuses == [200, 400, 403, 404]


def test_documented_examples_are_real_answers(api: Api) -> None:
    pairs = examples()
    listing = next(answer for _path, answer in pairs
                   if isinstance(answer, dict) and 'images' in answer)
    entries = listing['images']
    owners = {entry['owner'] for entry in entries}
    assert len(owners) == 1, owners
    owner = owners.pop()
    for entry in reversed(entries):  # oldest first: the list is newest first
        body = {'id': entry['image_id'], 'name': entry['image_id'][:8],
                'disk_format': 'raw', 'container_format': 'bare',
                **entry['properties']}
        created = api.post('/v2/images', project=owner, service=True,
                           json=body)
        assert created.status_code == 201, created.text
    for path, documented in pairs:
        response = api.get(path, project=owner,
                           headers={'Accept': 'application/json'})
        assert response.status_code == _status(documented), (
            path, response.text)
        actual = response.json()
        assert actual == _created_at_from(actual, documented), path
