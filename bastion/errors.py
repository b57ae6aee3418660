"""The one error tree of bastion.

Every error the product raises on purpose is a :class:`BastionError`.  Foreign
errors (asyncssh, jwt, sqlite, OS) are translated at the boundary where they are
caught (``raise ConfigError(...) from exc``).  Only the CLI turns these into exit
codes and messages; library code never prints.

Tree::

    BastionError
    ├── ConfigError            policy.toml / settings invalid (carries problems with line numbers)
    ├── IdentityError          OIDC discovery / JWKS could not be obtained
    │   └── TokenRejected      a token failed validation (carries a reason, never the token)
    ├── VaultError             keys/ missing, locked, wrong passphrase, bad key file
    ├── TargetError            unknown target, not granted, wrong login
    ├── UpstreamError          upstream host down, timed out, host key mismatch
    │   └── HostKeyMismatch
    ├── RecordingError         a recording or the index cannot be written
    └── ApprovalError          approval request could not be created / answered
"""

from __future__ import annotations

from dataclasses import dataclass


#: a log record's attribute (``extra={SAID_BY_ERROR: True}``): the record's text is also in
#: the error raised right after it (its message or hint).  A server's log needs the record
#: (the error reaching an agent says less); the CLI, which prints that error with its hint,
#: leaves such records out (bastion.cli.main) rather than say the same thing twice.
SAID_BY_ERROR = "bastion_said_by_error"


class BastionError(Exception):
    """Base class of every error bastion raises on purpose.

    ``hint`` is an optional sentence telling a person what to do next.
    """

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.message


@dataclass(frozen=True)
class Problem:
    """One problem found while validating a configuration file."""

    message: str
    line: int | None = None
    where: tuple = ()

    def __str__(self) -> str:
        prefix = f"line {self.line}: " if self.line else ""
        return prefix + self.message


class ConfigError(BastionError):
    """A configuration file is invalid; ``problems`` lists each finding."""

    exit_code = 2

    def __init__(self, message: str, problems: list[Problem] | None = None, *,
                 path: str | None = None, hint: str | None = None) -> None:
        self.problems = list(problems or [])
        self.path = path
        detail = "; ".join(str(p) for p in self.problems)
        full = f"{message}: {detail}" if detail else message
        if path:
            full = f"{path}: {full}"
        super().__init__(full, hint=hint)


class IdentityError(BastionError):
    """The identity provider could not be used (discovery, JWKS, token endpoint)."""


class TokenRejected(IdentityError):
    """A token failed validation.  ``reason`` is short and safe to log."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"token rejected: {reason}")
        self.reason = reason


class VaultError(BastionError):
    """The key vault could not be read or written."""


class TargetError(BastionError):
    """A target is unknown, not granted, or asked for with the wrong login."""


class UpstreamError(BastionError):
    """The upstream host could not be reached or refused us."""

    target_answered = False    # a connect that timed out after the target's SSH version line


class HostKeyMismatch(UpstreamError):
    """The upstream host presented a key other than the pinned one."""


class RecordingError(BastionError):
    """A recording or the session index could not be written."""


class ApprovalError(BastionError):
    """An approval request could not be created or answered."""
