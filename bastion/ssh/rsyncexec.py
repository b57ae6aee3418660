"""rsync over exec, decided as a file transfer: the session side of :mod:`bastion.transfer.rsync`.

An exec command that is an rsync server (``rsync --server ...``, what the rsync client
runs through ``-e ssh``) does not go to the command policy.  Instead, in order:

1. it is parsed strictly (:func:`bastion.transfer.rsync.parse`); anything outside the
   allowlist is denied (rule ``<rsync>``) with a message that names sftp;
2. its paths are resolved on the target (:class:`bastion.ssh.upresolve.Resolver`:
   ``~`` and relative paths under the user's home, symlinks followed, a new name under
   its parent's realpath);
3. each path is decided: a pull (``--sender``) *reads* a file, or a directory's whole
   tree; a push *writes* the destination's whole tree
   (:func:`bastion.transfer.decide.decide_tree`).  A deny wins, then a review, and the
   command is allowed only when every path is;
4. the command row carries that decision, the ``transfers`` index a row per path (at once
   when refused, when the channel ends otherwise, with the bytes both ways and the exit
   status), and what runs upstream is the command rebuilt with the *resolved* paths,
   every word quoted (:meth:`bastion.transfer.rsync.RsyncCall.command`).

A review decision is held like any exec command; once approved, :func:`recheck` resolves
and decides again before anything runs (a symlink swapped in during the hold is refused).

Not covered: which files rsync moves inside its protocol (rsync, not the bastion, walks
the tree), a terminal (rsync with a pty is refused).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import asyncssh

from bastion.errors import BastionError
from bastion.policy import Action, Decision
from bastion.recording.transfers import TransferRow, record_transfer
from bastion.transfer.decide import READS, WRITES, Verdict, decide, decide_tree
from bastion.transfer.rsync import ALTERNATIVE, RsyncCall, RsyncRefused, from_home, parse

log = logging.getLogger("bastion.session")

RULE = "<rsync>"


@dataclass
class Plan:
    """One rsync command, resolved and decided."""

    call: RsyncCall
    resolved: tuple[str, ...]
    verdicts: tuple[Verdict, ...]
    decision: Any
    started: float = field(default_factory=time.time)
    t0: float = field(default_factory=time.monotonic)

    @property
    def command(self) -> str:
        shown = tuple(r + "/" if p.endswith("/") and r != "/" else r
                      for p, r in zip(self.call.paths, self.resolved, strict=True))
        return self.call.command(shown)


def recognised(command: str) -> bool:
    """Is ``command`` an rsync server (accepted or not)?"""
    try:
        return parse(command) is not None
    except RsyncRefused:
        return True


def _refused(why: str) -> Decision:
    return Decision(Action.DENY, RULE, why)


async def plan(ctx: Any, command: str, *, pty: bool) -> tuple[Decision, Plan | None]:
    """Parse, resolve and decide ``command``; the Decision, and the Plan when it parsed."""
    services = ctx.services
    try:
        call = parse(command)
    except RsyncRefused as exc:
        return _refused(str(exc)), None
    assert call is not None
    if pty:
        return _refused(f"rsync through the bastion runs without a terminal; {ALTERNATIVE}"), None
    why = services.token_expired(ctx.principal)
    if why:
        return Decision(Action.DENY, "<expired>", why), None
    from bastion.ssh.upresolve import DanglingLink, Resolver
    try:
        async with Resolver(services, ctx.target) as r:
            resolved = []
            verdicts = []
            for path in call.paths:
                p = from_home(path, r.home)
                if call.sender:
                    real = await r.real(p) or p
                    kind = await r.is_dir(real)
                else:
                    real, kind = await r.landing(p), True
                resolved.append(real)
                verdicts.append(_verdict(ctx, call, real, r.home, tree=kind is not False))
    except DanglingLink as exc:
        return _refused(f"rsync: {exc} is a symlink to a missing file; writing through it "
                        "is refused (remove it or use the real path)"), None
    except asyncssh.SFTPError as exc:     # e.g. a path over the target's PATH_MAX: not decided
        return _refused(f"rsync: the target could not resolve its paths: {exc.reason}"), None
    result = _combine(verdicts)
    return result, Plan(call, tuple(resolved), tuple(verdicts), result)


def _verdict(ctx: Any, call: RsyncCall, path: str, home: str, *, tree: bool) -> Verdict:
    policy = ctx.services.config.policy
    effect = READS if call.sender else WRITES
    if tree:
        return decide_tree(policy, ctx.principal, ctx.target, effect, path, home=home,
                           what=call.op)
    return decide(policy, ctx.principal, ctx.target, effect, path, home=home, what=call.op)


def _combine(verdicts: list[Verdict]) -> Decision:
    for action in ("deny", "review"):
        for v in verdicts:
            if not v.allowed and v.action == action:
                reason = v.reason
                if action == "deny" and v.rule != "<default>":
                    reason += " (rsync is decided as a whole tree; sftp decides file by file)"
                return Decision(Action(action), v.rule, reason)
    for v in verdicts:
        if not v.allowed:            # the default: deny or review, as it said
            return Decision(Action(v.action), v.rule, v.reason)
    first = verdicts[0]
    return Decision(Action.ALLOW, first.rule, "; ".join(v.reason for v in verdicts))


def record_refused(rec: Any, command: str, decision: Decision, p: Plan | None) -> None:
    """The transfers rows of an rsync command that does not run (refused or not approved)."""
    op = p.call.op if p is not None else "rsync"
    paths = p.resolved if p is not None else (None,)
    for path in paths:
        record_transfer(rec, TransferRow(op, path, "denied", decision.action.value,
                                         decision.rule, decision.reason, started=time.time()))


def record_ran(rec: Any, p: Plan, status: int | None, *, ran: bool = True) -> None:
    """The transfers rows of an rsync command when its channel ends (``ran``: it reached
    the target; otherwise the agent left during the hold, or the target was unreachable)."""
    if not ran:
        result = "not run"
    else:
        result = "ok" if status == 0 else f"error: exit status {status}"
    d = p.decision
    for path in p.resolved:
        record_transfer(rec, TransferRow(p.call.op, path, result, d.action.value, d.rule,
                                         d.reason, nbytes=rec.bytes_in + rec.bytes_out,
                                         started=p.started,
                                         duration=time.monotonic() - p.t0))


async def recheck(ctx: Any, p: Plan, command: str) -> tuple[Decision, Plan | None]:
    """After a hold: resolve and decide again.  Refused unless it is still the same paths
    with the same decision (allowed or review, as approved)."""
    again, fresh = await plan(ctx, command, pty=False)
    if fresh is None:
        return again, None
    if fresh.resolved != p.resolved:
        why = (f"a path resolved differently after the approval ({', '.join(p.resolved)} "
               f"became {', '.join(fresh.resolved)}); nothing ran")
        return _refused(why), fresh
    if again.action is Action.REVIEW and again.rule != p.decision.rule:
        return _refused(f"after the approval another rule holds it ({again.rule}): "
                        f"{again.reason}; nothing ran"), fresh
    return again, fresh


def describe(exc: BaseException) -> str:
    if isinstance(exc, BastionError):
        return str(exc)
    return f"internal error ({type(exc).__name__})"


# -- the InnerSession side (kept here so that bastion.ssh.session stays small) --------------
async def decide_in(s: Any, command: str) -> None:
    """Decide the rsync ``command`` of the InnerSession ``s`` and tell its core."""
    from bastion.errors import RecordingError
    from bastion.ssh.masking import masked_decision
    services = s.ctx.services
    try:
        decision, p = await plan(s.ctx, command, pty=bool(s.term_type))
    except BastionError as exc:
        log.warning("session %s: rsync paths could not be resolved: %s", s.ctx.where, exc)
        s._apply(s.core.error(str(exc)))
        return
    services._log_decision(s.ctx, command, "exec", decision)
    s._decision = decision
    try:
        s._command_id = s.rec.command(services.mask(command),
                                      masked_decision(decision, services.detectors))
        if decision.action is Action.DENY or p is None:
            record_refused(s.rec, command, decision, p)
        else:
            s._rsync = p
            s.command = p.command
    except RecordingError as exc:
        s._recording_failed(exc)
        return
    action = decision.action.value if p is not None else "deny"
    message = s._decision_message(decision) if action == "deny" else ""
    s._apply(s.core.decided(action, message))


async def reviewed_in(s: Any, command: str, approved: bool, why: str) -> str | None:
    """After the review of the rsync held in ``s``: None if it may run as decided, else why
    not (recorded).  Not approved (``why``): its rows say so and nothing runs."""
    p: Plan = s._rsync
    if not approved:
        s._rsync = None
        record_refused(s.rec, command, Decision(Action.REVIEW, p.decision.rule, why), p)
        return None
    try:
        again, fresh = await recheck(s.ctx, p, command)
    except BastionError as exc:
        return f"bastion: {exc}"
    if again.action is Action.DENY:
        s._rsync = None
        record_refused(s.rec, command, again, fresh or p)
        s.rec.marker(f"refused after the approval: {again.reason}")
        message: str = s._decision_message(again)
        return message
    return None


def ended_in(s: Any, status: int | None) -> None:
    """The channel of an rsync that ran ends: its transfers rows."""
    p, s._rsync = s._rsync, None
    if p is None or s.rec is None or s.rec.closed:
        return
    from bastion.errors import RecordingError
    try:
        record_ran(s.rec, p, status, ran=s.up_chan is not None)
    except RecordingError as exc:
        log.error("session %s: rsync rows not recorded: %s", s.ctx.where, exc)
