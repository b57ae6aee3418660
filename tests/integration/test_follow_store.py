"""The live follower (bastion.recording.follow.LiveChannel) against the real recorder: on a
PostgreSQL store a data dir without the recording file (another node) follows the store's
copy, batch by batch, and sees the end; the node with the file, and SQLite, read the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.identity.principal import Principal
from bastion.recording import Recorder, query
from bastion.recording.follow import LiveChannel, live_channel

pytestmark = pytest.mark.integration

AGENT = Principal(subject="oid-agent", name="bot")


def _texts(events) -> str:
    return "".join(ev.text() for ev in events if ev.code == "o")


def _follow_a_session(recorded: Path, follower_dir: Path) -> tuple[bool, list[str]]:
    """Record a session in ``recorded`` in three batches; follow it from ``follower_dir``
    after each.  (whether it read the store, what each poll returned)"""
    rec = Recorder.open(recorded)
    try:
        s = rec.start_session(principal=AGENT, client="127.0.0.1:1", target="web1",
                              login="deploy")
        ch = s.open_channel("shell")
        ch.output(b"first batch\r\n")
        rec.flush()
        chan = live_channel(query.get_session(query.open_index(recorded), s.id))
        live = LiveChannel(follower_dir, chan)
        seen = []
        try:
            events, ended = live.poll()
            assert not ended
            seen.append(_texts(events))
            assert live.poll() == ([], False)           # nothing new, still open
            ch.output(b"second \x1b]52;c;bWFsaWNl\x07batch\r\n")
            rec.flush()
            events, ended = live.poll()
            assert not ended
            seen.append(_texts(events))
            ch.output(b"last words\r\n")
            ch.close(exit_status=0)
            s.close()
            rec.flush()
            got, ended = [], False
            for _ in range(10):                         # new events first, then the end
                events, ended = live.poll()
                got += events
                if ended:
                    break
            assert ended and live.end == {"status": "closed"}
            seen.append(_texts(got))
        finally:
            live.close()
        return live.from_store, seen
    finally:
        rec.close()


EXPECTED = ["first batch\r\n", "second \x1b]52;c;bWFsaWNl\x07batch\r\n", "last words\r\n"]


def test_another_node_follows_the_store_copy_on_postgresql(tmp_path, pg_store):
    from_store, seen = _follow_a_session(tmp_path / "node-a", tmp_path / "node-b")
    assert from_store
    # (as recorded: the terminal filter is the CLI's, bastion.proto.sanitize)
    assert seen == EXPECTED
    assert not (tmp_path / "node-b" / "recordings").exists()     # nothing copied to disk


def test_the_recording_node_reads_its_file_on_postgresql(tmp_path, pg_store):
    from_store, seen = _follow_a_session(tmp_path / "node-a", tmp_path / "node-a")
    assert not from_store and seen == EXPECTED


def test_sqlite_reads_the_file(tmp_path):
    from_store, seen = _follow_a_session(tmp_path, tmp_path)
    assert not from_store and seen == EXPECTED


def test_a_long_backlog_is_read_to_its_end_once_the_channel_ended(tmp_path, pg_store):
    rec = Recorder.open(tmp_path / "a")
    try:
        s = rec.start_session(principal=AGENT, client="127.0.0.1:1", target="web1",
                              login="deploy")
        ch = s.open_channel("exec", command="cat big")
        rec.flush()                                   # its row is in the index
        chan = live_channel(query.get_session(query.open_index(tmp_path / "a"), s.id))
        line = b"y" * 1023 + b"\n"
        for _ in range(3 * 1024):                     # 3 MiB: more than one read's worth
            ch.output(line)
        ch.output(b"THE-END\n")
        ch.close(exit_status=0)
        s.close()
        rec.flush()
        live = LiveChannel(tmp_path / "b", chan)
        try:
            got, ended = [], False
            while not ended:
                events, ended = live.poll()
                got += events
        finally:
            live.close()
        assert live.from_store
        text = _texts(got)
        assert text.endswith("THE-END\n") and text.count("y" * 1023) == 3 * 1024
    finally:
        rec.close()


def test_followers_hold_no_reader_connection_between_polls(tmp_path, pg_store):
    """The API's requests share a small pool of readers with its live views: more followers
    than the pool has connections still poll, and a reader is still to be had."""
    from bastion.recording import schema
    from bastion.store.pgconn import POOL_MAX
    rec = Recorder.open(tmp_path / "a")
    try:
        s = rec.start_session(principal=AGENT, client="127.0.0.1:1", target="web1",
                              login="deploy")
        ch = s.open_channel("shell")
        ch.output(b"many eyes\r\n")
        rec.flush()
        chan = live_channel(query.get_session(query.open_index(tmp_path / "a"), s.id))
        lives = [LiveChannel(tmp_path / "b", chan) for _ in range(POOL_MAX + 2)]
        for live in lives:
            events, ended = live.poll()
            assert _texts(events) == "many eyes\r\n" and not ended
        conn = schema.connect(tmp_path / "b", readonly=True)     # not waiting for the pool
        assert conn.execute("SELECT 1").fetchone()[0] == 1
        conn.close()
        for live in lives:
            live.close()
    finally:
        rec.close()
