"""CLI: ``bastion status`` -- is the bastion recording, and if not, why and since when.

One library call (:func:`bastion.recording.status.collect`: the running ``bastion serve``
answers on ``DATA_DIR/status.sock``) plus rendering.  Runs beside ``bastion serve`` as the
same user (the data dir is private to it).

Exit codes: 0 sessions are being recorded, 3 ``bastion serve`` runs but refuses sessions
(recording failed or is recovering), 4 no ``bastion serve`` answers for this data dir,
1 error.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import typer
from rich.table import Table
from rich.text import Text

from bastion.cli.common import DEFAULT_DATA_DIR, DataDirOpt, JsonOpt, handle_errors, out_console
from bastion.config.digest import short
from bastion.proto.sanitize import sanitize

EXIT_REFUSING = 3
EXIT_NOT_RUNNING = 4


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _ago(ts: float | None) -> str:
    if not ts:
        return "-"
    seconds = max(0.0, time.time() - float(ts))
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(float(ts)))
    if seconds < 120:
        return f"{when}Z ({seconds:.0f} s ago)"
    return f"{when}Z ({seconds / 60:.0f} min ago)"


def _recorder_text(serve: dict[str, Any]) -> Text:
    state = serve.get("state")
    if state == "ok":
        text = Text("recording", style="green")
        text.append(f"  worker pid {serve.get('worker_pid') or '?'}")
        return text
    text = Text("REFUSING SESSIONS", style="bold red")
    text.append(f" ({state})")
    if serve.get("error"):
        text.append(f"\nsince {_ago(serve.get('fault_since'))}: {serve['error']}")
    if serve.get("last_attempt_error"):
        text.append(f"\nattempt {serve.get('attempts')} failed: {serve['last_attempt_error']}")
    if serve.get("next_attempt_in") is not None:
        text.append(f"\nnext attempt in {serve['next_attempt_in']:.1f} s")
    return text


def _history_text(serve: dict[str, Any]) -> Text:
    text = Text(f"{serve.get('failures', 0)} failure(s), {serve.get('recoveries', 0)} "
                f"recoveries since start")
    last = serve.get("last_failure")
    if last:
        text.append(f"\nlast failure {_ago(last.get('at'))}: {last.get('error')}")
    rec = serve.get("last_recovery")
    if rec:
        text.append(f"\nlast recovery {_ago(rec.get('at'))}: after {rec.get('attempts')} "
                    f"attempt(s), {rec.get('seconds', 0):.1f} s")
    if serve.get("quarantined"):
        text.append(f"\n{serve['quarantined']} operation(s) the index refused kept aside in "
                    "DATA_DIR/quarantine (see the log)", style="red")
    return text


def _disk_text(disk: dict[str, Any]) -> Text:
    free, needed = disk.get("free_bytes"), disk.get("needed_bytes")
    low = free is not None and needed is not None and free < needed
    text = Text(f"{_size(free)} free", style="red" if low else "")
    text.append(f" (sessions need {_size(needed)})")
    if disk.get("free_inodes") is not None:
        text.append(f", {disk['free_inodes']} inodes free")
    reserve = disk.get("reserve_bytes") or 0
    text.append(f"\nreserve {_size(reserve)} in place" if reserve else
                "\nreserve released (used to close channels when the disk filled)",
                style="" if reserve else "yellow")
    return text


def _store_text(info: dict[str, Any]) -> Text:
    """Where the index lives (never a password), and why it could not be read if so."""
    text = Text(info.get("store") or "?")
    index = info.get("index") or {}
    if index.get("error"):
        text.append(f"\nnot readable from here: {index['error']}", style="red")
    versions = index.get("schema") or {}
    if (versions.get("store") or 0) > (versions.get("bastion") or 0):
        text.append(f"\nschema {versions['store']}, newer than this bastion's "
                    f"({versions['bastion']}): another node was upgraded; upgrade this one "
                    "(docs/SCALING.md, 'Upgrading the nodes one at a time')", style="yellow")
    return text


def _policy_text(serve: dict[str, Any], workers: dict[str, Any]) -> Text | None:
    """The policy in force: its digest, when it was loaded, a reload it refused since, and
    whether the workers of ``serve --workers N`` differ."""
    policy = serve.get("policy")
    if not policy:
        return None                       # a serve of an earlier release
    text = Text(short(policy.get("digest")))
    text.append(f" loaded {_ago(policy.get('loaded'))} from {sanitize(policy.get('path') or '?')}")
    if policy.get("refused"):
        text.append(f"\nreload refused {_ago(policy.get('refused_at'))}: "
                    f"{sanitize(policy['refused'])}\nthe policy above stays in force: fix the "
                    "file (`bastion policy check`), then send bastion serve SIGHUP", style="red")
    digests = _worker_digests(workers)
    if len(digests) > 1:
        text.append(f"\nthe workers enforce {len(digests)} different policies (each worker's is "
                    f"on its line): send bastion serve (pid {serve.get('pid')}) SIGHUP",
                    style="red")
    return text


def _worker_digests(workers: dict[str, Any]) -> set[str | None]:
    """The policy digests the answering workers of ``serve --workers N`` enforce."""
    return {(a.get("policy") or {}).get("digest") for a in workers.values() if a}


def _peers_text(peers: dict[str, Any]) -> Text:
    """How the live nodes of a shared store compare with this one (bastion.recording.nodeconfig)."""
    live = peers.get("live_peers") or []
    if not peers.get("published"):
        return Text("this node has not published its policy digest to the store (see its log)",
                    style="yellow")
    if not peers.get("differ"):
        return Text(f"{len(live)} live node(s), the same policy, host CA and host key"
                    if live else "no other live node")
    text = Text("\n".join(sanitize(line) for line in peers["differ"]), style="red")
    for hint in peers.get("hints") or []:
        text.append(f"\n{hint}")
    return text


def _worker_text(answer: dict[str, Any] | None, show_policy: bool = False) -> Text:
    if answer is None:
        return Text("not answering (being restarted?)", style="red")
    text = _recorder_text(answer)
    text.append(f"  pid {answer.get('pid')}, {answer.get('sessions_open', 0)} session(s) open")
    if show_policy:
        text.append(f", policy {short((answer.get('policy') or {}).get('digest'))}")
    return text


def status_cmd(data_dir: DataDirOpt = Path(DEFAULT_DATA_DIR), as_json: JsonOpt = False) -> None:
    """Show whether sessions are being recorded; if not, why and since when.

    Asks the bastion serve that records into the data dir (over
    DATA_DIR/status.sock: it answers while the disk is full) and measures
    the disk itself.

    recorder: "recording", or REFUSING SESSIONS and the cause: a write
    failed (disk full, I/O error), the index was locked past 10 s, the
    recording worker crashed.  Meanwhile every new session is refused and
    bastion retries by itself: a new recording worker after 0.5 s, then
    doubling up to 10 s between attempts.  Sessions are accepted again as
    soon as one passes its probe; no restart is needed.

    sessions: open now, and their channels (summed over the workers of
    `serve --workers N`, each of which is also shown on its own line).
    index lag: age, count and size of what is not yet written and committed
    (it grows while the index is locked or the disk is slow).
    policy: the digest of the policy in force (the same on every node and
    worker: `bastion policy check` prints a file's), when it was loaded,
    and a reload refused since (the previous policy stays in force).
    store: the SQLite index in the data dir, or the PostgreSQL store's URL
    (never its password) and this node's name; an error if it cannot be
    read from here.
    peers (PostgreSQL): the other live nodes, and any whose policy, host CA
    or host key differs from this node's.
    disk: free space of the data dir's file system against what sessions
    need, and whether the 4 MB reserve (kept to close the channels when
    the disk fills) is in place.

    Exit status: 0 recording, 3 refusing sessions, 4 no bastion serve
    answers for this data dir.

    Example: bastion status --data-dir /var/lib/bastion
    """
    _status(data_dir, as_json)


@handle_errors
def _status(data_dir: Path, as_json: bool) -> None:
    from bastion.recording.status import collect
    info = collect(data_dir)
    serve = info["serve"]
    code = 0 if serve is not None and serve.get("state") == "ok" else (
        EXIT_REFUSING if serve is not None else EXIT_NOT_RUNNING)
    if as_json:
        sys.stdout.write(json.dumps(info, ensure_ascii=True, indent=2, default=str) + "\n")
        raise typer.Exit(code)
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    if serve is None:
        table.add_row("bastion serve", Text(f"not running for {data_dir} (nothing answers on "
                                            f"its status socket)", style="red"))
        index = info.get("index") or {}
        if index.get("active_sessions"):
            table.add_row("index", f"{index['active_sessions']} session(s) left active: the "
                                   f"next start marks them interrupted")
    else:
        table.add_row("bastion serve", f"pid {serve.get('pid')}")
        table.add_row("recorder", _recorder_text(serve))
        table.add_row("sessions", f"{serve.get('sessions_open', 0)} open, "
                                  f"{serve.get('channels_open', 0)} channel(s)")
        table.add_row("index lag", f"{serve.get('index_lag_s', 0):.3f} s "
                                   f"({serve.get('queue_ops', 0)} operation(s), "
                                   f"{_size(serve.get('queue_bytes'))} not yet written)")
        table.add_row("history", _history_text(serve))
        workers = info.get("workers") or {}
        policy = _policy_text(serve, workers)
        if policy is not None:
            table.add_row("policy", policy)
        apart = len(_worker_digests(workers)) > 1
        for index, answer in workers.items():     # serve --workers N
            table.add_row(f"worker {index}", _worker_text(answer, show_policy=apart))
    table.add_row("store", _store_text(info))
    peers = (info.get("index") or {}).get("peers")
    if peers is not None:
        table.add_row("peers", _peers_text(peers))
    if info["disk"].get("free_bytes") is not None:
        table.add_row("disk", _disk_text(info["disk"]))
    out_console.print(table)
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.command("status")(status_cmd)
