"""The tail journal in the shared store (bastion.recording.tailstore) with the real recorder
and worker on a private PostgreSQL cluster: what node a's masker holds back undecided is in the
store, sealed, committed with the batch; node b, taking over a's session past its lease,
decides it (masked) into the store's copy before the marker; a row that does not open with
b's key is never written, a marker says so."""

from __future__ import annotations

import hashlib
import time

import pytest

from bastion.identity.principal import Principal
from bastion.proto.masker import BUILTIN
from bastion.recording import Recorder, leases, player, query, schema
from bastion.recording.verify import verify_index
from bastion.recording import tailstore as store_tails
from bastion.store import chunks

pytestmark = pytest.mark.integration

AGENT = Principal(subject="oid-agent", name="bot")
GH = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"          # fake, shaped like a GitHub token


def _key(passphrase: bytes):
    return lambda salt: hashlib.sha256(passphrase + salt).digest()


def _node_a_holds_a_tail(tmp_path, monkeypatch):
    monkeypatch.setenv("BASTION_NODE", "a")
    rec = Recorder.open(tmp_path / "a", detectors=BUILTIN, store_key_for=_key(b"pass"))
    s = rec.start_session(principal=AGENT, client="127.0.0.1:1", target="web1", login="deploy")
    ch = s.open_channel("exec", command="sh -c 'echo; printf token; head -n 1'", mask=BUILTIN)
    ch.output(b"a plain line, held back\n")
    ch.output(f"token {GH}".encode())        # undecided: could go on as a longer secret
    rec.flush()                               # acknowledged: the agent was shown all of it
    return rec, s, ch


def _copy(conn, tmp_path, cid: int, sha256: str) -> bytes:
    return chunks.materialize(conn, cid, tmp_path / f"copy-{cid}.cast", sha256).read_bytes()


def test_a_peer_taking_over_writes_the_held_back_tail_masked(tmp_path, pg_store, monkeypatch):
    rec, s, ch = _node_a_holds_a_tail(tmp_path, monkeypatch)
    monkeypatch.setenv("BASTION_NODE", "b")
    conn = schema.connect(tmp_path / "b")
    rows = conn.execute("SELECT stream, data FROM recording_tails").fetchall()
    assert [r[0] for r in rows] == ["o"]               # in the store, committed...
    assert GH[-16:].encode() not in bytes(rows[0][1])       # ...and sealed
    stored = b"".join(bytes(r[1]) for r in conn.execute(
        'SELECT "offset", data FROM recording_chunks ORDER BY "offset"').fetchall())
    assert b"a plain line" not in stored                    # undecided: not in the copy yet
    key = store_tails.key_for(conn, _key(b"pass"))
    taker = leases.TailTaker(key, tmp_path / "b", mask_sets=lambda: [BUILTIN])
    assert leases.take_over(conn, 60.0, now=time.time() + 3600, taker=taker) == [s.id]
    assert conn.execute("SELECT count(*) FROM recording_tails").fetchone()[0] == 0
    monkeypatch.setenv("BASTION_NODE", "a")
    ch.close(exit_status=0)                                  # a was only slow: refused
    s.close()
    rec.close()
    row = query.get_session(query.open_index(tmp_path / "a"), s.id)
    [chan] = row["channels"]
    data = _copy(conn, tmp_path, chan["id"], chan["sha256"])
    conn.close()
    assert hashlib.sha256(data).hexdigest() == chan["sha256"]
    path = tmp_path / "copy.cast"
    path.write_bytes(data)
    _, events = player.load(path)
    out = player.stream_bytes(events, "stdout")
    assert out == b"a plain line, held back\ntoken [MASKED:github-token]", out
    assert GH.encode() not in data and GH[:12].encode() not in data
    assert data.index(b"[MASKED:github-token]") < data.index(b"stopped answering")
    Recorder.open(tmp_path / "a").close()                   # a starts again: the sealed copy
    assert (tmp_path / "a" / chan["path"]).read_bytes() == data
    report = verify_index(tmp_path / "a")
    assert report.ok, report.problems


def test_a_tail_that_does_not_open_is_never_written(tmp_path, pg_store, monkeypatch, caplog):
    """Node b has another passphrase (it started after a stopped answering: while a is alive
    it would refuse to, see below): it cannot open a's tails, so it records that it could not,
    and nothing of them."""
    rec, s, ch = _node_a_holds_a_tail(tmp_path, monkeypatch)
    monkeypatch.setenv("BASTION_NODE", "b")
    conn = schema.connect(tmp_path / "b")
    later = time.time() + 3600
    with caplog.at_level("WARNING", logger="bastion.recording"):
        key = store_tails.key_for(conn, _key(b"another"), lease=60.0, now=later)
    assert any("node a, last seen" in r.getMessage() and "another vault passphrase" in
               r.getMessage() for r in caplog.records), caplog.text
    taker = leases.TailTaker(key, tmp_path / "b")
    assert leases.take_over(conn, 60.0, now=later, taker=taker) == [s.id]
    monkeypatch.setenv("BASTION_NODE", "a")
    ch.close(exit_status=0)
    s.close()
    rec.close()
    [chan] = query.get_session(query.open_index(tmp_path / "a"), s.id)["channels"]
    data = _copy(conn, tmp_path, chan["id"], chan["sha256"])
    conn.close()
    path = tmp_path / "copy.cast"
    path.write_bytes(data)
    assert player.stream_bytes(player.load(path)[1], "stdout") == b""
    assert b"a plain line" not in data and GH[:8].encode() not in data
    assert (b"output node a held back undecided (o) could not be opened by node b: "
            b"not recorded") in data
    Recorder.open(tmp_path / "a").close()                   # a starts again: the sealed copy
    report = verify_index(tmp_path / "a")
    assert report.ok, report.problems


def test_tails_leave_the_store_when_the_channel_closes(tmp_path, pg_store, monkeypatch):
    rec, s, ch = _node_a_holds_a_tail(tmp_path, monkeypatch)
    conn = schema.connect(tmp_path / "a", readonly=True)
    assert conn.execute("SELECT count(*) FROM recording_tails").fetchone()[0] == 1
    ch.output(b"\nmore\n" + b"x" * 2000 + b"\n")            # decides the token: masked, written
    rec.flush()
    held = conn.execute("SELECT count(*) FROM recording_tails").fetchone()[0]
    ch.close(exit_status=0)
    s.close()
    rec.flush()
    assert conn.execute("SELECT count(*) FROM recording_tails").fetchone()[0] == 0
    conn.close()
    rec.close()
    assert held == 1          # the x's last bytes are held back in their turn


def test_a_node_with_another_passphrase_does_not_start_while_a_node_with_the_first_is_alive(
        tmp_path, pg_store, monkeypatch):
    rec, s, ch = _node_a_holds_a_tail(tmp_path, monkeypatch)
    try:
        monkeypatch.setenv("BASTION_NODE", "b")
        with pytest.raises(store_tails.KeyMismatch) as info:
            Recorder.open(tmp_path / "b", detectors=BUILTIN, store_key_for=_key(b"another"))
        print(f"\n{info.value} ({info.value.hint})")
        assert str(info.value).startswith("node a (alive: a heartbeat ")
        assert "another vault passphrase" in str(info.value)
        assert "BASTION_VAULT_PASSPHRASE" in info.value.hint
        for secret in (b"pass", b"another"):       # neither key nor passphrase in the message
            assert hashlib.sha256(secret).hexdigest()[:8] not in str(info.value)
        conn = schema.connect(tmp_path / "b", readonly=True)
        rows = dict(conn.execute("SELECT purpose, salt FROM store_salts WHERE purpose LIKE "
                                 "'tail key check:%'").fetchall())
        conn.close()
        assert list(rows) == ["tail key check:a"]          # b's was not recorded
        b = Recorder.open(tmp_path / "b", detectors=BUILTIN, store_key_for=_key(b"pass"))
        b.close()                                          # the same passphrase: b starts
        ch.close(exit_status=0)
        s.close()
    finally:
        rec.close()
    monkeypatch.setenv("BASTION_NODE", "c")               # a and b no longer alive: c may
    conn = schema.connect(tmp_path / "c")
    store_tails.key_for(conn, _key(b"another"), lease=60.0, now=time.time() + 3600)
    with pytest.raises(store_tails.KeyMismatch):          # but not while they beat
        store_tails.key_for(conn, _key(b"another"), lease=60.0)
    conn.close()
