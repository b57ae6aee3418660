"""bastion.recording.content and .copies on real files: a copy whose write failed is never
linked (its ``close`` raises), and the checks ``bastion store import`` makes of a copy
before it goes into the store (size, SHA-256, the path inside the recordings dir)."""

from __future__ import annotations

import json
import os

import pytest

from bastion.errors import RecordingError
from bastion.proto.masker import BUILTIN
from bastion.recording import copies
from bastion.recording.content import ContentCapture
from bastion.recording.copies import CopyError

SECRET = b"AKIAQ3EGXMPL4KZ7RT2W"


def _capture(tmp_path) -> ContentCapture:
    day = tmp_path / "recordings" / "2026" / "12" / "07"
    day.mkdir(parents=True)
    return ContentCapture(tmp_path, day / "s1-c1.cast", BUILTIN, 1 << 20)


def test_a_copy_whose_write_failed_is_not_linked(tmp_path):
    capture = _capture(tmp_path)
    capture.feed(b"first part\n")
    os.close(capture.fd)                        # the next write fails (EBADF)
    with pytest.raises(RecordingError, match="cannot store transfer content"):
        capture.feed(b"second part\n" * 10_000)      # past what the masker holds back
    with pytest.raises(RecordingError, match="could not be written whole"):
        capture.close(complete=True)


def test_check_copy_checks_the_file_against_the_row(tmp_path):
    capture = _capture(tmp_path)
    capture.feed(b"key " + SECRET + b"\n")
    link = capture.close(complete=True)
    info = json.loads(link)
    path = tmp_path / info["path"]
    data = path.read_bytes()
    assert SECRET not in data
    assert copies.check_copy(tmp_path, link) == len(data) == info["bytes"]
    assert copies.check_copy(tmp_path, "") is None
    path.write_bytes(data.replace(b"key", b"KEY"))             # same size, other bytes
    with pytest.raises(CopyError, match="SHA-256 is not the one recorded"):
        copies.check_copy(tmp_path, link)
    path.write_bytes(data + b"more")
    with pytest.raises(CopyError, match=f"changed after it was written: it has {len(data) + 4} bytes, not the {len(data)}"):
        copies.check_copy(tmp_path, link)
    path.unlink()
    with pytest.raises(CopyError, match="cannot be read: No such file"):
        copies.check_copy(tmp_path, link)
    outside = json.dumps({**info, "path": "recordings/../../elsewhere.bin"})
    with pytest.raises(CopyError, match="leaves the recordings dir"):
        copies.check_copy(tmp_path, outside)
    lost = json.loads(copies.mark_lost(link, "gone"))
    assert lost == {**info, "lost": "gone"}
