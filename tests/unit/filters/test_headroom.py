"""``headroom``: the stack's calls do not thrash the interpreter's frame stack.

CPython 3.11 and 3.12 map a new chunk of frame stack for a call that does
not fit in the current one and unmap it when the call returns; a loop
calling across that boundary maps and unmaps a chunk on every call.  Each
new mapping is touched afresh, so the kernel counts minor page faults:
that count shows the thrashing without timing anything.
"""

from __future__ import annotations

import resource
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from instance_aware.filters import headroom, stack

CALLS = 2000


def _leaf() -> None:
    """A frame larger than one level of :func:`_loop_at`: whatever the
    room left in a chunk, some depth leaves too little for it."""
    if False:  # slots only: the compiler gives every name below one
        a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = a8 = a9 = None  # noqa: F841
        b0 = b1 = b2 = b3 = b4 = b5 = b6 = b7 = b8 = b9 = None  # noqa: F841
        c0 = c1 = c2 = c3 = c4 = c5 = c6 = c7 = c8 = c9 = None  # noqa: F841


def _loop_at(depth: int) -> int:
    """Minor page faults of ``CALLS`` calls made ``depth`` frames deeper."""
    if depth:
        return _loop_at(depth - 1)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(CALLS):
        _leaf()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def _worst_depth_faults(via_headroom: bool) -> int:
    """The most page faults a loop at any of 400 depths costs."""
    worst = 0
    for depth in range(400):
        if via_headroom:
            def app(environ: dict[str, Any],
                    start_response: Any, depth: int = depth) -> list[int]:
                return [_loop_at(depth)]
            faults = headroom.call(app, {}, None)[0]
        else:
            faults = _loop_at(depth)
        worst = max(worst, faults)
    return worst


@pytest.mark.skipif(not headroom.AFFECTED,
                    reason='this interpreter keeps a spare stack chunk')
def test_calls_across_a_chunk_boundary_thrash_without_headroom() -> None:
    """The pathology itself, on this interpreter: at some depth every call
    maps a fresh chunk (at least one fault per call)."""
    assert _worst_depth_faults(via_headroom=False) >= CALLS


def test_with_headroom_no_depth_thrashes() -> None:
    """Below the headroom frame a few hundred frames run in one chunk: no
    depth makes a loop map chunks call after call."""
    assert _worst_depth_faults(via_headroom=True) < CALLS // 10


def test_call_is_a_plain_wsgi_call() -> None:
    seen: list[tuple[str, list[tuple[str, str]]]] = []

    def app(environ: dict[str, Any],
            start_response: Callable[..., Any]) -> Iterable[bytes]:
        start_response('200 OK', [('X-Path', environ['PATH_INFO'])])
        return [b'body']

    def start_response(status: str, headers: list[tuple[str, str]],
                       exc_info: Any = None) -> Callable[[bytes], None]:
        seen.append((status, headers))
        return lambda data: None

    wrapped = headroom.Headroom(app)
    assert list(wrapped({'PATH_INFO': '/v2/images'}, start_response)) == [
        b'body']
    assert seen == [('200 OK', [('X-Path', '/v2/images')])]


@pytest.mark.skipif(not headroom.AFFECTED,
                    reason='this interpreter keeps a spare stack chunk')
def test_the_calling_frame_is_large_enough_for_a_chunk_of_its_own() -> None:
    assert headroom.call.__code__.co_stacksize >= headroom.SLOTS


@pytest.mark.skipif(not headroom.AFFECTED,
                    reason='this interpreter keeps a spare stack chunk')
def test_the_room_itself_is_not_written() -> None:
    """The frame's room is value stack, which the interpreter does not
    clear: a call through it faults in a page or two of its new chunk,
    not the pages of :data:`~headroom.SLOTS` cleared local slots."""
    pages = headroom.SLOTS * 8 // resource.getpagesize()
    assert pages >= 16
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(CALLS):
        headroom.call(lambda environ, start_response: None, {}, None)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    assert faults < CALLS * 4


def test_the_composed_stack_runs_with_headroom() -> None:
    app = stack.compose(lambda environ, start_response: [])
    assert isinstance(app, headroom.Headroom)
