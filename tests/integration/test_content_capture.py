"""bastion.recording.content on real files: a copy whose write failed is never linked (its
``close`` raises), and the checks the recording worker and ``bastion store import`` make
before a copy goes into the store (size, SHA-256, the path inside the recordings dir)."""

from __future__ import annotations

import json
import os

import pytest

from bastion.errors import RecordingError
from bastion.proto.masker import BUILTIN
from bastion.recording import content
from bastion.recording.content import ContentCapture, CopyError

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


def test_copy_for_store_checks_the_file_against_the_row(tmp_path):
    capture = _capture(tmp_path)
    capture.feed(b"key " + SECRET + b"\n")
    link = capture.close(complete=True)
    info = json.loads(link)
    data, got = content.copy_for_store(tmp_path, link)
    assert SECRET not in data and got == info
    assert content.copy_for_store(tmp_path, "") is None
    path = tmp_path / info["path"]
    path.write_bytes(data.replace(b"key", b"KEY"))             # same size, other bytes
    with pytest.raises(CopyError, match="SHA-256 is not the one recorded"):
        content.copy_for_store(tmp_path, link)
    path.write_bytes(data + b"more")
    with pytest.raises(CopyError, match=f"has {len(data) + 4} bytes, not the {len(data)}"):
        content.copy_for_store(tmp_path, link)
    path.unlink()
    with pytest.raises(CopyError, match="cannot be read: No such file"):
        content.copy_for_store(tmp_path, link)
    outside = json.dumps({**info, "path": "recordings/../../elsewhere.bin"})
    with pytest.raises(CopyError, match="leaves the recordings dir"):
        content.copy_for_store(tmp_path, outside)
    lost = json.loads(content.mark_lost(link, "gone"))
    assert lost == {**info, "lost": "gone"}
