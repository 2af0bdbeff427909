"""Bodies across the proxy: deadline, slots, faults and release."""

from __future__ import annotations

import gc
import io
import time
from typing import Any

import pytest
import urllib3
import urllib3.exceptions

from instance_aware.proxy import transfer


def test_slots_refuse_beyond_their_size_and_come_back_once() -> None:
    slots = transfer.Slots(2)
    first, second = slots.take(), slots.take()
    assert first is not None and second is not None
    assert slots.take() is None
    first.release()
    first.release()  # a second release gives nothing more back
    third = slots.take()
    assert third is not None
    assert slots.take() is None


def test_deadline() -> None:
    unlimited = transfer.Deadline(0)
    assert (unlimited.remaining(), unlimited.expired) == (None, False)
    unlimited.check()
    short = transfer.Deadline(0.05)
    remaining = short.remaining()
    assert remaining is not None and 0 < remaining <= 0.05
    time.sleep(0.06)
    assert (short.remaining(), short.expired) == (0.0, True)
    with pytest.raises(transfer.TransferTimeout,
                       match=r'took more than 0\.05 seconds'):
        short.check()


def test_request_body_is_read_in_pieces_and_remembers_a_short_one(
        ) -> None:
    data = b'x' * (transfer.CHUNK_SIZE + 10)
    body = transfer.RequestBody(io.BytesIO(data), len(data),
                                transfer.Deadline(0))
    assert [len(chunk) for chunk in body] == [transfer.CHUNK_SIZE, 10]
    short = transfer.RequestBody(io.BytesIO(b'abc'), 5,
                                 transfer.Deadline(0))
    with pytest.raises(OSError, match='2 bytes early'):
        list(short)
    assert isinstance(short.error, OSError)


def test_request_body_past_its_deadline_is_not_the_clients_fault(
        ) -> None:
    deadline = transfer.Deadline(0.01)
    time.sleep(0.02)
    body = transfer.RequestBody(io.BytesIO(b'abc'), None, deadline)
    with pytest.raises(transfer.TransferTimeout):
        list(body)
    assert body.error is None


class _Broken(io.BytesIO):
    """A body that breaks off after its bytes."""

    def read1(self, size: int = -1) -> bytes:
        data = super().read1(size)
        if not data:
            raise urllib3.exceptions.ProtocolError('Connection broken')
        return data


def _response(fp: Any, length: int) -> urllib3.HTTPResponse:
    return urllib3.HTTPResponse(
        body=fp, headers={'Content-Length': str(length)}, status=200,
        preload_content=False, decode_content=False)


def test_response_body_streams_its_bytes_and_releases_its_slot() -> None:
    slots = transfer.Slots(1)
    slot = slots.take()
    data = b'y' * (transfer.RESPONSE_CHUNK_SIZE + 3)
    body = transfer.ResponseBody(_response(io.BytesIO(data), len(data)),
                                 'GET /x', transfer.Deadline(0), 5.0, slot)
    body.start()
    assert slots.take() is None
    assert b''.join(body) == data
    assert body.sent == len(data)
    assert slots.take() is not None


def test_a_fault_after_the_first_bytes_raises_the_error_response(
        ) -> None:
    slots = transfer.Slots(1)

    class Fault(Exception):
        pass

    body = transfer.ResponseBody(
        _response(_Broken(b'abc'), 10), 'GET /x', transfer.Deadline(0),
        5.0, slots.take(), fault=lambda exc: Fault(str(exc)))
    body.start()
    chunks = iter(body)
    assert next(chunks) == b'abc'
    with pytest.raises(Fault, match='Connection broken'):
        next(chunks)
    assert slots.take() is not None


def test_closing_early_releases_the_slot() -> None:
    slots = transfer.Slots(1)
    body = transfer.ResponseBody(_response(io.BytesIO(b'abc'), 3),
                                 'GET /x', transfer.Deadline(0), 5.0,
                                 slots.take())
    body.close()
    body.close()
    assert slots.take() is not None
    assert slots.take() is None


def test_a_body_nobody_closed_releases_its_slot_when_collected() -> None:
    slots = transfer.Slots(1)
    body = transfer.ResponseBody(_response(io.BytesIO(b'abc'), 3),
                                 'GET /x', transfer.Deadline(0), 5.0,
                                 slots.take())
    body.start()
    assert slots.take() is None  # still held while the body lives
    del body
    gc.collect()
    assert slots.take() is not None
    assert slots.take() is None
