"""Room on the interpreter's frame stack for the pipeline below the stack.

CPython 3.11 and 3.12 keep the frames of Python calls in chunks of a
per-thread stack.  A call that does not fit in the current chunk gets a new
one from ``mmap``, and the chunk is unmapped as soon as that call returns
(python/cpython#142183; 3.13 and 3.14 now keep one chunk cached).  A loop
that keeps calling across a chunk boundary therefore pays an ``mmap`` and a
``munmap`` per call.

The filters add frames, and so move where Glance's own loops sit on that
stack.  At some depths a boundary falls inside one of them.  Measured here
on Glance's ``?id=in:`` page of seven images: 17.5 ms called directly,
24.7 ms called from 60 frames deeper, with 430 more ``mmap``/``munmap``
pairs per request (strace).  20 and 120 frames deeper cost nothing: it is
where the boundary falls, not how deep the stack is.

:func:`call` therefore calls the next application from a frame so large
(:data:`SLOTS` slots) that the interpreter starts a new chunk for it, with
room left over for the whole request below: one ``mmap``/``munmap`` pair
per request instead of one per call.  The room is value-stack depth, not
local variables: the interpreter clears every local slot of a frame it
pushes (64 KiB written, 16 pages faulted in, 50 us a request here) but
leaves the value stack untouched, so the room costs only the mapping
and the pages the request below really uses (11 us a call here).
Interpreters that cache a chunk get a plain call.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

#: Slots of the calling frame: 256 KiB of pointers.  CPython allocates a
#: chunk of at least the frame plus 8 KiB, in powers of two from 16 KiB,
#: so this frame gets a 512 KiB chunk and leaves about 256 KiB (thousands
#: of frames) to what it calls.  Pages nobody touches cost nothing but
#: address space: a show or list through the stack faults in about 17.
SLOTS = 32768

#: Interpreters whose frame stack unmaps a chunk on every return from it.
AFFECTED = sys.implementation.name == 'cpython' and sys.version_info < (3, 13)

Caller = Callable[['WSGIApplication', 'WSGIEnvironment', 'StartResponse'],
                  Iterable[bytes]]


def _plain(app: WSGIApplication, environ: WSGIEnvironment,
           start_response: StartResponse) -> Iterable[bytes]:
    return app(environ, start_response)


def _with_room(slots: int) -> Caller:
    """A WSGI call whose frame has room for ``slots`` more values.

    The code object declares a value stack ``slots`` deeper than it uses
    (a deeper declared stack only makes the frame larger); nothing writes
    to that room, so no page of it is touched.
    """
    code = _plain.__code__
    room: Caller = types.FunctionType(
        code.replace(co_stacksize=code.co_stacksize + slots,
                     co_name='call', co_qualname='call'),
        _plain.__globals__, 'call')
    return room


call: Caller = _with_room(SLOTS) if AFFECTED else _plain


class Headroom:
    """WSGI middleware: the application below runs through :func:`call`."""

    def __init__(self, application: WSGIApplication) -> None:
        self.application = application

    def __call__(self, environ: WSGIEnvironment,
                 start_response: StartResponse) -> Iterable[bytes]:
        return call(self.application, environ, start_response)
