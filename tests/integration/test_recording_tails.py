"""Output the agent was shown while a masker still held it back undecided survives the death
of the recording worker (issue 16 item 2): the worker reports what it holds with each
acknowledgement, the bastion side keeps it, and the next worker gets it back in its replay
and writes it once decided -- masked exactly as the dead worker would have.

Real worker processes killed with SIGKILL, real files and a real SQLite index; the
bookkeeping on each side (sink.TailReport, acks.AckQueue, replay.first_ops) table-driven.
"""

from __future__ import annotations

import base64
import os
import random
import signal
import sqlite3
import time

import pytest

from bastion.identity.principal import Principal
from bastion.proto import asciicast
from bastion.proto.masker import BUILTIN, Masker
from bastion.recording import Recorder, channelfiles, player
from bastion.recording.acks import AckQueue, tail_cost
from bastion.recording.process import WriterProcess
from bastion.recording.replay import first_ops, for_replay
from bastion.recording.sink import Sink, TailReport
from bastion.recording.verify import verify_index
from bastion.recording.ops import (OP_CHANNEL_CLOSE, OP_CHANNEL_OPEN, OP_MARKER, OP_MASKS,
                                   OP_PROBE, OP_REPLAY, OP_RESUME, OP_SESSION_START)

AGENT = Principal(subject="oid-agent", app_id="app-1", name="deploy-bot", roles=("agents",))
SECRET = b"ghp_" + b"a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"      # fake, shaped like a token
_BODY = base64.b64encode(random.Random(7).randbytes(2400))
KEY_LINES = b"\n".join(_BODY[i:i + 70] for i in range(0, len(_BODY), 70))
KEY = b"$ cat id_ed25519\n-----BEGIN OPENSSH PRIVATE KEY-----\n" + KEY_LINES[:2035]
KEY_CUT_LINE = KEY.rsplit(b"\n", 1)[1]         # a partial key line, held while being dropped

#: (channel, mask, [(stream, chunk)...], bytes that must never be in its recording file)
CASES = [
    ("a prompt", BUILTIN, [("o", b"deploy@web1:~$ ")], ()),
    ("a command's only line", BUILTIN, [("o", b"waiting\n")], ()),
    ("a token's first part", BUILTIN,
     [("o", b"listing\n" * 80 + b"$ export GITHUB_TOKEN="), ("o", SECRET[:17])], (SECRET[:17],)),
    ("a key block cut mid-line", BUILTIN, [("o", KEY[:400]), ("o", KEY[400:])],
     (KEY_CUT_LINE, KEY_LINES[:70])),
    ("stderr and input", BUILTIN, [("e", b"Proceed? "), ("i", b"y"), ("e", b"[y/N] ")], ()),
    ("a cut UTF-8 character, no masks", None, [("o", b"total: 3 \xe2\x82")], ()),
]
STREAMS = {"o": "stdout", "e": "stderr", "i": "input"}


def _expected(mask, chunks, stream: str) -> bytes:
    """The stream as its recording must hold it: masked in one go, decided at its end."""
    data = [chunk for s, chunk in chunks if s == stream]
    if mask is None:
        return b"".join(data)
    masker = Masker(mask)
    return b"".join(masker.feed(chunk) for chunk in data) + masker.flush()


def _until(predicate, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
    return value


@pytest.mark.parametrize("crash", ["the worker", "the worker; the channels close once the next runs",
                                   "the worker, then the next one in its replay"])
def test_what_was_shown_undecided_is_recorded_after_a_crash(tmp_path, monkeypatch, crash):
    rec = Recorder.open(tmp_path, backoff=(3600, 3600))      # a new worker only when told
    sup = rec._writer
    try:
        s = rec.start_session(principal=AGENT, client="c", target="web1", login="deploy")
        chans = []
        for name, mask, chunks, _ in CASES:
            ch = s.open_channel("exec", command=name, mask=mask)
            for stream, chunk in chunks:
                if stream == "i":
                    ch.input(chunk)
                else:
                    ch.output(chunk, stderr=stream == "e")
            chans.append(ch)
        rec.flush()                     # acknowledged: the gate shows all of it to the agent now
        for ch, (name, _mask, chunks, _) in zip(chans, CASES, strict=True):
            # ...and each stream's end is still undecided, held by the worker's maskers
            assert set(sup._tails.get(ch.id, {})) == {s for s, _ in chunks}, name
        os.kill(sup.proc.pid, signal.SIGKILL)
        assert rec.wait_state("failed") == "failed"
        _until(lambda: all(ch.lost for ch in chans), "the channels to be stopped")
        late = "close once" in crash
        if not late:
            for ch in chans:
                ch.close(exit_status=255)
            s.close()
        if "replay" in crash:
            killed = []
            send = WriterProcess.send

            def send_then_die(worker, batch):
                if not killed and any(op[0] == OP_RESUME for _seq, op in batch):
                    killed.append(worker.pid)
                    worker.kill()               # dies with the replay unacknowledged
                return send(worker, batch)
            monkeypatch.setattr(WriterProcess, "send", send_then_die)
            rec.retry_now()
            _until(lambda: killed and rec.status()["last_attempt_error"], "the replay to fail")
            monkeypatch.undo()
        rec.retry_now()
        assert rec.wait_state("ok") == "ok"
        if late:
            # the new worker took the open channels' recordings and tails over: still held
            rec.flush()
            assert set(sup._tails) == {ch.id for ch in chans}
            for ch in chans:
                ch.close(exit_status=255)
            s.close()
        rec.flush()
        cause = "the recording worker process crashed (killed by signal 9)"
        for ch, (name, mask, chunks, forbidden) in zip(chans, CASES, strict=True):
            header, events = player.load(ch.path)
            for stream in {s for s, _ in chunks}:
                assert (player.stream_bytes(events, STREAMS[stream])
                        == _expected(mask, chunks, stream)), (name, stream)
            raw = ch.path.read_bytes()
            for secret in forbidden:
                assert secret not in raw, name
            markers = [e.data for e in events if e.code == asciicast.MARKER]
            assert markers[-2:] == [channelfiles.failure_label(cause), "exit status 255"], name
        assert sup._tails == {} and sup._tails_cost == 0      # nothing kept once closed
    finally:
        rec.close()
    with sqlite3.connect(tmp_path / "index.sqlite") as db:
        statuses = db.execute("SELECT status, seq IS NOT NULL FROM channels").fetchall()
    assert statuses == [("failed", 1)] * len(CASES)
    assert verify_index(tmp_path).ok


def test_the_expected_recordings_differ_from_what_a_fresh_masker_would_write():
    """The key block case is only honest if resuming the masker's state matters there."""
    _name, mask, chunks, _ = CASES[3]
    masker = Masker(mask)
    decided = b"".join(masker.feed(chunk) for _s, chunk in chunks)
    ctx, held, sup = masker.snapshot()
    assert sup is not None and held.endswith(KEY_CUT_LINE)    # dropping a key: a line held
    fresh = Masker(mask)
    assert KEY_CUT_LINE in decided + fresh.feed(held) + fresh.flush()   # would leak it
    assert KEY_CUT_LINE not in _expected(mask, chunks, "o")


HEADER = b'{"version": 2, "width": 80, "height": 24}\n'


def _held_after(data: bytes) -> bytes:
    masker = Masker(BUILTIN)
    masker.feed(data)
    return masker.snapshot()[1]


@pytest.mark.parametrize("steps", [
    pytest.param([  # (what happens, what the report tells: {stream: undecided bytes or None})
        (("data", "o", b"waiting\n"), {"o": b"waiting\n"}),
        (None, {}),                                    # not touched: nothing to tell
        (("data", "e", b"oops "), {"o": b"waiting\n", "e": b"oops "}),  # the channel's streams
        (("finish",), {"o": None, "e": None}),         # decided and written
        (("finish",), {}),                             # told already
    ], id="held-then-decided-at-the-end"),
    pytest.param([
        (("data", "o", b"x" * 3000), {"o": _held_after(b"x" * 3000)}),   # only its end
        (("close",), {"o": None}),
    ], id="a-long-stream-holds-only-its-end"),
    pytest.param([
        (("resume", "o", b"taken over\n"), {"o": b"taken over\n"}),
        (("finish",), {"o": None}),
    ], id="taken-over-from-a-dead-worker"),
    pytest.param([
        (("close",), {}),
        (("resume", "e", b"its recording could not be adopted"), {"e": None}),
    ], id="taken-over-without-a-recording"),
])
def test_the_tail_report_tells_what_is_held_and_when_it_is_written(tmp_path, steps):
    sink = Sink.create(2, tmp_path / "s1-c2.cast", HEADER, 1 << 20, lambda e: None,
                       tuple(BUILTIN))
    sinks = {2: sink}
    report = TailReport()
    for what, told in steps:
        if what is None:
            pass
        elif what[0] == "data":
            sink.data(what[1], 0.5, what[2])
            report.touch(2)
        elif what[0] == "finish":
            sink.finish(1.0)
            report.touch(2)
        elif what[0] == "close":
            sinks.pop(2).close(1.0)
            report.touch(2)
        elif what[0] == "resume":
            if 2 in sinks:
                sink.resume(what[1], (b"", what[2], None, b"", sink.size))
            report.resumed(2, what[1])
        changes = report.changes(sinks)
        assert {key: (tail[1] if tail is not None else None) for key, tail in changes.items()} \
            == {(2, stream): held for stream, held in told.items()}, what
    sink.release()


def _close(cid: int) -> tuple:
    return (OP_CHANNEL_CLOSE, cid, 1.0, 2.0, 255, None, 0, 0, "crashed")


@pytest.mark.parametrize("reports, closed, kept", [
    # reports from the worker, in order; channels whose close is then acknowledged; what is kept
    ([{(2, "o"): b"held"}], [], {2: {"o": b"held"}}),
    ([{(2, "o"): b"held"}, {(2, "o"): b"more held"}], [], {2: {"o": b"more held"}}),
    ([{(2, "o"): b"held", (2, "i"): b"typed"}, {(2, "o"): None}], [], {2: {"i": b"typed"}}),
    ([{(2, "o"): b"held"}, {(2, "o"): None}], [], {}),
    ([{(2, "o"): b"held", (3, "e"): b"err"}], [2], {3: {"e": b"err"}}),  # the close drops it
    ([{(2, "o"): b"held"}], [2, 3], {}),
])
def test_the_bastion_keeps_each_tail_until_written_or_closed(reports, closed, kept):
    acks = AckQueue()
    for changes in reports:                     # worker None: the current one (none here)
        acks._tails_changed(None, {key: (b"c" * 9, held, None, b"", 0) if held else None
                                   for key, held in changes.items()})
    for cid in closed:
        seq = acks.put(_close(cid))
        acks._inflight.append(acks._queue.popleft())      # shipped (the pump's part)
        acks._acked(None, seq)
    assert {cid: {s: t[1] for s, t in streams.items()}
            for cid, streams in acks._tails.items()} == kept
    assert acks._tails_cost == sum(tail_cost(t) for streams in acks._tails.values()
                                   for t in streams.values())
    acks._tails_changed(object(), {(9, "o"): (b"", b"not the current worker", None, b"", 0)})
    assert 9 not in acks._tails


def test_the_replay_takes_over_tails_after_the_opens_and_before_what_was_kept():
    opens = {cid: (OP_CHANNEL_OPEN, cid) + (None,) * 11 for cid in (3, 2)}
    tails = {2: {"o": "T2o", "e": "T2e"}, 3: {"i": "T3i"}, 4: {"o": "closed meanwhile"}}
    start = (OP_SESSION_START, 1, 0.0, None, "c", "t", "l")
    marker = (OP_MARKER, 2, 0.5, "note")
    masks = [(OP_MASKS, 1, ())]
    ops = first_ops([marker, start, _close(2)], masks, opens, tails)
    assert ops == [(OP_REPLAY, True), *masks, start, opens[2], opens[3],
                   (OP_RESUME, 2, "e", "T2e"), (OP_RESUME, 2, "o", "T2o"),
                   (OP_RESUME, 3, "i", "T3i"), marker, _close(2),
                   (OP_REPLAY, False), (OP_PROBE,)]
    # a take-over left unacknowledged by a worker that died is not kept: the tails it
    # carried are still with the bastion, and the next replay sends them again
    assert for_replay((OP_RESUME, 2, "o", "T2o"), "crashed") is None


@pytest.mark.parametrize("name, shown, unacked, expected", [
    # (case, what the agent was shown, what the dead worker then wrote without acknowledging
    #  it, the stream the recording must hold: nothing twice, nothing shown missing)
    ("nothing written after", b"listing\n" * 80, b"", b"listing\n" * 80),
    ("part of the tail decided", b"listing\n" * 80, b"more\n",
     b"listing\n" * 80),                       # the unacknowledged line itself is still held
    ("all of the tail decided", b"listing\n" * 80, b"later\n" * 200,
     (b"listing\n" * 80 + b"later\n" * 200)[:-len(_held_after(b"later\n" * 200))]),
    ("a secret masked across the crash", b"listing\n" * 80 + b"GITHUB_TOKEN=" + SECRET[:17],
     SECRET[17:] + b"\n" + b"later\n" * 200,
     Masker(BUILTIN).feed(b"listing\n" * 80 + b"GITHUB_TOKEN=" + SECRET + b"\n"
                          + b"later\n" * 200)),
])
def test_what_the_dead_worker_wrote_past_its_report_is_not_written_again(
        tmp_path, name, shown, unacked, expected):
    path = tmp_path / "s1-c2.cast"
    dead = Sink.create(2, path, HEADER, 1 << 24, lambda e: None, tuple(BUILTIN))
    dead.data("o", 0.1, shown)
    dead.flush()
    tail = dead.tails()["o"]                   # what it reported with its acknowledgement
    if unacked:
        dead.data("o", 0.2, unacked)           # written, then killed before acknowledging
        dead.flush()
    dead.release()
    after = Sink.adopt(2, path, HEADER, 1 << 24, lambda e: None, tuple(BUILTIN))
    after.resume("o", tail)
    after.close(1.0, ("exit status 255",))
    _, events = player.load(path)
    recorded = player.stream_bytes(events, "stdout")
    assert recorded == expected, name
    assert SECRET[:17] not in path.read_bytes()


def test_a_worker_killed_between_writing_and_acknowledging_writes_nothing_twice(tmp_path):
    """Real processes: the dead worker wrote data it never acknowledged (a chunk over the
    buffer's size is written at once), which decided the tail it had reported; its batch then
    waited on the index (a command row) and it was killed there."""
    rec = Recorder.open(tmp_path, backoff=(3600, 3600))
    sup = rec._writer
    try:
        s = rec.start_session(principal=AGENT, client="c", target="web1", login="deploy")
        ch = s.open_channel("exec", command="x", mask=BUILTIN)
        shown = b"".join(b"line %05d\n" % i for i in range(100))
        ch.output(shown)
        rec.flush()
        assert sup._tails[ch.id]["o"][1]                 # held back undecided, and shown
        size = ch.path.stat().st_size
        blocker = sqlite3.connect(tmp_path / "index.sqlite", isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            unshown = b"".join(b"more %06d\n" % i for i in range(30000))     # > 256 KiB
            ch.output(unshown)                           # (these two go in one batch as a rule)
            ch.command("ls", FakeDecision())             # needs the index: waits, no ack
            _until(lambda: ch.path.stat().st_size > size + 256 * 1024, "the write")
            os.kill(sup.proc.pid, signal.SIGKILL)
            assert rec.wait_state("failed") == "failed"
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        _until(lambda: ch.lost, "the channel to be stopped")
        ch.close(exit_status=255)
        s.close()
        rec.retry_now()
        assert rec.wait_state("ok") == "ok"
        rec.flush()
        _, events = player.load(ch.path)
        recorded = player.stream_bytes(events, "stdout")
        # all that was shown, then what the dead worker wrote unacknowledged: nothing twice
        assert recorded.startswith(shown) and (shown + unshown).startswith(recorded)
    finally:
        rec.close()


class FakeDecision:
    action, rule, reason, commands = "allow", "r", "ok", ()
