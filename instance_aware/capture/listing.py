"""Image lists filtered on captured keys, answered as the registry would.

Glance treats every unknown query key of ``GET /v2/images`` as an exact
property filter.  Captured keys never reach Glance, so a filter on them is
answered from the mapping store:

1. The store gives the ids of the images whose stored values match, limited
   to the caller's own project when the caller may read its keys, every
   project for an administrator, none otherwise (a filter on a key the
   caller may not read matches nothing: it is no oracle; and what another
   project's users asserted never lands in this project's answers).
2. *Fast path* (Nova's rotation listing and every list sorted by
   ``created_at`` within the caller's own project, with filters listed in
   :data:`FAST_FILTERS`): the candidates are walked in the registry's
   order (``created_at``, then ``id``, as Glance appends them), each shown
   by the registry (a primary-key lookup: visibility and the image as the
   caller may see it) and checked against the other filters, until the
   page is full.  No registry-wide list query runs.
3. Otherwise the registry answers the rest of the query restricted to
   ``id=in:<candidates>``: its own visibility, sorting, paging and errors.

Either way ``first`` and ``next`` repeat the client's own query, as Glance
builds them from the query it saw.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
import urllib.parse
from collections.abc import Callable, Collection, Mapping
from typing import Any

from oslo_utils import timeutils

#: Query keys Glance handles itself (everything else is a property filter).
GLANCE_KEYS = frozenset({
    'limit', 'marker', 'sort_key', 'sort_dir', 'sort', 'member_status',
    'tag', 'visibility', 'os_hidden', 'protected', 'name', 'id', 'status',
    'container_format', 'disk_format', 'size_min', 'size_max',
    'virtual_size_min', 'virtual_size_max', 'created_at', 'updated_at',
    'owner', 'checksum', 'os_hash_value', 'changes-since', 'is_public',
})
#: Filters the fast path evaluates on a shown image itself.
FAST_FILTERS = frozenset({
    'limit', 'marker', 'sort_key', 'sort_dir', 'sort', 'member_status',
    'visibility', 'os_hidden', 'protected', 'name', 'id', 'status',
    'container_format', 'disk_format', 'owner', 'checksum',
    'os_hash_value', 'tag',
})
_IN_FILTERS = frozenset({'name', 'id', 'status', 'container_format',
                         'disk_format'})
_MEMBER_STATUSES = frozenset({'pending', 'accepted', 'rejected', 'all'})
_VISIBILITIES = frozenset({'community', 'public', 'private', 'shared',
                           'all'})


@dataclasses.dataclass
class Query:
    """A client's list query, split into captured and forwarded parts."""

    params: list[tuple[str, str]]
    captured: dict[str, str]

    @classmethod
    def parse(cls, items: list[tuple[str, str]],
              keys: Collection[str]) -> Query:
        captured: dict[str, str] = {}
        for key, value in items:
            if key in keys:
                captured[key] = value  # the last one wins, as in Glance
        return cls(list(items), captured)

    def forwarded(self, extra: Mapping[str, str] | None = None
                  ) -> list[tuple[str, str]]:
        """The query for the registry: captured keys out, ``extra`` in."""
        kept = [(k, v) for k, v in self.params
                if k not in self.captured and k not in (extra or {})]
        return kept + list((extra or {}).items())

    def single(self) -> dict[str, str]:
        """Glance's ``dict(request.params)`` view (last value wins)."""
        return dict(self.params)


_QUOTED_LIST = re.compile(r'''
    "([^"\\]*(?:\\.[^"\\]*)*)",?   # a quoted value (escapes kept)
    | ([^,]+),?                     # or anything up to a comma
    | ,                             # or an empty value
    ''', re.VERBOSE)


def _check_quotes(value: str) -> None:
    """Glance's ``validate_quotes``, with its messages."""
    open_quote = True
    for i, char in enumerate(value):
        if char != '"' or (i and value[i - 1] == '\\'):
            continue
        if open_quote and i and value[i - 1] != ',':
            raise ValueError(f'Invalid filter value {value}. There is no '
                             'comma before opening quotation mark.')
        if not open_quote and i + 1 != len(value) and value[i + 1] != ',':
            raise ValueError(f'Invalid filter value {value}. There is no '
                             'comma after closing quotation mark.')
        open_quote = not open_quote
    if not open_quote:
        raise ValueError(f'Invalid filter value {value}. The quote is not '
                         'closed.')


def filter_values(expression: str) -> list[str]:
    """The values an ``id`` (``name``...) filter accepts, read as Glance.

    ``eq:x`` and ``x`` name one value, ``in:a,"b,c"`` a list (quotes as
    Glance splits them).  Raises :class:`ValueError` with Glance's message
    for what Glance refuses with 400.
    """
    operator, sep, threshold = expression.partition(':')
    if not sep:
        return [expression]
    try:
        timeutils.parse_isotime(expression)
    except ValueError:
        pass
    else:
        return [expression]
    if operator == 'eq':
        return [threshold]
    if operator != 'in':
        raise ValueError(
            f"Unable to filter by unknown operator '{operator}'.")
    _check_quotes(threshold)
    return [quoted or plain
            for quoted, plain in _QUOTED_LIST.findall(threshold)]


def links(query: Query, next_marker: str | None) -> dict[str, str]:
    """``first`` and ``next`` built from the client's own query."""
    params = query.single()
    params.pop('marker', None)
    encoded = urllib.parse.urlencode(params)
    result = {'first': '/v2/images' + (f'?{encoded}' if encoded else '')}
    if next_marker is not None:
        params['marker'] = next_marker
        result['next'] = '/v2/images?' + urllib.parse.urlencode(params)
    return result


def marker_of(next_link: str | None) -> str | None:
    """The marker of the registry's own ``next`` link."""
    if not next_link:
        return None
    query = urllib.parse.urlparse(next_link).query
    values = urllib.parse.parse_qs(query).get('marker')
    return values[-1] if values else None


def list_document(images: list[dict[str, Any]], query: Query,
                  next_marker: str | None) -> dict[str, Any]:
    """A list response document laid out as Glance lays it out."""
    body: dict[str, Any] = {'images': images}
    link = links(query, next_marker)
    body['first'] = link['first']
    body['schema'] = '/v2/schemas/images'
    if 'next' in link:
        body['next'] = link['next']
    return body


@dataclasses.dataclass
class FastPlan:
    """How the fast path walks the candidates."""

    limit: int
    descending: bool
    marker: str | None
    predicate: Callable[[dict[str, Any]], bool]


def _sort(params: Mapping[str, str],
          multi: list[tuple[str, str]]) -> bool | None:
    """``True`` for created_at desc, ``False`` for asc, else ``None``."""
    sort_keys = [v for k, v in multi if k == 'sort_key']
    sort_dirs = [v for k, v in multi if k == 'sort_dir']
    if 'sort' in params:
        if sort_keys or sort_dirs:
            return None
        parts = params['sort'].split(':')
        if parts[0].strip() != 'created_at' or len(parts) > 2 or (
                ',' in params['sort']):
            return None
        direction = parts[1].strip() if len(parts) == 2 else 'desc'
    else:
        if len(sort_keys) > 1 or len(sort_dirs) > 1:
            return None
        if sort_keys and sort_keys[0] != 'created_at':
            return None
        direction = sort_dirs[0] if sort_dirs else 'desc'
    if direction not in ('asc', 'desc'):
        return None
    return direction == 'desc'


def _member_check(key: str, wanted: frozenset[str]
                  ) -> Callable[[dict[str, Any]], bool]:
    return lambda image: image.get(key) in wanted


def fast_plan(query: Query, limit_default: int,
              limit_max: int) -> FastPlan | None:
    """A plan when the fast path answers exactly as Glance; else ``None``.

    Anything unusual (unknown filters, errors Glance must phrase itself,
    sorts other than ``created_at``) returns ``None``: the registry then
    answers the query itself.
    """
    forwarded = [(k, v) for k, v in query.params
                 if k not in query.captured]
    keys = [k for k, _ in forwarded]
    params = dict(forwarded)
    if any(k not in FAST_FILTERS for k in keys):
        return None
    if any(keys.count(k) > 1 for k in keys if k not in ('tag',)):
        return None
    descending = _sort(params, forwarded)
    if descending is None:
        return None
    try:
        limit = int(params.get('limit', limit_default))
    except ValueError:
        return None
    if limit < 0:
        return None
    limit = min(limit, limit_max)
    if params.get('member_status', 'accepted') not in _MEMBER_STATUSES:
        return None
    os_hidden = params.get('os_hidden', 'false').lower()
    protected = params.get('protected')
    if os_hidden not in ('true', 'false') or protected not in (
            None, 'true', 'false'):
        return None
    checks: list[Callable[[dict[str, Any]], bool]] = []
    hidden = os_hidden == 'true'
    checks.append(lambda img: bool(img.get('os_hidden')) == hidden)
    checks.append(lambda img: img.get('status') != 'killed')
    if protected is not None:
        want = protected == 'true'
        checks.append(lambda img: bool(img.get('protected')) == want)
    visibility = params.get('visibility')
    if visibility is not None and visibility not in _VISIBILITIES:
        return None  # Glance's 400, or its reading of an empty value
    if visibility is not None and visibility != 'all':
        checks.append(lambda img: img.get('visibility') == visibility)
    for key in _IN_FILTERS:
        if key not in params:
            continue
        operator, sep, threshold = params[key].partition(':')
        if not sep:
            wanted = frozenset({operator})
        elif operator == 'eq':
            wanted = frozenset({threshold})
        elif operator == 'in' and '"' not in threshold:
            wanted = frozenset(threshold.split(','))
        else:
            return None  # quoting, dates, bad operators: Glance decides
        checks.append(_member_check(key, wanted))
    for key in ('owner', 'checksum', 'os_hash_value'):
        if key in params:
            checks.append(_member_check(key, frozenset({params[key]})))
    tags = [v.strip() for k, v in forwarded if k == 'tag']
    if tags:
        checks.append(lambda img: all(t in (img.get('tags') or [])
                                      for t in tags))

    def predicate(image: dict[str, Any]) -> bool:
        return all(check(image) for check in checks)

    return FastPlan(limit=limit, descending=descending,
                    marker=params.get('marker'), predicate=predicate)


def parse_time(value: Any) -> datetime.datetime | None:
    """A registry timestamp as naive UTC (how the store keeps it)."""
    if not isinstance(value, str):
        return None
    try:
        return timeutils.normalize_time(timeutils.parse_isotime(value))
    except ValueError:
        return None
