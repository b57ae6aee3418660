"""The CLI's review tables keep ids whole, however narrow the output (a pipe gets 80 columns).

A PostgreSQL store's ids have ten digits; folded over two lines they cannot be copied into
``bastion sessions show``.  Rendered through rich at 60 and 80 columns, as a pipe would get.
"""

from __future__ import annotations

import io

import pytest
from rich.console import Console
from rich.table import Table

from bastion.cli.common import ID_COLUMNS, add_columns
from bastion.cli.sessions import _commands_table

ROW = {"id": 1000000004, "time": 1765154781.0, "session_id": 2000000017,
       "principal_name": "a-rather-long-agent-principal-name", "login": "deploy",
       "target": "web1.example.internal", "action": "review",
       "line": "systemctl restart nginx && journalctl -u nginx --since today | tail -n 50",
       "rule": "restarts-need-review", "exit_status": None}


def _render(table: Table, width: int) -> str:
    out = io.StringIO()
    Console(file=out, width=width, color_system=None).print(table)
    return out.getvalue()


@pytest.mark.parametrize("width", [60, 80])
def test_command_search_keeps_both_ids_on_one_line(width):
    text = _render(_commands_table([ROW]), width)
    assert "1000000004" in text and "2000000017" in text, text
    # the other columns fold to make room: the table still fits
    assert max(len(line) for line in text.splitlines()) <= width, text


@pytest.mark.parametrize("width", [60, 80])
def test_id_columns_never_wrap_and_the_rest_fold(width):
    table = Table()
    add_columns(table, ("id", "session", "channel", "line"))
    table.add_row("1000000001", "1000000002", "1000000003", "x " * 80)
    text = _render(table, width)
    for value in ("1000000001", "1000000002", "1000000003"):
        assert value in text, text
    assert max(len(line) for line in text.splitlines()) <= width, text
    assert {c.header for c in table.columns if c.no_wrap} == set(ID_COLUMNS)


def test_sessions_list_keeps_ten_digit_ids_and_its_headers_at_80_columns():
    from bastion.cli.sessions import _sessions_table
    rows = [{"id": 4000000006 + i, "started": 1765156335.0, "status": status,
             "principal": {"name": "deploy-bot"}, "login": "deploy", "target": target,
             "n_commands": 12, "n_denied": 3, "exit_status": 0, "truncated": False}
            for i, (status, target) in enumerate((("closed", "web1"),
                                                  ("interrupted", "web1.prod.example.com")))]
    text = _render(_sessions_table(rows, wide=False), 80)
    assert "4000000006" in text and "4000000007" in text, text
    header = next(line for line in text.splitlines() if " id " in f" {line} ")
    for name in ("started", "status", "cmds", "refused", "exit"):
        assert name in header.split(), text
    assert "interrupted" in text
    assert max(len(line) for line in text.splitlines()) <= 80, text
