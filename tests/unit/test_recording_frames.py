"""bastion.recording.frames: batches cross a real pipe whole, payloads out of band, NUL runs as lengths."""

from __future__ import annotations

import os
import threading

import pytest

from bastion.recording import frames
from bastion.recording.ops import OP_DATA, OP_MARKER


def _roundtrip(batch, pipe_size: int | None = None):
    r, w = os.pipe()
    if pipe_size is not None:
        import fcntl
        fcntl.fcntl(w, getattr(fcntl, "F_SETPIPE_SZ", 1031), pipe_size)
    got: list = []
    reader = threading.Thread(target=lambda: got.append(frames.read_frame(r)))
    reader.start()
    try:
        frames.write_frame(w, batch)
        reader.join(30)
    finally:
        os.close(w)
        os.close(r)
    assert not reader.is_alive()
    return got[0]


def _plain(batch):
    """The batch with every payload as bytes (what the worker's sink makes of it)."""
    return [(seq, tuple(bytes(v) if isinstance(v, memoryview) else v for v in op))
            for seq, op in batch]


def test_a_mixed_batch_arrives_as_it_was_sent():
    text = bytes(range(256)) * 300                   # out of band
    batch = [(1, (OP_MARKER, 7, 0.5, "ls")),
             (2, (OP_DATA, 7, "o", 0.6, b"small", 0, 5)),          # stays in the pickle
             (3, (OP_DATA, 7, "o", 0.7, text, 0, 5 + len(text))),
             (4, (OP_DATA, 7, "i", 0.8, bytes(70_000), 9, 5 + len(text))),   # a NUL run
             (5, (OP_DATA, 7, "e", 0.9, b"\x00" * 5000 + b"x", 9, 1))]       # not all NUL
    got = _roundtrip(batch)
    assert _plain(got) == batch
    assert isinstance(got[2][1][4], memoryview) and got[2][1][4].readonly
    assert type(got[3][1][4]) is bytes and got[3][1][4] == bytes(70_000)


def test_a_frame_larger_than_the_pipe_and_with_more_pieces_than_one_writev_takes():
    # 1,500 out-of-band payloads (over the writev limit) through a 64 KiB pipe: partial
    # writes and several writev calls, the reader draining meanwhile
    batch = [(i, (OP_DATA, 1, "o", i / 1000, bytes([65 + i % 26]) * (5000 + i), 0, i))
             for i in range(1, 1501)]
    assert _plain(_roundtrip(batch, pipe_size=65536)) == batch


def test_the_nul_run_is_not_carried_by_the_pipe():
    pieces = frames.encode([(1, (OP_DATA, 1, "o", 0.0, bytes(1 << 20), 0, 1 << 20))])
    assert sum(len(memoryview(p)) for p in pieces) < 1000


def test_end_of_input_between_frames_and_inside_one():
    r, w = os.pipe()
    os.close(w)
    with pytest.raises(EOFError):
        frames.read_frame(r)
    os.close(r)
    r, w = os.pipe()
    piece = b"".join(bytes(memoryview(p)) for p in
                     frames.encode([(1, (OP_DATA, 1, "o", 0.0, b"y" * 10_000, 0, 1))]))
    os.write(w, piece[:-10])                         # the writer died mid-frame
    os.close(w)
    with pytest.raises(EOFError):
        frames.read_frame(r)
    os.close(r)
