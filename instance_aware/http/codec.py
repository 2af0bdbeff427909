"""JSON for the bodies the stack reads and writes: orjson, as the stdlib.

The stack parses and re-encodes the registry's JSON on every show and
list it changes, and orjson does that in well under half the standard
library's time (figures on the architecture page, "What runs per
request").  Whatever orjson refuses goes to the standard library, so the
stack accepts and writes exactly what it did with ``json`` alone:

* reading: ``NaN`` and ``Infinity``, nesting deeper than 1024, UTF-16
  and UTF-32 bodies, lone surrogates; and any body with a run of 19 or
  more digits, which may be an integer beyond 64 bits (orjson would read
  it as a float, losing digits);
* writing: those same values (``NaN`` is read as :class:`Constant`, a
  float orjson does not write, so it comes back out as ``NaN``, never as
  orjson's ``null``), keys that are not strings, nesting deeper than 254;
  a document with a lone surrogate is written with ``\\u`` escapes.

Errors are the standard library's: :class:`ValueError` (and
:class:`RecursionError`) for a body that is not JSON.  Output is compact
UTF-8 (no spaces after separators, non-ASCII characters as they are), which
parses to the same document.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

#: Maps every digit to ``0`` and every other byte to a space, so a run of
#: digits long enough for an integer orjson cannot hold (2**63 has 19) is
#: found by a substring search (a regular expression takes ten times as
#: long on a list of images).
_DIGITS_ONLY = bytes(48 if 48 <= byte <= 57 else 32 for byte in range(256))
_LONG_RUN = b'0' * 19


class Constant(float):
    """``NaN``, ``Infinity`` or ``-Infinity`` as read from a body."""


def _constant(name: str) -> Constant:
    return Constant(name)


def loads(data: bytes | str) -> Any:
    """The document of ``data``; :class:`ValueError` if it is not JSON."""
    raw = data.encode('utf-8', 'surrogatepass') if isinstance(
        data, str) else data
    if _LONG_RUN not in raw.translate(_DIGITS_ONLY):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    return json.loads(data, parse_constant=_constant)


def dumps(document: Any) -> bytes:
    """``document`` as UTF-8 JSON."""
    try:
        return orjson.dumps(document)
    except orjson.JSONEncodeError:
        text = json.dumps(document, ensure_ascii=False)
    try:
        return text.encode('utf-8')
    except UnicodeEncodeError:
        # A lone surrogate (read from a ``\\ud800`` escape) has no UTF-8:
        # written escaped, as the client sent it.
        return json.dumps(document).encode('ascii')
