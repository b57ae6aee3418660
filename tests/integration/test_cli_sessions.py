"""Reviewer CLI against a real index: results checked through the library."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from bastion.cli import sessions as sessions_cli
from bastion.identity.principal import Principal
from bastion.policy import Action, Decision
from bastion.proto import asciicast
from bastion.recording import Recorder, player, query

HIDING_LINE = "rm -rf /srv/data \x1b[2K\rls -la"               # tries to look like `ls -la`
EVIL_NAME = "bot\x1b]0;owned\x07\u202e"                          # title change + bidi in a claim


def make_app() -> typer.Typer:
    app = typer.Typer(pretty_exceptions_enable=False)
    sessions_cli.register(app)
    return app


APP = make_app()
RUNNER = CliRunner(env={"COLUMNS": "400", "BASTION_DATA_DIR": None})


def cli(*args: str):
    return RUNNER.invoke(APP, list(args))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli")
    rec = Recorder.open(path)
    evil = Principal(subject="oid-evil", name=EVIL_NAME, roles=("agents",))
    good = Principal(subject="oid-good", name="builder", app_id="app-2")

    s1 = rec.start_session(principal=evil, client="192.0.2.7:5000", target="web1", login="deploy")
    sh = s1.open_channel("shell", term="xterm", width=80, height=24)
    sh.output(b"$ ")
    c_ok = sh.command("uptime", Decision(Action.ALLOW, "read-only", "reads only"))
    sh.output(b"\x1b[32m up 3 days\x1b[0m\r\n\x1b]52;c;c2VjcmV0\x07\x1b]0;fake title\x07$ ")
    c_deny = sh.command(HIDING_LINE, Decision(Action.DENY, "no-rm", "deletes data \x1b[31m"))
    sh.output(b"bastion: denied\r\n$ ")
    sh.close(exit_status=0)
    s1.close()

    s2 = rec.start_session(principal=good, client="192.0.2.8:5001", target="db1", login="postgres")
    ex = s2.open_channel("exec", command="pg_dump app")
    c_dump = ex.command("pg_dump app", Decision(Action.REVIEW, "dumps", "needs approval"),
                        approver="alice@example.com")
    payload = bytes(range(256)) * 4
    ex.output(payload)
    ex.output(b"pg_dump: done\n", stderr=True)
    ex.command_result(c_dump, 0)
    ex.close(exit_status=0)
    s2.close()
    rec.refused(principal=None, client="198.51.100.1:9", target="web1", login="root", reason="token expired")
    # held for review and never approved (the approver denied it): it did not run
    s3 = rec.start_session(principal=good, client="192.0.2.9:5002", target="web1", login="deploy")
    held = s3.open_channel("exec", command="systemctl restart app")
    held.command("systemctl restart app", Decision(Action.REVIEW, "restarts", "needs approval"))
    held.close(exit_status=125)
    s3.close()
    rec.close()
    return {"path": path, "s1": s1.id, "s2": s2.id, "s3": s3.id, "shell": sh, "exec": ex,
            "payload": payload, "c_ok": c_ok, "c_deny": c_deny, "c_dump": c_dump}


def assert_inert(text: str) -> None:
    assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text and "\r" not in text


def test_list_json_matches_library(data):
    result = cli("sessions", "list", "--data-dir", str(data["path"]), "--json")
    assert result.exit_code == 0, result.output
    got = json.loads(result.stdout)
    lib = query.list_sessions(query.open_index(data["path"]))
    assert [r["id"] for r in got] == [r["id"] for r in lib]
    assert {r["status"] for r in got} == {"closed", "refused"}
    by_id = {r["id"]: r for r in got}
    assert by_id[data["s1"]]["n_denied"] == 1 and by_id[data["s1"]]["started"].endswith("Z")


@pytest.mark.parametrize("args, expected_ids", [
    (["--denied"], lambda d: {d["s1"], d["s1"] + 2, d["s3"]}),   # s3: held, never approved
    (["--target", "db*"], lambda d: {d["s2"]}),
    (["--principal", "builder"], lambda d: {d["s2"], d["s3"]}),
    (["--principal", "app-2"], lambda d: {d["s2"], d["s3"]}),
    (["--status", "refused"], lambda d: {d["s1"] + 2}),
    (["--since", "1h"], lambda d: {d["s1"], d["s2"], d["s1"] + 2, d["s3"]}),
    (["--until", "2000-01-01"], lambda d: set()),
])
def test_list_filters(data, args, expected_ids):
    result = cli("sessions", "list", "--data-dir", str(data["path"]), "--json", *args)
    assert result.exit_code == 0, result.output
    assert {r["id"] for r in json.loads(result.stdout)} == expected_ids(data)


def test_list_fits_80_columns_and_wide_adds_the_rest(data):
    narrow = CliRunner(env={"COLUMNS": "80", "BASTION_DATA_DIR": None}).invoke(
        APP, ["sessions", "list", "--data-dir", str(data["path"])])
    assert narrow.exit_code == 0, narrow.output
    rows = [line for line in narrow.stdout.splitlines() if re.match(r" *\d+ +\d{4}-", line)]
    assert len(rows) == 4                                   # one line per session
    assert "192.0.2.8" not in narrow.stdout                 # the client address: --wide only
    wide = cli("sessions", "list", "--data-dir", str(data["path"]), "--wide")
    assert "192.0.2.8:5001" in wide.stdout and "in/out bytes" in wide.stdout
    by_id = {int(line.split()[0]): line for line in rows}
    assert by_id[data["s3"]].split()[-2:] == ["1", "125"]   # refused: 1 (held, not approved)
    assert by_id[data["s2"]].split()[-2:] == ["0", "0"]     # approved: not refused


def test_list_table_is_sanitised(data):
    result = cli("sessions", "list", "--data-dir", str(data["path"]))
    assert result.exit_code == 0, result.output
    assert_inert(result.stdout)
    assert "bot␛]0;owned␇\\u202e" in result.stdout
    assert "refused" in result.stdout


def test_show_table_shows_hiding_command_in_full(data):
    result = cli("sessions", "show", str(data["s1"]), "--data-dir", str(data["path"]))
    assert result.exit_code == 0, result.output
    assert_inert(result.stdout)
    assert "rm -rf /srv/data ␛[2K␍ls -la" in result.stdout
    assert "no-rm" in result.stdout and "deny" in result.stdout
    assert f"--from cmd:{data['c_ok']}" in result.stdout


def test_show_json_has_the_timeline(data):
    result = cli("sessions", "show", str(data["s2"]), "--data-dir", str(data["path"]), "--json")
    record = json.loads(result.stdout)
    [cmd] = record["commands"]
    assert (cmd["line"], cmd["action"], cmd["rule"], cmd["approver"], cmd["exit_status"]) == \
        ("pg_dump app", "review", "dumps", "alice@example.com", 0)
    assert record["channels"][0]["sha256"] == hashlib.sha256(data["exec"].path.read_bytes()).hexdigest()
    assert record["principal"]["app_id"] == "app-2"


def test_show_unknown_session(data):
    result = cli("sessions", "show", "9999", "--data-dir", str(data["path"]))
    assert result.exit_code == 1
    assert "no session 9999" in result.stderr


def test_search(data):
    result = cli("commands", "search", "rm -rf", "--data-dir", str(data["path"]), "--json")
    assert result.exit_code == 0, result.output
    got = json.loads(result.stdout)
    assert [r["id"] for r in got] == [data["c_deny"]]
    assert got[0]["line"] == HIDING_LINE            # JSON keeps the exact line, escaped
    assert "\\u001b" in result.stdout
    for args, ids in ((["--action", "deny"], set()), (["--target", "web1"], {data["c_ok"]})):
        r = cli("commands", "search", "uptime", "--data-dir", str(data["path"]), "--json", *args)
        assert {c["id"] for c in json.loads(r.stdout)} == ids
    lib = query.search_commands(query.open_index(data["path"]), "pg_dump")
    assert [c["id"] for c in lib] == [data["c_dump"]]


def test_search_table_is_sanitised(data):
    result = cli("commands", "search", "srv data", "--data-dir", str(data["path"]))
    assert result.exit_code == 0, result.output
    assert_inert(result.stdout)
    assert "␛[2K␍ls -la" in result.stdout


def test_search_raw_fts_syntax(data):
    result = cli("commands", "search", "uptime OR pg_dump", "--raw", "--data-dir", str(data["path"]), "--json")
    assert {c["id"] for c in json.loads(result.stdout)} == {data["c_ok"], data["c_dump"]}
    bad = cli("commands", "search", "\"unclosed", "--raw", "--data-dir", str(data["path"]))
    assert bad.exit_code == 1 and "bad full-text query" in bad.stderr


def test_play_filters_dangerous_sequences(data):
    result = cli("sessions", "play", str(data["s1"]), "--data-dir", str(data["path"]), "--idle-limit", "0")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "\x1b[32m up 3 days\x1b[0m" in out          # colours kept
    assert "\x1b]" not in out and "c2VjcmV0" not in out and "fake title" not in out
    assert "filtered out" in result.stderr


def test_play_json_from_command_offset(data):
    result = cli("sessions", "play", str(data["s1"]), "--data-dir", str(data["path"]), "--json",
                 "--from", f"cmd:{data['c_deny']}")
    assert result.exit_code == 0, result.output
    [chan] = json.loads(result.stdout)
    deny = query.get_command(query.open_index(data["path"]), data["c_deny"])
    assert chan["from"] == pytest.approx(deny["offset"])
    texts = [e[2] for e in chan["events"]]
    assert texts == ["bastion: denied\r\n$ "]


def test_play_timing_with_idle_limit_and_start():
    events = [asciicast.Event(0.0, "o", "a"), asciicast.Event(5.0, "o", "b"), asciicast.Event(5.5, "i", "x"),
              asciicast.Event(20.0, "e", "c"), asciicast.Event(21.0, "o", "d")]
    delays = []

    class Sink:
        data = b""

        def write(self, b):
            Sink.data += b

        def flush(self):
            pass

    player.play(events, Sink(), speed=2.0, idle_limit=3.0, start=4.0, sleep=delays.append)
    assert delays == [0.5, 1.5, 0.5]       # (5-4)/2, min(15,3)/2, 1/2 ; "a" fast-forwarded
    assert Sink.data.startswith(b"abcd")


def test_export_cast_json_and_raw(data, tmp_path):
    path = data["path"]
    out = tmp_path / "s.cast"
    r = cli("sessions", "export", str(data["s2"]), "--data-dir", str(path), "--format", "cast", "-o", str(out))
    assert r.exit_code == 0, r.output
    assert out.read_bytes() == data["exec"].path.read_bytes()
    raw = tmp_path / "s.bin"
    r = cli("sessions", "export", str(data["s2"]), "--data-dir", str(path), "--format", "raw", "-o", str(raw))
    assert r.exit_code == 0, r.output
    assert raw.read_bytes() == data["payload"]
    r = cli("sessions", "export", str(data["s2"]), "--data-dir", str(path), "--format", "raw",
            "--stream", "stderr", "-o", str(raw), "--force")      # replacing needs --force
    assert raw.read_bytes() == b"pg_dump: done\n"
    r = cli("sessions", "export", str(data["s2"]), "--data-dir", str(path), "--json")
    exported = json.loads(r.stdout)
    codes = [e[1] for e in exported["channels"][0]["events"]]
    assert "ob" in codes and "e" in codes and exported["commands"][0]["action"] == "review"


@pytest.mark.parametrize("fmt", ["cast", "raw", "json"])
def test_export_does_not_overwrite_without_force(data, tmp_path, fmt):
    """Issue 16 item 9: an existing -o file is an error (exit 1, one clear line), untouched."""
    out = tmp_path / "existing"
    out.write_bytes(b"keep me\n")
    r = cli("sessions", "export", str(data["s2"]), "--data-dir", str(data["path"]), "--format", fmt,
            "-o", str(out))
    assert r.exit_code == 1
    assert f"error: {out} already exists; not written" in " ".join(r.stderr.split())
    assert "--force" in r.stderr and "Traceback" not in r.stderr
    assert out.read_bytes() == b"keep me\n"
    r = cli("sessions", "export", str(data["s2"]), "--data-dir", str(data["path"]), "--format", fmt,
            "-o", str(out), "--force")
    assert r.exit_code == 0, r.output
    assert out.read_bytes() != b"keep me\n"
    assert oct(out.stat().st_mode & 0o777) == oct(0o600)
    assert [p.name for p in tmp_path.iterdir()] == ["existing"]      # no temporary file left


@pytest.mark.parametrize("dangling", [False, True])
def test_export_never_writes_through_a_symlink(data, tmp_path, dangling):
    """A symlink at -o (planted to make a reviewer overwrite another file) is refused, and with
    --force replaced by a regular file; what it points to is never written."""
    victim = tmp_path / "victim"
    if not dangling:
        victim.write_bytes(b"precious\n")
    link = tmp_path / "out.cast"
    link.symlink_to(victim)
    r = cli("sessions", "export", str(data["s2"]), "--data-dir", str(data["path"]), "-o", str(link))
    assert r.exit_code == 1
    assert "is a symbolic link; not written" in " ".join(r.stderr.split())
    assert link.is_symlink()
    assert (victim.read_bytes() == b"precious\n") if not dangling else not victim.exists()
    r = cli("sessions", "export", str(data["s2"]), "--data-dir", str(data["path"]), "-o", str(link),
            "--force")
    assert r.exit_code == 0, r.output
    assert not link.is_symlink() and link.read_bytes() == data["exec"].path.read_bytes()
    assert (victim.read_bytes() == b"precious\n") if not dangling else not victim.exists()


def test_export_to_a_new_file_is_private(data, tmp_path):
    old = os.umask(0o022)
    try:
        out = tmp_path / "new.json"
        r = cli("sessions", "export", str(data["s2"]), "--data-dir", str(data["path"]), "--json",
                "-o", str(out))
    finally:
        os.umask(old)
    assert r.exit_code == 0, r.output
    assert out.stat().st_mode & 0o777 == 0o600
    assert json.loads(out.read_text())["id"] == data["s2"]


def test_export_needs_channel_when_ambiguous(data):
    r = cli("sessions", "export", str(data["s1"] + 2), "--data-dir", str(data["path"]))
    assert r.exit_code == 1 and "0 matching recorded channels" in r.stderr


def test_missing_index_is_a_clear_error(tmp_path):
    r = cli("sessions", "list", "--data-dir", str(tmp_path / "nope"))
    assert r.exit_code == 1
    assert "no session index" in r.stderr and "--data-dir" in r.stderr


def test_verify_and_tamper(tmp_path):
    rec = Recorder.open(tmp_path)
    s = rec.start_session(principal=Principal(subject="x"), client="c", target="t", login="l")
    ch = s.open_channel("exec", command="id")
    ch.output(b"uid=0(root)\n")
    ch.close(exit_status=0)
    s.close()
    rec.close()
    ok = cli("verify", "--data-dir", str(tmp_path))
    assert ok.exit_code == 0 and "ok: 2 rows and 1 recordings verified" in ok.stdout
    ch.path.write_bytes(ch.path.read_bytes().replace(b"uid=0", b"uid=1"))
    bad = cli("verify", "--data-dir", str(tmp_path))
    assert bad.exit_code == sessions_cli.VERIFY_FAILED
    rel = str(ch.path.relative_to(tmp_path))
    assert "first break" in bad.stderr and rel in bad.stderr
    as_json = json.loads(cli("verify", "--data-dir", str(tmp_path), "--json").stdout)
    assert as_json["ok"] is False and as_json["first_break"]["path"] == rel


def test_prune_cli(tmp_path):
    rec = Recorder.open(tmp_path)
    rec.refused(principal=None, client="c", target="t", login="l", reason="probe")
    rec.close()
    refused = cli("prune", "--older-than", "0.001s", "--data-dir", str(tmp_path))
    assert refused.exit_code == 1 and "--yes" in refused.stderr
    bad = cli("prune", "--older-than", "ninety", "--data-dir", str(tmp_path), "--yes")
    assert bad.exit_code == 1 and "not a duration" in bad.stderr
    done = cli("prune", "--older-than", "0.001s", "--data-dir", str(tmp_path), "--yes", "--json")
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["sessions"] == 1
    assert query.list_sessions(query.open_index(tmp_path)) == []
    assert cli("verify", "--data-dir", str(tmp_path)).exit_code == 0


def test_every_command_has_an_example():
    for args in (["sessions", "list"], ["sessions", "show"], ["sessions", "play"], ["sessions", "export"],
                 ["commands", "search"], ["verify"], ["prune"]):
        result = cli(*args, "--help")
        assert result.exit_code == 0
        assert "Example: bastion " + " ".join(args) in result.stdout, args
        assert "--json" in result.stdout


def test_runs_as_a_real_process(data):
    code = ("import typer, sys; from bastion.cli import sessions; app = typer.Typer(); "
            "sessions.register(app); app()")
    out = subprocess.run([sys.executable, "-c", code, "sessions", "play", str(data["s1"]), "--idle-limit", "0"],
                         env={"BASTION_DATA_DIR": str(data["path"]), "PATH": "/usr/bin:/bin"},
                         capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert b"up 3 days" in out.stdout and b"\x1b]52" not in out.stdout
