"""Rich renderings of approval requests for ``bastion approvals list`` and ``watch``.

Everything that came from an agent, a token or an approver (command lines, the
simple commands, names, reasons, targets) goes through
:func:`bastion.proto.sanitize.sanitize` into rich ``Text`` (never markup), and
cells fold instead of truncating: a line that tries to hide part of itself with
escape sequences is shown in full, inert.  No IO here.
"""

from __future__ import annotations

import datetime as _dt

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from bastion.approvals.model import APPROVED, PENDING, ApprovalRecord, command_summary
from bastion.proto.sanitize import sanitize

_STATUS_STYLE = {APPROVED: "green", PENDING: "yellow", "denied": "red", "expired": "dim",
                 "cancelled": "dim"}


def t(value) -> Text:
    """A cell from untrusted text: sanitised, never markup."""
    return Text(sanitize("" if value is None else str(value)))


def when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def left(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds}s"


def commands_text(record: ApprovalRecord) -> Text:
    lines = [sanitize(command_summary(c)) for c in record.commands] or ["-"]
    return Text("\n".join(lines))


def _where(record: ApprovalRecord) -> Text:
    return t(f"{record.login or '?'}@{record.target}" + (f" ({record.channel})"
                                                         if record.channel else ""))


def _state(record: ApprovalRecord, now: float) -> Text:
    if record.status == PENDING:
        if record.expires <= now:
            return Text("expiring", style="dim")
        return Text(f"{left(record.expires - now)} left", style="yellow")
    text = Text(record.status, style=_STATUS_STYLE.get(record.status, ""))
    text.append(f" ({record.via or '-'})", style="dim")
    if record.window_until and record.window_until > now and record.revoked is None \
            and record.via == "approver":
        text.append(f"\nwindow {left(record.window_until - now)} left", style="cyan")
    return text


def requests_table(records: list[ApprovalRecord], *, now: float, title: str,
                   answers: bool = False) -> Table:
    table = Table(title=title, title_justify="left", show_lines=True, expand=True)
    table.add_column("id", no_wrap=True)
    table.add_column("requester", overflow="fold", ratio=2)
    table.add_column("target", overflow="fold", ratio=2)
    table.add_column("command line", overflow="fold", ratio=5)
    table.add_column("commands found", overflow="fold", ratio=4)
    table.add_column("rule", overflow="fold", ratio=2)
    table.add_column("state" if answers else "time left", overflow="fold", ratio=2)
    if answers:
        table.add_column("answer", overflow="fold", ratio=3)
    for r in records:
        row = [str(r.id), t(r.requester_label), _where(r), t(r.line), commands_text(r),
               t(r.rule or "-"), _state(r, now)]
        if answers:
            answer = Text()
            if r.approver_label:
                answer.append(sanitize(r.approver_label))
                answer.append(": ")
            answer.append(sanitize(r.answer_reason or "-"))
            if r.revoked is not None:
                answer.append(f"\nwindow revoked by {sanitize(r.revoked_by or '?')}", style="dim")
            if r.refused is not None:
                answer.append(f"\nrefused by the bastion: {sanitize(r.refused_reason or '?')}",
                              style="bold red")
            row.append(answer)
        table.add_row(*row)
    return table


def detail(record: ApprovalRecord, *, now: float) -> Table:
    """Every field of one request, for the approver's prompt."""
    table = Table(show_header=False, box=None, pad_edge=False, expand=True)
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    table.add_row("request", str(record.id))
    table.add_row("requester", t(record.requester_label))
    if record.requester_app_id:
        table.add_row("app id", t(record.requester_app_id))
    table.add_row("target", _where(record))
    table.add_row("command line", t(record.line))
    table.add_row("commands found", commands_text(record))
    table.add_row("rule", t(record.rule or "-"))
    table.add_row("policy reason", t(record.decision_reason or "-"))
    table.add_row("session", "-" if record.session_id is None else str(record.session_id))
    table.add_row("asked", when(record.created) + " UTC")
    table.add_row("state", _state(record, now))
    return table


def watch_view(pending: list[ApprovalRecord], recent: list[ApprovalRecord], *, now: float,
               me: str, prompt: str) -> RenderableType:
    parts: list[RenderableType] = [
        requests_table(pending, now=now, title=f"{len(pending)} pending approval request(s)")]
    if recent:
        parts.append(requests_table(recent, now=now, title="recent answers", answers=True))
    footer = Text()
    footer.append(f"you: {sanitize(me)}   ", style="dim")
    footer.append(prompt, style="bold")
    parts.append(footer)
    return Group(*parts)
