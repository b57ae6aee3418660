"""bastion.recording.content and the digest's sink: a transferred file's stored copy is masked,
capped with a marker, and its row's hash stays that of the real bytes; a copy whose write
failed is never linked; bastion.recording.copies checks a copy against its row (size,
SHA-256, the path inside the recordings dir) before ``bastion store import`` takes it."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from bastion.errors import RecordingError
from bastion.proto.detectors import BUILTIN
from bastion.recording import copies
from bastion.recording.content import ContentCapture
from bastion.recording.copies import CopyError
from bastion.transfer.digest import Stream

SECRET = b"AKIAQ3EGXMPL4KZ7RT2W"
FILE = b"line one\naws_key = " + SECRET + b"\n" + b"x" * 5000 + b"\nend\n"


def capture(tmp_path: Path, limit: int) -> ContentCapture:
    cast = tmp_path / "recordings" / "2026" / "s1-c2.cast"
    cast.parent.mkdir(parents=True)
    return ContentCapture(tmp_path, cast, BUILTIN, limit)


@pytest.mark.parametrize("step", [len(FILE), 1, 7, 4096])
def test_stored_copy_is_masked_and_the_hash_is_of_the_real_bytes(tmp_path, step):
    cap = capture(tmp_path, 1 << 20)
    stream = Stream(sink=cap.feed)
    for i in range(0, len(FILE), step):
        stream.feed(i, FILE[i:i + step])
    stream.at_eof(len(FILE))
    info = json.loads(cap.close(complete=stream.digest(need_eof=True) is not None))
    stored = (tmp_path / info["path"]).read_bytes()
    assert stream.digest(need_eof=True) == hashlib.sha256(FILE).hexdigest()
    assert SECRET not in stored and b"[MASKED:aws-access-key-id]" in stored
    assert stored.startswith(b"line one\n") and stored.endswith(b"\nend\n")
    assert info["truncated"] is False and info["bytes"] == len(stored)
    assert info["sha256"] == hashlib.sha256(stored).hexdigest()
    assert info["path"].startswith("recordings/2026/s1-c2-t") and info["path"].endswith(".bin")
    assert oct(os.stat(tmp_path / info["path"]).st_mode & 0o777) == "0o600"


def test_out_of_order_pieces_are_stored_in_file_order(tmp_path):
    cap = capture(tmp_path, 1 << 20)
    stream = Stream(sink=cap.feed)
    stream.feed(100, FILE[100:])
    stream.feed(0, FILE[:100])
    info = json.loads(cap.close(complete=True))
    stored = (tmp_path / info["path"]).read_bytes()
    assert stored.startswith(b"line one\naws_key = [MASKED") and stored.endswith(b"\nend\n")


def test_beyond_the_cap_the_copy_is_cut_with_a_marker_and_the_hash_is_whole(tmp_path):
    cap = capture(tmp_path, 1000)
    stream = Stream(sink=cap.feed)
    stream.feed(0, FILE)
    stream.at_eof(len(FILE))
    info = json.loads(cap.close(complete=True))
    stored = (tmp_path / info["path"]).read_bytes()
    assert info["truncated"] is True
    assert b"stored content ends here after 1000 bytes" in stored
    assert b"store_transfers_max is 1000 bytes" in stored
    assert SECRET not in stored
    assert len(stored) < 1300 and b"\nend\n" not in stored
    assert stream.digest(need_eof=True) == hashlib.sha256(FILE).hexdigest()


def test_a_transfer_that_was_not_one_stream_is_marked_incomplete(tmp_path):
    cap = capture(tmp_path, 1 << 20)
    stream = Stream(sink=cap.feed)
    stream.feed(0, FILE[:10])
    stream.feed(0, FILE[:10])                      # rewritten: no digest
    assert stream.digest(need_eof=False) is None
    info = json.loads(cap.close(complete=False))
    stored = (tmp_path / info["path"]).read_bytes()
    assert info["truncated"] is True and b"not one stream from offset 0" in stored


def test_closing_twice_is_an_error(tmp_path):
    cap = capture(tmp_path, 10)
    cap.close(complete=True)
    with pytest.raises(RecordingError):
        cap.close(complete=True)


def test_a_copy_whose_write_failed_is_not_linked(tmp_path):
    cap = capture(tmp_path, 1 << 20)
    cap.feed(b"first part\n")
    os.close(cap.fd)                        # the next write fails (EBADF)
    with pytest.raises(RecordingError, match="cannot store transfer content"):
        cap.feed(b"second part\n" * 10_000)      # past what the masker holds back
    with pytest.raises(RecordingError, match="could not be written whole"):
        cap.close(complete=True)


def test_check_copy_checks_the_file_against_the_row(tmp_path):
    cap = capture(tmp_path, 1 << 20)
    cap.feed(b"key " + SECRET + b"\n")
    link = cap.close(complete=True)
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
    with pytest.raises(CopyError, match=f"it has {len(data) + 4} bytes, not the {len(data)}"):
        copies.check_copy(tmp_path, link)
    path.unlink()
    with pytest.raises(CopyError, match="cannot be read: No such file"):
        copies.check_copy(tmp_path, link)
    outside = json.dumps({**info, "path": "recordings/../../elsewhere.bin"})
    with pytest.raises(CopyError, match="leaves the recordings dir"):
        copies.check_copy(tmp_path, outside)
    lost = json.loads(copies.mark_lost(link, "gone"))
    assert lost == {**info, "lost": "gone"}
