"""How a batch of operations crosses the pipe to the recording worker: one frame, few copies.

A batch is a list of ``(seq, op)``.  Most of its bytes are the payloads of ``OP_DATA``
operations (what a channel carried).  Pickling them in-band copies each payload into
the pickle, and unpickling copies it out again; reading the pipe through
``multiprocessing.Connection`` adds a growing buffer and one more copy.  So a frame is:

``!II`` header (pickle length ``P``, number of out-of-band buffers ``K``), ``K`` buffer
lengths (``!I`` each), the pickle (protocol 5, payloads taken out of band), then the
``K`` payloads as they are.  :func:`write_frame` hands the payloads to ``writev`` without
copying them; :func:`read_frame` reads the whole frame into one fresh buffer and gives
the worker read-only views of it (no copy; the masker copies what it keeps).

A payload that is NUL from end to end (``head -c N /dev/zero``, the holes of a disk
image) crosses as its length only and is made again on the other side: the worker
gets the same bytes, masks, encodes and hashes them as before (the recording keeps
them as a NUL-run event, bastion.proto.asciicast), without the pipe carrying them.

A new worker replaying what its predecessor did not acknowledge gets its operations
in the same frames; nothing here changes what an operation means.

Not covered: the queue and acknowledgements (acks.py, supervisor.py), the processes
(process.py, worker.py).
"""

from __future__ import annotations

import os
import pickle
import struct
from typing import Any

from bastion.recording.ops import OP_DATA

OUT_OF_BAND_MIN = 4096       # smaller payloads stay in the pickle (a buffer costs more)
_HEADER = struct.Struct("!II")
_LEN = struct.Struct("!I")
_IOV_MAX = 512               # at most this many pieces per writev (Linux allows 1024)
_NULS = bytes(1 << 18)


class ZeroRun(int):
    """An ``OP_DATA`` payload of this many NUL bytes (see the module doc)."""

    __slots__ = ()


def _all_nul(data: bytes) -> bool:
    if len(data) <= len(_NULS):
        return _NULS.startswith(data)
    return data.count(0) == len(data)


def encode(batch: list[tuple[int, Any]]) -> list[Any]:
    """The pieces of one frame for ``batch`` (bytes and payload buffers, in order)."""
    ops = []
    for seq, op in batch:
        if op[0] == OP_DATA and len(op[4]) >= OUT_OF_BAND_MIN:
            data = op[4]
            if not data[0] and _all_nul(data):
                payload: Any = ZeroRun(len(data))
            else:
                payload = pickle.PickleBuffer(data)
            op = (*op[:4], payload, *op[5:])
        ops.append((seq, op))
    buffers: list[pickle.PickleBuffer] = []
    head = pickle.dumps(ops, protocol=5, buffer_callback=buffers.append)
    views = [b.raw() for b in buffers]
    lengths = b"".join(_LEN.pack(len(v)) for v in views)
    return [_HEADER.pack(len(head), len(views)) + lengths + head, *views]


def write_frame(fd: int, batch: list[tuple[int, Any]]) -> None:
    """Write one frame for ``batch`` to the (blocking) pipe ``fd``; OSError if it is gone."""
    pieces = [memoryview(p) for p in encode(batch)]
    while pieces:
        group = pieces[:_IOV_MAX]
        n = os.writev(fd, group)
        del pieces[:len(group)]
        for i, piece in enumerate(group):      # a partial write: the rest goes again
            if n < len(piece):
                pieces[0:0] = [piece[n:], *group[i + 1:]]
                break
            n -= len(piece)


def _read_exact(fd: int, size: int) -> bytearray:
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        n = os.readv(fd, [view[got:]])
        if n == 0:
            raise EOFError("the pipe was closed mid-frame" if got else "end of input")
        got += n
    view.release()
    return buf


def read_frame(fd: int) -> list[tuple[int, Any]]:
    """The next batch from the pipe ``fd`` (EOFError at its end).  ``OP_DATA`` payloads
    are bytes or read-only memoryviews."""
    plen, count = _HEADER.unpack(_read_exact(fd, _HEADER.size))
    lengths = [n for (n,) in _LEN.iter_unpack(_read_exact(fd, _LEN.size * count))] if count else []
    body = _read_exact(fd, plen + sum(lengths))
    view = memoryview(body).toreadonly()
    buffers = []
    pos = plen
    for n in lengths:
        buffers.append(view[pos:pos + n])
        pos += n
    batch: list[tuple[int, Any]] = pickle.loads(view[:plen], buffers=buffers)
    for i, (seq, op) in enumerate(batch):
        if op[0] == OP_DATA and type(op[4]) is ZeroRun:
            batch[i] = (seq, (*op[:4], bytes(op[4]), *op[5:]))
    return batch
