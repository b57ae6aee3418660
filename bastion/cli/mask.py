"""CLI: ``bastion mask`` — filter stdin to stdout with the secret masker.

Uses the built-in detectors plus the ``[[masks]]`` of the policy file (when it
exists), the same masker that cleans recordings.  Streams: output follows input
chunk by chunk, and a pause of 50 ms in the input flushes what is held back, so
``tail -f app.log | bastion mask`` stays live.  Bytes in, bytes out: encodings
and terminal escape sequences pass through untouched.

Not covered: exporting recordings (``bastion sessions export`` masks by itself).
"""

from __future__ import annotations

import os
import select
import sys
from pathlib import Path

import typer

from bastion.cli.common import DEFAULT_POLICY, PolicyOpt, err_console, escape, handle_errors

CHUNK = 64 * 1024


def _detectors(policy: Path):
    from bastion.config import load_config
    from bastion.proto.masker import BUILTIN, detectors_from_config

    if not policy.exists():
        err_console.print(f"[dim]note:[/] no policy file at {escape(str(policy))}: "
                          "masking with the built-in detectors only")
        return BUILTIN
    config = load_config(policy)
    return tuple(BUILTIN) + tuple(detectors_from_config(config.masks))


def _pump(masker, fd_in: int, out, quiet: float) -> None:
    """Copy fd_in to out through the masker; flush it after ``quiet`` seconds without input."""
    can_wait = True
    while True:
        if can_wait and masker.pending:
            try:
                ready, _, _ = select.select([fd_in], [], [], quiet)
            except (OSError, ValueError):      # not selectable (e.g. some Windows handles)
                can_wait, ready = False, [fd_in]
            if not ready:
                out.write(masker.flush())
                out.flush()
                continue
        data = os.read(fd_in, CHUNK)
        if not data:
            break
        chunk = masker.feed(data)
        if chunk:
            out.write(chunk)
            if masker.pending == 0:
                out.flush()
    out.write(masker.flush())
    out.flush()


@handle_errors
def mask_cmd(policy: PolicyOpt = Path(DEFAULT_POLICY)) -> None:
    """Mask secrets in stdin and write the result to stdout.

    Masks private keys, cloud and API tokens, JWTs, passwords in assignments,
    URLs and command lines, connection strings and card numbers, plus the
    [[masks]] of the policy file. Each secret becomes [MASKED:kind]. Without a
    policy file only the built-in detectors are used (a note says so on stderr).

    Example:

    \b
        bastion mask --policy policy.toml < session-export.txt > session-clean.txt
    """
    from bastion.proto.masker import QUIET_FLUSH_SECONDS, Masker

    masker = Masker(_detectors(policy))
    try:
        _pump(masker, sys.stdin.fileno(), sys.stdout.buffer, QUIET_FLUSH_SECONDS)
    except BrokenPipeError:            # `bastion mask < f | head`: the reader left; not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())    # so the flush at exit does not complain
        raise typer.Exit(0) from None


def register(app: typer.Typer) -> None:
    app.command("mask")(mask_cmd)
