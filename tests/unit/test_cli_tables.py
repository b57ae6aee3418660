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
