"""The soak's verdict (bench/soak.py): what the agents received against what was recorded.

Every command's received stdout is compared with the stdout stream of its channel's
recording.  Exec channels are found by their exact command text (it holds the command's
nonce) and compared byte for byte: the recording must start with the bytes the agent got.
A mediated shell's recording is the bastion's own rendition of the terminal (prompt and
line as decided, not the editor's redraws), so for ``ssh -tt`` shells only the commands'
output lines (``NONCE N``) are compared, in order; the shell's channel is found through
the ``commands`` rows of its lines.

"Lost" is what an agent received beyond what its channel's recording holds, summed per
channel.  It must be 0, except for a channel open at a ``kill -9`` of the bastion and its
worker: docs/RECORDINGS.md allows the masker's undecided hold-back there (``KILL_BOUND``
per stream).  A command that exited 0 must have received exactly its expected output, and
an exec channel's row must then be ``closed`` and sealed with the same bytes recorded.
After the bastion's SIGTERM no row may be left ``open``/``active``.

The rows are read through the store seam (bastion.recording.schema / bastion.store), so the
verdict is the same on the SQLite index and on a PostgreSQL store (``BASTION_TEST_STORE``).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from bastion.recording import player

if TYPE_CHECKING:
    from bench.soak import Command, Soak, SoakRig

#: docs/RECORDINGS.md, "bastion and worker killed together": nothing, since the tail journal
#: keeps what the maskers held undecided (before it: the hold-back, 1,027 B per stream)
KILL_BOUND = 0


def output_lines(nonce: str) -> bytes:
    """The lines a command prints (``NONCE [ab]N`` and a line end), not its echo or prompt.

    No other text holds a nonce followed by a space and a number: nonces are ``aIkJ``, so
    none is a suffix of another, and the echoed command line has ``NONCE %g`` in it."""
    return nonce.encode() + rb" [ab]?\d+\r?\n"


def _reader(rig: SoakRig) -> Any:
    """The rig's index, read-only: its SQLite file, or its PostgreSQL store (rig.store_env)."""
    if rig.store_env:
        from bastion.store import location, pgconn
        settings = location.check(rig.store_env["BASTION_STORE_URL"],
                                  rig.store_env.get("BASTION_STORE_PASSWORD_FILE"),
                                  "soak-verdict", "the soak rig's store")
        return pgconn.connect(settings, readonly=True)
    from bastion.recording import schema
    return schema.connect(rig.data_dir, readonly=True)


def _rows(rig: SoakRig, sql: str) -> list[dict[str, Any]]:
    conn = _reader(rig)
    try:
        return [dict(zip(r.keys(), r)) for r in conn.execute(sql)]
    finally:
        conn.close()


def _first_ok_after(commands: list[Command], t: float) -> float | None:
    ends = [c.t1 for c in commands if c.t0 >= t and c.rc == 0 and c.out == c.expected]
    return min(ends) - t if ends else None


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 2)


def _count_command(r: dict[str, Any], c: Command) -> None:
    r["attempted"] += 1
    if c.rc == 0 and c.out == c.expected:
        r["succeeded"] += 1
    elif c.rc == 0 or (c.out and not c.expected.startswith(c.out)):
        r["wrong_output"] += 1
        r["problems"].append(f"{c.nonce}: exit {c.rc} with {len(c.out)} B that are not (a "
                             f"beginning of) the {len(c.expected)} B it prints")
    elif c.out:
        r["cut"] += 1
    else:
        r["refused"] += 1


def analyse(soak: Soak, rig: SoakRig) -> dict[str, Any]:
    """Compare what every agent received with its channel's recording (module doc)."""
    channels = _rows(rig, "SELECT * FROM channels")
    by_id = {row["id"]: row for row in channels}
    by_command: dict[str, list[dict[str, Any]]] = {}
    for row in channels:
        by_command.setdefault(row["command"] or "", []).append(row)
    by_line: dict[str, int] = {}
    for row in _rows(rig, "SELECT line, channel_id FROM commands"):
        by_line.setdefault(row["line"], row["channel_id"])
    kill_times = [k["t"] for k in soak.kills]
    r: dict[str, Any] = {
        "attempted": 0, "succeeded": 0, "refused": 0, "cut": 0, "wrong_output": 0,
        "delivered_bytes": 0, "recorded_bytes": 0, "recorded_not_shown": 0, "lost_bytes": 0, "lost_beyond_bound": 0,
        "worst_lost_at_kill": 0, "worst_lost_elsewhere": 0, "channels_open_at_kill": 0,
        "not_a_prefix": 0, "unmatched": 0, "ok_not_sealed": 0, "problems": [],
        "by_kind": {}}
    # one unit per channel: its commands (one for exec, several for a shell)
    units: dict[str, list[Command]] = {}
    for c in soak.commands:
        if c.rc is None:
            continue
        _count_command(r, c)
        kind = r["by_kind"].setdefault(c.via, {"attempted": 0, "succeeded": 0})
        kind["attempted"] += 1
        kind["succeeded"] += c.rc == 0 and c.out == c.expected
        units.setdefault(c.shell or c.nonce, []).append(c)
    recordings: dict[int, bytes] = {}
    for key, cmds in units.items():
        shell = cmds[0].via == "shell"
        if shell:
            ids = {by_line[c.text] for c in cmds if by_line.get(c.text)}
        else:
            ids = {row["id"] for row in by_command.get(cmds[0].text, [])}
        delivered = sum(len(c.out) for c in cmds)
        if not ids:
            if delivered:
                r["unmatched"] += 1
                r["lost_bytes"] += delivered
                r["lost_beyond_bound"] += delivered
                r["problems"].append(f"{key}: {delivered} B received, no channel recorded")
            continue
        if len(ids) > 1:
            r["problems"].append(f"{key}: {len(ids)} channels for one unit: {sorted(ids)}")
        row = by_id[min(ids)]
        if row["id"] not in recordings:
            recordings[row["id"]] = b""
            if row["path"]:
                try:
                    events = player.load(rig.data_dir / row["path"])[1]
                    recordings[row["id"]] = player.stream_bytes(events, "stdout")
                except (OSError, ValueError) as exc:
                    r["problems"].append(f"{key}: channel {row['id']} unreadable: {exc}")
        stream = recordings[row["id"]]
        t0, t1 = min(c.t0 for c in cmds), max(max(c.t1, c.open_until) for c in cmds)
        at_kill = any(t0 < t < t1 for t in kill_times)
        lost = 0
        for c in cmds:
            recorded = (b"".join(re.findall(output_lines(c.nonce), stream)) if shell else stream)
            n = min(len(recorded), len(c.out))
            r["recorded_bytes"] += len(recorded)
            r["recorded_not_shown"] += max(0, len(recorded) - len(c.out))
            if recorded[:n] != c.out[:n]:
                r["not_a_prefix"] += 1
                r["problems"].append(f"{c.nonce}: channel {row['id']}: recorded and received "
                                     f"bytes differ within the first {n} B")
            lost += max(0, len(c.out) - len(recorded))
            if (not shell and c.rc == 0 and c.out == c.expected
                    and (row["status"] != "closed" or row["seq"] is None or recorded != c.out)):
                r["ok_not_sealed"] += 1
                r["problems"].append(f"{c.nonce}: exit 0 but channel {row['id']} is "
                                     f"{row['status']}, seq {row['seq']}, {len(recorded)} B")
        bound = KILL_BOUND if at_kill else 0
        r["delivered_bytes"] += delivered
        r["lost_bytes"] += lost
        r["lost_beyond_bound"] += max(0, lost - bound)
        r["channels_open_at_kill"] += at_kill
        worst = "worst_lost_at_kill" if at_kill else "worst_lost_elsewhere"
        r[worst] = max(r[worst], lost)
        if lost > bound:
            r["problems"].append(f"{key}: channel {row['id']} ({row['status']}): {lost} B "
                                 f"received but not recorded (bound {bound} B)")
    r["sessions"] = {s["status"]: s["n"] for s in _rows(
        rig, "SELECT status, count(*) AS n FROM sessions GROUP BY status")}
    r["channels"] = {}
    for row in channels:
        r["channels"][row["status"]] = r["channels"].get(row["status"], 0) + 1
    r["left_open"] = r["sessions"].get("active", 0) + r["channels"].get("open", 0)
    r["logins_failed"] = soak.logins_failed
    r["restarts"] = len(soak.kills)
    r["kills"] = [{"at_s": k["at_s"], "listening_s": round(k["listening_s"], 2),
                   "failed_starts": k["failed_starts"],
                   "first_ok_s": _round(_first_ok_after(soak.commands, k["t"]))}
                  for k in soak.kills]
    if soak.disk.get("t_fill"):
        t_fill, t_free = soak.disk["t_fill"], soak.disk.get("t_free", float("inf"))
        during = [c for c in soak.commands if c.rc is not None and t_fill <= c.t0 < t_free]
        r["disk_full"] = {
            "at_s": soak.disk["at_s"], "for_s": round(t_free - t_fill, 1),
            "filling_s": soak.disk["filling_s"],
            "commands_started": len(during),
            "refused": sum(1 for c in during if c.rc != 0 and not c.out),
            "succeeded": sum(1 for c in during if c.rc == 0 and c.out == c.expected),
            "status_ok_s": _round(soak.disk.get("status_ok_s")),
            "first_ok_s": _round(_first_ok_after(soak.commands, t_free))}
    else:
        r["disk_full"] = soak.disk.get("skipped", "not run")
    text = rig.log()
    r["bastion_log"] = {
        "recording_failed": text.count("recording failed:"),
        "recovered": re.findall(r"recording recovered after (\d+ attempt\(s\), [\d.]+ s)", text),
        "tracebacks": text.count("Traceback"),
        "token_in_log": bool(rig.token) and rig.token in text}
    r["token_in_index"] = rig.token.encode() in rig.index_bytes()   # the WAL or every PG row
    return r


def verdict(r: dict[str, Any]) -> list[str]:
    """What did not hold; empty when the soak passed."""
    bad = [f"{key} = {r[key]}" for key in ("lost_beyond_bound", "not_a_prefix", "unmatched",
                                           "wrong_output", "ok_not_sealed", "left_open")
           if r[key]]
    if r["verify"]["rc"] != 0:
        bad.append(f"bastion verify failed ({r['verify']['rc']}): {r['verify']['out']}")
    if not r["succeeded"]:
        bad.append("no command succeeded")
    for k in r["kills"]:
        if k["first_ok_s"] is None:
            bad.append(f"no command succeeded after the kill at {k['at_s']} s")
    if isinstance(r["disk_full"], dict) and r["disk_full"]["first_ok_s"] is None:
        bad.append("no command succeeded after the disk was freed")
    if r["bastion_log"]["token_in_log"] or r["token_in_index"]:
        bad.append("the token reached the log or the index")
    return bad


def summary(r: dict[str, Any]) -> str:
    disk = r["disk_full"]
    kinds = ", ".join(f"{k} {v['succeeded']}/{v['attempted']}" for k, v in sorted(r["by_kind"].items()))
    lines = [
        f"soak: {r['agents']} agents, {r['minutes'] * 60:.0f} s, {r['restarts']} kill -9 + "
        f"restart, disk full: {disk if isinstance(disk, str) else str(disk['for_s']) + ' s'}",
        f"  commands: {r['attempted']} attempted, {r['succeeded']} succeeded ({kinds}), "
        f"{r['refused']} refused (nothing received), {r['cut']} cut short, "
        f"{r['wrong_output']} wrong output; {r['logins_failed']} logins failed",
        f"  bytes: {r['delivered_bytes']:,} delivered to agents, {r['recorded_bytes']:,} recorded "
        f"for them ({r['recorded_not_shown']:,} of them never shown: stopped channels); "
        f"lost {r['lost_bytes']:,} (beyond the documented bound: "
        f"{r['lost_beyond_bound']:,}); worst per channel: {r['worst_lost_at_kill']} B open at a "
        f"kill -9 (bound {KILL_BOUND}), {r['worst_lost_elsewhere']} B otherwise (bound 0)",
        f"  channels open at a kill: {r['channels_open_at_kill']}; sessions {r['sessions']}; "
        f"channels {r['channels']}",
    ]
    for k in r["kills"]:
        lines.append(f"  kill at {k['at_s']:g} s: listening again after {k['listening_s']} s "
                     f"({k['failed_starts']} failed starts), first command succeeded "
                     f"{k['first_ok_s']} s after the kill")
    if isinstance(disk, dict):
        lines.append(f"  disk full at {disk['at_s']:g} s (filling took {disk['filling_s']} s) "
                     f"for {disk['for_s']} s: "
                     f"{disk['commands_started']} commands started, {disk['refused']} refused, "
                     f"{disk['succeeded']} succeeded; `bastion status` ok {disk['status_ok_s']} s "
                     f"after freeing, first command succeeded {disk['first_ok_s']} s after")
    lines.append(f"  bastion log: {r['bastion_log']}")
    lines.append(f"  bastion verify: exit {r['verify']['rc']}: {r['verify']['out']}")
    lines.append("  " + ("PASS" if not r["failures"] else "FAIL: " + "; ".join(r["failures"])))
    lines += [f"    {p}" for p in r["problems"][:20]]
    return "\n".join(lines)
