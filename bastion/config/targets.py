"""``[[targets]]``, ``[[grants]]`` and ``[[masks]]`` of policy.toml → :class:`Target`,
:class:`Grant` and :class:`Mask`, each problem collected with where it is."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from bastion.config.check import Checker, table_list, where_text
from bastion.errors import ConfigError, Problem
from bastion.policy.selectors import any_target_matches, check_principal_selector, check_target_selector
from bastion.proto.detectors import detectors_from_config

CHANNEL_KINDS = ("exec", "shell", "sftp", "forward")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


@dataclass(frozen=True)
class Target:
    name: str
    host: str
    user: str
    key: str
    port: int = 22
    host_key: str | None = None         # "ssh-ed25519 AAAA..." pinned key
    known_hosts: str | None = None      # or a known_hosts file (absolute path once loaded)
    labels: tuple[str, ...] = ()
    shell: str = "auto"                 # mediated pty sessions: "auto" (bash, else sh), "bash", "sh"


@dataclass(frozen=True)
class Grant:
    who: tuple[str, ...] | None
    targets: tuple[str, ...] | None
    channels: tuple[str, ...]
    mask_live: bool = False
    forward: tuple[str, ...] = ()    # "HOST:PORT" globs the target may connect to for ssh -L


@dataclass(frozen=True)
class Mask:
    name: str
    regex: str
    replace: str


def _valid_public_key(text: str) -> bool:
    import asyncssh
    try:
        asyncssh.import_public_key(text)
    except (asyncssh.KeyImportError, ValueError, TypeError):
        return False
    return True


def parse_targets(raw: dict, c: Checker, base: Path) -> dict[str, Target]:
    targets: dict[str, Target] = {}
    for i, table in enumerate(table_list(raw, "targets", c)):
        w = ("targets", i)
        c.keys(table, ("name", "host", "port", "user", "key", "host_key", "known_hosts", "labels",
                       "shell"), w)
        name = c.string(table, "name", w, required=True)
        host = c.string(table, "host", w, required=True)
        user = c.string(table, "user", w, required=True)
        key = c.string(table, "key", w, required=True)
        port = c.number(table, "port", w, 22, minimum=1)
        if isinstance(port, float) or port > 65535:
            c.add(w + ("port",), f"{where_text(w)}.port must be an integer 1-65535")
        host_key = c.string(table, "host_key", w)
        known_hosts = c.string(table, "known_hosts", w)
        if not host_key and not known_hosts:
            c.add(w, f"{where_text(w)}: pin the upstream host key with host_key = \"ssh-ed25519 AAAA...\""
                     " or known_hosts = \"path\" (bastion never trusts on first use)")
        if host_key and not _valid_public_key(host_key):
            c.add(w + ("host_key",), f"{where_text(w)}.host_key is not an OpenSSH public key "
                                     "(\"ssh-ed25519 AAAA...\", e.g. from ssh-keyscan)")
        if known_hosts:
            known_hosts = str((base / known_hosts).resolve())
        labels = c.strings(table, "labels", w) or ()
        shell = c.string(table, "shell", w) or "auto"
        if shell not in ("auto", "bash", "sh"):
            c.add(w + ("shell",), f"{where_text(w)}.shell must be \"auto\", \"bash\" or \"sh\" "
                                  "(the shell that runs a mediated pty session)")
        if name and not _NAME.fullmatch(name):
            c.add(w + ("name",), f"{where_text(w)}.name {name!r} may hold only letters, digits, . _ -")
        if name and name in targets:
            c.add(w + ("name",), f"duplicate target name {name!r}")
        if name and host and user and key:
            targets[name] = Target(name=name, host=host, port=int(port), user=user, key=key,
                                   host_key=host_key, known_hosts=known_hosts, labels=labels,
                                   shell=shell)
    return targets


def parse_grants(raw: dict, c: Checker, targets: dict[str, Target]) -> tuple[Grant, ...]:
    grants = []
    for i, table in enumerate(table_list(raw, "grants", c)):
        w = ("grants", i)
        c.keys(table, ("who", "targets", "channels", "mask_live", "forward"), w)
        who = c.strings(table, "who", w)
        for sel in who or ():
            msg = check_principal_selector(sel)
            if msg:
                c.add(w + ("who",), f"{where_text(w)}.who: {msg}")
        tsel = c.strings(table, "targets", w)
        for sel in tsel or ():
            msg = check_target_selector(sel)
            if msg:
                c.add(w + ("targets",), f"{where_text(w)}.targets: {msg}")
            elif targets and not any(any_target_matches((sel,), t) for t in targets.values()):
                c.add(w + ("targets",), f"{where_text(w)}.targets: {sel!r} matches no [[targets]] entry")
        channels = c.strings(table, "channels", w)
        if channels is None:
            channels = ("exec", "shell")
        for ch in channels:
            if ch not in CHANNEL_KINDS:
                c.add(w + ("channels",), f"{where_text(w)}.channels: unknown kind {ch!r}"
                                         f" (use {', '.join(CHANNEL_KINDS)})")
        forward = c.strings(table, "forward", w) or ()
        for dest in forward:
            host, sep, port = dest.rpartition(":")
            if not sep or not host or not (port == "*" or (port.isdigit() and 0 < int(port) < 65536)):
                c.add(w + ("forward",), f"{where_text(w)}.forward: {dest!r} must be HOST:PORT "
                                        f"(HOST may be a glob, PORT a number or *), "
                                        f"e.g. \"127.0.0.1:5432\"")
        grants.append(Grant(who=who, targets=tsel, channels=channels,
                            mask_live=c.boolean(table, "mask_live", w, False),
                            forward=forward))
    return tuple(grants)


def parse_masks(raw: dict, c: Checker) -> tuple[Mask, ...]:
    masks = []
    names = set()
    for i, table in enumerate(table_list(raw, "masks", c)):
        w = ("masks", i)
        c.keys(table, ("name", "regex", "replace"), w)
        name = c.string(table, "name", w, required=True)
        regex = c.string(table, "regex", w, required=True)
        if name in names:
            c.add(w + ("name",), f"duplicate mask name {name!r}")
        names.add(name)
        if regex:
            try:
                re.compile(regex)
            except re.error as exc:
                c.add(w + ("regex",), f"{where_text(w)}.regex is not a valid regular expression: {exc}")
                regex = None
            except (RecursionError, OverflowError, MemoryError) as exc:
                c.add(w + ("regex",), f"{where_text(w)}.regex is too complex to compile "
                                      f"({type(exc).__name__}): simplify it")
                regex = None
        replace = c.string(table, "replace", w, default=f"[MASKED:{name}]")
        if name and regex:
            mask = Mask(name=name, regex=regex, replace=replace or f"[MASKED:{name}]")
            try:                    # the masker compiles it as a bytes pattern: check that too
                detectors_from_config([mask])
            except ConfigError as exc:
                for p in exc.problems or [Problem(str(exc))]:
                    c.add(w + ("regex",), f"{where_text(w)}.regex: {p.message}")
                continue
            masks.append(mask)
    return tuple(masks)
