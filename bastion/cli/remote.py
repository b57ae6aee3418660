"""The reviewer CLI's ``--server`` mode: session records from the API, shaped like the
index's (times back to epoch seconds), so that the same tables render them."""

from __future__ import annotations

import contextlib
import datetime
import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any, Iterator, Optional

import typer

ServerOpt = Annotated[Optional[str], typer.Option(
    "--server", envvar="BASTION_SERVER",
    help="The bastion's API (https://HOST:PORT) instead of the data dir; your token from "
         "`bastion login` or BASTION_TOKEN(_FILE); [settings] reviewers decides.")]
ServerCaOpt = Annotated[Optional[Path], typer.Option(
    "--server-ca", envvar="BASTION_SERVER_CA", help="CA file to trust for --server.")]
TokenFileOpt = Annotated[Optional[Path], typer.Option(
    "--token-file", envvar="BASTION_TOKEN_FILE",
    help="Your token for --server (default: the one `bastion login` saved).")]

_TIMES = ("started", "ended", "time")


def _epoch(value: Any) -> Any:
    if isinstance(value, str) and value.endswith("Z"):
        try:
            return datetime.datetime.fromisoformat(value[:-1] + "+00:00").timestamp()
        except ValueError:
            return value
    return value


def as_index_record(data: Any) -> Any:
    """The API's JSON (ISO times) as the index's records (epoch seconds), recursively."""
    if isinstance(data, list):
        return [as_index_record(x) for x in data]
    if isinstance(data, dict):
        return {k: _epoch(v) if k in _TIMES else as_index_record(v) for k, v in data.items()}
    return data


def client(server: str, server_ca: Optional[Path], token_file: Optional[Path] = None) -> Any:
    from bastion.api.client import ApiClient
    from bastion.approvals.approver import load_token
    return ApiClient(server, load_token(token_file), server_ca)


@contextlib.contextmanager
def fetched_recordings(api: Any, session_id: int,
                       channels: list[dict[str, Any]]) -> Iterator[Path]:
    """The channels' recordings copied from the API into a private temporary directory laid
    out like a data dir (each at its ``path``); removed afterwards."""
    tmp = Path(tempfile.mkdtemp(prefix="bastion-play-"))
    try:
        for ch in channels:
            dest = tmp / ch["path"]
            dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            dest.write_bytes(api.recording(session_id, ch["id"]))
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def verify_report(data: dict[str, Any]) -> Any:
    """The server's verify report (``VerifyReport.to_dict``) as a VerifyReport, its messages
    sanitised for the terminal."""
    from bastion.proto.sanitize import sanitize
    from bastion.recording.verify import Problem, VerifyReport
    fields = set(Problem.__dataclass_fields__)
    problems = [Problem(**{k: v for k, v in p.items() if k in fields})
                for p in data.get("problems") or []]
    for p in problems:
        p.message = sanitize(str(p.message))
    head = data.get("head") or {}
    return VerifyReport(head_seq=int(head.get("seq") or 0), head_hash=str(head.get("hash") or ""),
                        start_seq=int(data.get("start_seq") or 0),
                        rows=int(data.get("rows_checked") or 0),
                        files=int(data.get("files_checked") or 0),
                        copies=int(data.get("copies_checked") or 0),
                        active_sessions=int(data.get("active_sessions") or 0),
                        checkpoint=data.get("checkpoint"), problems=problems,
                        kept_aside=[dict(k) for k in data.get("kept_aside") or []
                                    if isinstance(k, dict)])
