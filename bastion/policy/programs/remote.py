"""ssh and scp: the host they connect to, and the local programs their options run.

* ``ssh [OPTIONS] DESTINATION [COMMAND...]``: connects to DESTINATION (``user@host``,
  ``ssh://user@host:port``) and any ``-J`` jump host; a COMMAND runs on the other host,
  which this policy does not govern: opaque.  ``-E FILE`` writes a log; ``-i FILE`` reads
  a key.
* ``scp [OPTIONS] SOURCE... TARGET``: a local TARGET is written, local sources read, remote
  ones (``host:path``) are connections.
* Refused (opaque): ``-F FILE`` (a configuration may name ProxyCommand/LocalCommand), ``-o``
  with an option that runs a local program or reads another configuration
  (``ProxyCommand``, ``LocalCommand``/``PermitLocalCommand``, ``KnownHostsCommand``,
  ``Match exec``, ``Include``, ``RemoteCommand``, ``ProxyUseFdpass``, ``SecurityKeyProvider``,
  ``PKCS11Provider``), scp ``-S PROGRAM``; an ``-o`` known only at run time.

The user's ``~/.ssh/config`` can still name such programs (as ``~/.gitconfig`` can for
git): deny writes to ``**/.ssh/**``.  Pure: no IO.
"""

from __future__ import annotations

from typing import Any

from bastion.policy.programs.spec import NONE, Analysis, Spec, below

_RUNS = frozenset(("proxycommand", "localcommand", "permitlocalcommand", "knownhostscommand",
                   "match", "include", "remotecommand", "proxyusefdpass",
                   "securitykeyprovider", "pkcs11provider", "controlpath", "controlmaster",
                   "identityagent", "forwardagent", "stdinnull"))


def _host(dest: str | None) -> str | None:
    if dest is None:
        return None
    rest = dest.split("://", 1)[1] if "://" in dest else dest
    rest = rest.rsplit("@", 1)[-1]
    if rest.startswith("["):
        return rest[1:].split("]", 1)[0].lower() or None
    return rest.split(":", 1)[0].split("/", 1)[0].lower() or None


def _options(out: Analysis, opts: list[Any], mkarg: Any) -> bool:
    """Effects of the options both share; False when the command became opaque."""
    for name, v in opts:
        val = v.value if v is not None else None
        if name == "o":
            if val is None:
                out.opaque("ssh -o with an option known only at run time")
                return False
            key = val.replace("=", " ").split(None, 1)[0].lower() if val.strip() else ""
            if key in _RUNS:
                out.opaque(f"ssh -o {key}: runs a local program or reads more configuration")
                return False
        elif name == "J":
            for hop in (val.split(",") if val is not None else [None]):
                out.connects.append(_host(hop))
        elif name == "E" and v is not None:
            out.writes.append(mkarg(v))
        elif name == "i" and v is not None:
            out.reads.append(mkarg(v))
    return True


def _ssh_hook(out: Analysis, opts: list[Any], operands: list[Any], mkarg: Any) -> None:
    if not _options(out, opts, mkarg):
        return
    if not operands:
        return
    out.connects.append(_host(operands[0].value))
    if len(operands) > 1:
        out.opaque("ssh DESTINATION COMMAND runs the command on another host, which this "
                   "policy does not govern")


def _remote(v: str) -> bool:
    """``host:path`` (scp's remote form): a ':' before any '/'; ``/a:b`` and ``./a:b`` are
    local."""
    return not v.startswith("/") and ":" in v.split("/", 1)[0]


def _scp_hook(out: Analysis, opts: list[Any], operands: list[Any], mkarg: Any) -> None:
    if not _options(out, opts, mkarg):
        return
    for k, o in enumerate(operands):
        v = o.value
        if v is None and k == len(operands) - 1:
            out.writes.append(mkarg(o))
        elif v is None:
            out.reads.append(mkarg(o))
        elif v.startswith("scp://") or _remote(v):
            out.connects.append(_host(v))
        elif k == len(operands) - 1 and len(operands) > 1:
            out.writes.append(below(o, mkarg) if v.endswith("/") or v in (".", "..")
                              else mkarg(o))
        else:
            out.reads.append(mkarg(o))


_SHARED_REFUSE = {"F": "reads a configuration that may name ProxyCommand or LocalCommand"}
SSH = Spec(flags="46AaCfGgKkMNnqsTtVvXxYy", values="BbcDEeIiJLlmOoPpQRSWw", posix=True,
           operands=NONE, refuse=_SHARED_REFUSE | {"G": "prints the configuration, "
                                                  "which may include other files"},
           hook=_ssh_hook)
SCP = Spec(flags="346ABCOpqRrTv", values="cDFiJloPSX", operands=NONE,
           refuse=_SHARED_REFUSE | {"S": "runs a program instead of ssh",
                                    "D": "runs an sftp server program"},
           hook=_scp_hook)

__all__ = ["SCP", "SSH"]
