"""Sessions made with the real Recorder, for the store tests (test_store_pg, test_store_import)."""

from __future__ import annotations

from bastion.identity.principal import Principal
from bastion.policy import Action, Decision
from bastion.recording import Recorder

AGENT = Principal(subject="oid-agent", name="bot")


def record_session(rec: Recorder, target: str, lines: list[str]) -> int:
    """One closed session with one exec channel: each line a command (denied if it has "rm",
    else allowed), its output and exit status 0.  Its id."""
    s = rec.start_session(principal=AGENT, client="127.0.0.1:1", target=target, login="deploy")
    ch = s.open_channel("exec", command=lines[0])
    for line in lines:
        cid = ch.command(line, Decision(Action.ALLOW if "rm" not in line else Action.DENY, "r",
                                        "why"))
        ch.output(f"output of {line}\n".encode())
        ch.command_result(cid, 0)
    ch.close(exit_status=0)
    s.close()
    rec.flush()
    return s.id
