"""A recording batch on PostgreSQL takes the chain's lock at its end and seals there
(bastion.recording.writer ``_locked_db``, bastion.recording.chain ``seal_deferred``), through
the real :class:`Applier` on a pipelined connection, as ``bastion serve`` runs it, against a
private cluster: the lock is free while the batch's rows go in; two writers interleaving
keep one gapless chain that ``verify`` accepts; an operation refused in its savepoint takes
its seals back with it; a seal that finds no row skips no number; a seal refused at the
commit fails the whole batch, and the replay that follows keeps it aside; and random
interleaved sessions in random batches give, row for row, the chain that sealing each row
at once gives (same numbers, same hashes)."""

from __future__ import annotations

import logging
import time

import pytest

from bastion.recording import quarantine, schema
from bastion.recording.ops import (OP_CHANNEL_CLOSE, OP_CHANNEL_OPEN, OP_COMMAND,
                                   OP_COMMAND_RESULT, OP_DATA, OP_REPLAY, OP_SESSION_CLOSE,
                                   OP_SESSION_START)
from bastion.recording.verify import verify_index
from bastion.recording.writer import Applier
from bastion.store import translate

pytestmark = pytest.mark.integration

PRINCIPAL = {"subject": "oid-agent", "name": "bot"}


def _applier(data_dir, events=None) -> Applier:
    conn = schema.connect(data_dir)
    conn.pipelined = True                     # as the recording worker runs it
    return Applier(conn, data_dir, 1 << 20, (events if events is not None else []).append)


def _exec_session(sid: int, cid: int, cmd: int) -> list[tuple]:
    """One exec session's operations, as the bastion sends them."""
    now = time.time()
    return [(OP_SESSION_START, sid, now, PRINCIPAL, "127.0.0.1:1", "web1", "deploy"),
            (OP_CHANNEL_OPEN, cid, sid, "exec", "uptime", None, 80, 24, None, now,
             f"recordings/s{sid}-c{cid}.cast", b'{"version": 2}\n', None),
            (OP_COMMAND, cmd, sid, cid, now, 0.1, "uptime", '["uptime"]', "allow", "ops",
             "read-only", None, "allow: uptime"),
            (OP_DATA, cid, "o", 0.2, b" 12:00:00 up 1 day\n", 0, 19),
            (OP_COMMAND_RESULT, cmd, 0),
            (OP_CHANNEL_CLOSE, cid, 0.3, time.time(), 0, None, 0, 19, None),
            (OP_SESSION_CLOSE, sid, time.time(), "closed")]


def _lock_is_free(other) -> bool:
    """Whether ``other`` (another connection) could take the chain's lock now; it gives it
    back at once."""
    raw = other._conn                      # the psycopg connection (autocommit)
    with raw.transaction():
        return bool(raw.execute("SELECT pg_try_advisory_xact_lock(%s)",
                                (translate.CHAIN_LOCK,)).fetchone()[0])


def _sealed(data_dir, table: str) -> list[tuple[int, int]]:
    conn = schema.connect(data_dir, readonly=True)
    try:
        return [tuple(r) for r in conn.execute(
            f"SELECT id, seq FROM {table} WHERE seq IS NOT NULL ORDER BY seq")]
    finally:
        conn.close()


def _refuse_update_of(conn, column: str, sid: int) -> None:
    """The store refuses any update of ``column`` in session ``sid``'s row."""
    conn._conn.execute(                  # the raw psycopg connection (autocommit)
        f"CREATE FUNCTION refuse_{column}() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'refused by the test' USING ERRCODE = 'check_violation'; "
        "END $$")
    conn._conn.execute(f"CREATE TRIGGER refuse_{column} BEFORE UPDATE OF {column} ON sessions "
                       f"FOR EACH ROW WHEN (NEW.id = {sid}) EXECUTE FUNCTION refuse_{column}()")


def _session_two_kept_aside(data_dir) -> None:
    """Session 2's close is the one operation kept aside; sessions 1 and 3 sealed, no gap."""
    [kept] = quarantine.listing(data_dir)
    assert (kept.operation, kept.session) == ("session-close", "2")
    assert _sealed(data_dir, "sessions") == [(1, 1), (3, 2)]
    report = verify_index(data_dir)
    assert report.ok, report.problems


def _all_seqs(data_dir) -> list[int]:
    return sorted(seq for t in ("sessions", "channels", "commands")
                  for _, seq in _sealed(data_dir, t))


def test_the_lock_is_taken_only_at_the_end_of_the_batch(tmp_path, pg_store):
    a = _applier(tmp_path)
    other = schema.connect(tmp_path)
    try:
        for op in _exec_session(1, 2, 3):
            assert a.apply(op), a.error
        assert a.conn.deferred_seals            # the closes' seals wait for the commit
        assert _lock_is_free(other)             # the rows went in without the lock
        a._locked_db()
        a.conn.lock_now(wait=True)
        assert not _lock_is_free(other)         # from here to the commit it is held
        assert a.flush_files() and a.commit()
        assert _lock_is_free(other)
    finally:
        a.conn.close()
        other.close()
    report = verify_index(tmp_path)
    assert report.ok, report.problems
    assert _all_seqs(tmp_path) == [1, 2, 3]     # command, channel, session: in that order
    assert _sealed(tmp_path, "commands") == [(3, 1)]
    assert _sealed(tmp_path, "channels") == [(2, 2)]
    assert _sealed(tmp_path, "sessions") == [(1, 3)]


def test_two_writers_interleaving_keep_one_gapless_chain(tmp_path, pg_store):
    """Writer A's batch goes in first but commits last; writer B's whole batch commits in
    between.  A's seals are numbered after B's, from the head as B left it."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = _applier(tmp_path / "a"), _applier(tmp_path / "b")
    try:
        for op in _exec_session(1, 2, 3):
            assert a.apply(op), a.error
        for op in _exec_session(11, 12, 13):
            assert b.apply(op), b.error
        assert b.flush_files() and b.commit()
        assert a.flush_files() and a.commit()
    finally:
        a.conn.close()
        b.conn.close()
    report = verify_index(tmp_path / "a", check_files=False)
    assert report.ok, report.problems
    assert _all_seqs(tmp_path) == list(range(1, 7))
    assert [sid for sid, _ in _sealed(tmp_path, "sessions")] == [11, 1]


def test_an_operation_refused_in_its_savepoint_takes_its_seals_back(tmp_path, pg_store):
    """Session 2's close is refused by the store (its own UPDATE): kept aside, and the seals
    it asked for (its children, itself) are dropped with it -- session 2 stays unsealed,
    and the seals around it leave no gap."""
    a = _applier(tmp_path)
    try:
        _refuse_update_of(a.conn, "status", 2)      # the close's own update
        for sid in (1, 2, 3):
            assert a.apply((OP_SESSION_START, sid, time.time(), PRINCIPAL, "127.0.0.1:1",
                            "web1", "deploy"))
        for sid in (1, 2, 3):
            assert a.apply((OP_SESSION_CLOSE, sid, time.time(), "closed"))
        assert a.error is None
        assert a.flush_files() and a.commit()
    finally:
        a.conn.close()
    _session_two_kept_aside(tmp_path)


def test_a_seal_that_finds_no_row_skips_no_number(tmp_path, pg_store, caplog):
    """An exit status for a command that has no row: the warning says so at the commit,
    and the next seal takes the number that one did not use."""
    a = _applier(tmp_path)
    try:
        assert a.apply((OP_COMMAND_RESULT, 77, 0))
        for op in _exec_session(1, 2, 3):
            assert a.apply(op), a.error
        with caplog.at_level(logging.WARNING, logger="bastion.recording"):
            assert a.flush_files() and a.commit()
    finally:
        a.conn.close()
    assert "command 77: exit status 0 not recorded: no such command row" in caplog.text
    assert _all_seqs(tmp_path) == [1, 2, 3]
    report = verify_index(tmp_path)
    assert report.ok, report.problems


def test_a_seal_refused_at_the_commit_fails_the_batch_and_the_replay_keeps_it(tmp_path,
                                                                              pg_store):
    """The store refuses session 2's seal (its hash): the seals are made at the commit, so
    the batch fails whole (nothing of it committed) and the worker stops, as for any
    failure of a commit; the replay the next worker gets seals each row in its operation's
    savepoint and keeps session 2's close aside, and the chain has no gap."""
    ops = [op for sid in (1, 2, 3) for op in (
        (OP_SESSION_START, sid, time.time(), PRINCIPAL, "127.0.0.1:1", "web1", "deploy"),
        (OP_SESSION_CLOSE, sid, time.time(), "closed"))]
    a = _applier(tmp_path)
    try:
        _refuse_update_of(a.conn, "hash", 2)        # the seal's last step
        assert all(a.apply(op) for op in ops)
        assert a.flush_files() and not a.commit()
        assert "refused by the test" in (a.error or "")
        assert not a.fail_out()                 # the transaction is gone: nothing to keep
    finally:
        a.conn.close()
    assert _all_seqs(tmp_path) == []
    events: list = []
    replay = _applier(tmp_path, events)         # the next worker
    try:
        assert replay.apply((OP_REPLAY, True))
        assert all(replay.apply(op) for op in ops)
        assert replay.apply((OP_REPLAY, False))
        assert replay.error is None
        assert replay.flush_files() and replay.commit()
    finally:
        replay.conn.close()
    _session_two_kept_aside(tmp_path)


def test_a_takeover_meeting_a_batch_in_flight_fails_one_of_the_two_and_the_chain_holds(
        tmp_path, pg_store, monkeypatch):
    """Node a's batch closes a channel (its row updated, no lock yet) while node b, finding
    a's heartbeat an hour old, takes a's session over (under the chain's lock, then waiting
    for that row).  When a's commit asks for the lock the two wait for each other:
    PostgreSQL fails one of them within its deadlock timeout, never both and never neither
    (here the takeover: it waited first, so its check finds the cycle first), and whichever
    stands, the chain ``verify`` reads is whole."""
    import threading

    from bastion.recording import leases
    monkeypatch.setenv("BASTION_NODE", "a")
    (tmp_path / "a").mkdir()
    a = _applier(tmp_path / "a")
    ops = _exec_session(1, 2, 3)
    try:
        for op in ops[:4]:                        # start, channel, command, output
            assert a.apply(op), a.error
        assert a.flush_files() and a.commit()
        leases.beat(a.conn)                       # a's heartbeat (its age decides below)
        for op in ops[4:6]:                       # exit status, the channel's close
            assert a.apply(op), a.error
        monkeypatch.setenv("BASTION_NODE", "b")
        b = schema.connect(tmp_path / "b")
        outcome: dict = {}

        def take() -> None:
            try:
                outcome["taken"] = leases.take_over(b, 60.0, now=time.time() + 3600)
            except Exception as exc:  # noqa: BLE001 - the deadlock's loser, if b
                outcome["error"] = exc

        taker = threading.Thread(target=take)
        taker.start()
        time.sleep(0.5)                           # b holds the lock, waits for the row
        committed = a.flush_files() and a.commit()
        taker.join(timeout=30)
        assert not taker.is_alive()
        b.close()
    finally:
        a.conn.close()
    b_won = outcome.get("taken") == [1]
    assert b_won != committed, (committed, outcome, a.error)
    if committed:
        assert "deadlock" in str(outcome.get("error", "")), outcome
    else:
        assert "deadlock" in (a.error or ""), a.error
    report = verify_index(tmp_path / "a", check_files=False)
    assert report.ok, report.problems


def test_a_commit_whose_seals_were_not_made_is_refused_and_rolled_back(tmp_path, pg_store):
    """Fail closed: a late-locked transaction committed without ``seal_deferred`` (a step
    forgotten by some future caller) would leave rows unsealed; the connection refuses the
    commit and rolls everything back."""
    import sqlite3

    from bastion.recording import chain
    conn = schema.connect(tmp_path)
    conn.pipelined = True
    try:
        conn.begin_late()
        conn.execute("INSERT INTO sessions (id, started, status, target) "
                      "VALUES (?, ?, 'closed', ?)", (1, time.time(), "web1"))
        assert chain.seal(conn, "sessions", 1)           # noted, not made
        with pytest.raises(sqlite3.Error, match="seals were not made"):
            conn.execute("COMMIT")
        assert not conn.in_transaction
        assert list(conn.execute("SELECT id FROM sessions")) == []
    finally:
        conn.close()


def _random_stream(rng, first_id: int) -> tuple[list[list[tuple]], int]:
    """Operations of several sessions at once, as the bastion interleaves them: each session
    starts, opens 1-3 channels (exec), runs 0-3 commands in each (most with a result), closes
    its channels and itself, in that order for itself; sessions overlap at random.  Cut into
    batches at random.  Returns the batches and a session whose close the store refuses."""
    next_id = iter(range(first_id, first_id + 10_000))
    t = 1_765_000_000.0
    per_session: list[list[tuple]] = []
    for _ in range(rng.randint(4, 7)):
        sid = next(next_id)
        ops: list[tuple] = [(OP_SESSION_START, sid, t, PRINCIPAL, "127.0.0.1:1", "web1", "deploy")]
        for _ in range(rng.randint(1, 3)):
            cid = next(next_id)
            ops.append((OP_CHANNEL_OPEN, cid, sid, "exec", "uptime", None, 80, 24, None, t,
                        f"recordings/s{sid}-c{cid}.cast", b'{"version": 2}\n', None))
            for k in range(rng.randint(0, 3)):
                cmd = next(next_id)
                ops.append((OP_COMMAND, cmd, sid, cid, t, 0.1 * k, f"echo {cmd}",
                            f'["echo", "{cmd}"]', "allow", "ops", "read-only", None, "allow"))
                ops.append((OP_DATA, cid, "o", 0.1 * k + 0.05, f"{cmd}\n".encode(), 0, 8 * k))
                if rng.random() < 0.8:        # the rest: sealed with the channel's close
                    ops.append((OP_COMMAND_RESULT, cmd, rng.choice((0, 1, 2, 127))))
            ops.append((OP_CHANNEL_CLOSE, cid, 1.0, t + 1, rng.choice((0, 1)), None, 0, 64,
                        None))
        ops.append((OP_SESSION_CLOSE, sid, t + 2, "closed"))
        per_session.append(ops)
    refused = per_session[rng.randrange(len(per_session))][0][1]
    stream: list[tuple] = []
    while any(per_session):                   # interleave, keeping each session's order
        ops = rng.choice([s for s in per_session if s])
        stream.append(ops.pop(0))
    cuts = sorted(rng.sample(range(1, len(stream)), rng.randint(1, 5)))
    ends = [*cuts, len(stream)]
    return [stream[a:b] for a, b in zip([0, *cuts], ends, strict=True)], refused


def _chain_rows(data_dir) -> dict[tuple[str, int], tuple[int, str]]:
    conn = schema.connect(data_dir, readonly=True)
    try:
        return {(t, r[0]): (r[1], r[2]) for t in ("sessions", "channels", "commands")
                for r in conn.execute(f"SELECT id, seq, hash FROM {t} WHERE seq IS NOT NULL")}
    finally:
        conn.close()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sealing_at_the_end_makes_the_chain_sealing_at_once_makes(tmp_path, pg_store, pg_cluster,
                                                                   monkeypatch, seed):
    """The same random streams (several sessions interleaved, random batches, one session's
    close refused by the store) through two appliers, each on its own database: one takes
    the lock at its batches' end and seals there, the other seals each row at once.  Every
    sealed row has the same number and hash in both, the chain is gapless, and ``verify``
    passes on both."""
    import random
    rng = random.Random(seed)
    stores = {"late": dict(pg_store), "at-once": pg_cluster.store_env(f"once{seed}",
                                                                       node="test-node")}
    pg_cluster.create_db(f"once{seed}")
    batches, refused = _random_stream(rng, first_id=100)
    chains = {}
    for mode, env in stores.items():
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        data_dir = tmp_path / mode
        data_dir.mkdir()
        a = _applier(data_dir)
        a.late_lock = mode == "late"
        try:
            _refuse_update_of(a.conn, "status", refused)
            for batch in batches:
                for op in batch:
                    assert a.apply(op), (mode, op, a.error)
                assert a.flush_files() and a.commit(), (mode, a.error)
        finally:
            a.conn.close()
        report = verify_index(data_dir)
        assert report.ok, (mode, report.problems)
        [kept] = quarantine.listing(data_dir)
        assert (kept.operation, kept.session) == ("session-close", str(refused))
        chains[mode] = _chain_rows(data_dir)
    assert chains["late"] == chains["at-once"]
    assert sorted(seq for seq, _ in chains["late"].values()) == list(
        range(1, len(chains["late"]) + 1))
    assert ("sessions", refused) not in chains["late"]
