"""bastion.recording.renumber: the id map of an import, row by row, as runs and as the lines
the import prints (the store side is tests/integration/test_store_import_merge.py)."""

from __future__ import annotations

import sqlite3

import pytest

from bastion.errors import RecordingError
from bastion.recording import renumber, schema

pytestmark = pytest.mark.unit

BASE = 3_000_000_000
CHANNEL_COLS = ["id", "session_id", "kind", "path"]


def _map(offsets=(), pairs=None) -> renumber.IdMap:
    ids = renumber.IdMap()
    ids.offsets = {t: BASE for t in offsets}
    ids.pairs = pairs or {}
    return ids


@pytest.mark.parametrize("offsets, row, expected", [
    # nothing moved: the row as it was, its recording path too
    ((), [3, 1, "exec", "recordings/2026/11/02/s1-c3.cast"],
     [3, 1, "exec", "recordings/2026/11/02/s1-c3.cast"]),
    # both moved: ids, the session it names, the file name (same day directory)
    (("sessions", "channels"), [3, 1, "exec", "recordings/2026/11/02/s1-c3.cast"],
     [BASE + 3, BASE + 1, "exec", f"recordings/2026/11/02/s{BASE + 1}-c{BASE + 3}.cast"]),
    # only the sessions moved: the channel keeps its id, its file name says the new session
    (("sessions",), [3, 1, "exec", "recordings/2026/11/02/s1-c3.cast"],
     [3, BASE + 1, "exec", f"recordings/2026/11/02/s{BASE + 1}-c3.cast"]),
    # a channel with no recording keeps no path
    (("sessions", "channels"), [4, 2, "direct-tcpip", None], [BASE + 4, BASE + 2,
                                                               "direct-tcpip", None]),
])
def test_a_channel_row_moves_with_its_session(offsets, row, expected):
    assert _map(offsets).row("channels", CHANNEL_COLS, row) == expected


def test_an_approval_names_the_moved_session_command_and_granting_request():
    ids = _map(("sessions", "commands"), {"approvals": {1: 7, 2: 8}})
    cols = ["id", "session_id", "command_id", "granted_by", "line"]
    assert ids.row("approvals", cols, [2, 5, 9, 1, "systemctl restart x"]) == \
        [8, BASE + 5, BASE + 9, 7, "systemctl restart x"]
    assert ids.row("approvals", cols, [1, None, None, None, "y"]) == [7, None, None, None, "y"]
    # a pruned session named by an approval moves by the offset too (into the import's block)
    assert ids.new("sessions", 1) == BASE + 1
    with pytest.raises(RecordingError, match="names approvals id 3, which it does not have"):
        ids.row("approvals", cols, [2, 5, 9, 3, "z"])


def _source(rows: dict[str, list[int]]) -> sqlite3.Connection:
    src = sqlite3.connect(":memory:")
    schema.migrate(src)
    for sid in rows.get("sessions", []):
        src.execute("INSERT INTO sessions (id, started, status) VALUES (?, 0, 'closed')", (sid,))
    for aid in rows.get("approvals", []):
        src.execute("INSERT INTO approvals (id, node, created, expires, status, "
                    "requester_subject, target, line, session_id) VALUES "
                    "(?, 'n', 0, 0, 'approved', 's', 't', 'l', ?)", (aid, rows["named"][0]))
    return src


def test_runs_of_an_identity_table_break_at_gaps_in_either_numbering():
    src = _source({"sessions": [5, 6], "approvals": [1, 2, 3, 7, 8], "named": [2]})
    ids = _map(("sessions",), {"approvals": {1: 10, 2: 11, 3: 13, 7: 14, 8: 15}})
    found = renumber.runs(src, ["sessions", "approvals"], ids)
    assert [(r.table, r.old_first, r.old_last, r.new_first, r.rows) for r in found] == [
        ("sessions", 2, 6, BASE + 2, 2),        # from the pruned session an approval names
        ("approvals", 1, 2, 10, 2), ("approvals", 3, 3, 13, 1), ("approvals", 7, 8, 14, 2)]
    lines = renumber.describe([r.to_dict() for r in found])
    assert lines == [f"2 sessions renumbered: 2-6 are now {BASE + 2}-{BASE + 6}",
                     "5 approvals renumbered: 1-2 are now 10-11, 3 is now 13, 7-8 are now 14-15"]
    dry = renumber.runs(src, ["sessions", "approvals"], None)
    assert renumber.describe([r.to_dict() for r in dry]) == [
        "2 sessions would be renumbered (the store has some of their ids): 2-6",
        "5 approvals would be renumbered (the store has some of their ids): 1-8"]


def test_many_runs_are_cut_short_with_where_to_see_them_all():
    found = [renumber.Run("approvals", i * 2, i * 2, 100 + i, 1).to_dict() for i in range(9)]
    [line] = renumber.describe(found, limit=3)
    assert line == ("9 approvals renumbered: 0 is now 100, 2 is now 101, 4 is now 102, and 6 "
                    "more run(s): `bastion store imports --json`")


@pytest.mark.parametrize("text, expected", [
    ("session:7", ("sessions", 7)), ("sessions:7", ("sessions", 7)),
    ("Approval:3", ("approvals", 3)), ("command: 12", ("commands", 12)),
])
def test_parse_old(text, expected):
    assert renumber.parse_old(text) == expected


@pytest.mark.parametrize("text", ["widget:1", "session", "session:x", "session:-1", ":3"])
def test_parse_old_refuses(text):
    with pytest.raises(RecordingError):
        renumber.parse_old(text)


def test_lookup_says_renumbered_kept_or_absent_per_import():
    imports = [
        {"id": 1, "source": "/a", "renumbered": []},
        {"id": 2, "source": "/b", "renumbered": [
            {"table": "sessions", "old_first": 1, "old_last": 4, "new_first": BASE + 1},
            {"table": "sessions", "old_first": 9, "old_last": 9, "new_first": BASE + 9}]},
        {"id": 3, "source": "/c", "renumbered": [
            {"table": "approvals", "old_first": 2, "old_last": 3, "new_first": 40}]},
    ]
    got = {(f["import"], f["old"]): (f["how"], f["new"])
           for old in (3, 7, 9) for f in renumber.lookup(imports, "sessions", old)}
    assert got == {(1, 3): ("kept", 3), (2, 3): ("renumbered", BASE + 3), (3, 3): ("kept", 3),
                   (1, 7): ("kept", 7), (2, 7): ("absent", None), (3, 7): ("kept", 7),
                   (1, 9): ("kept", 9), (2, 9): ("renumbered", BASE + 9), (3, 9): ("kept", 9)}
    assert [(f["how"], f["new"]) for f in renumber.lookup(imports, "approvals", 3)] == \
        [("kept", 3), ("kept", 3), ("renumbered", 41)]
