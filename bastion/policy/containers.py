"""Container runners as wrappers: what ``docker``/``podman``/``kubectl`` run inside a container.

``docker exec CONTAINER CMD...``, ``docker run IMAGE CMD...`` (and ``container exec``,
``container run``, ``create``) and ``kubectl exec POD -- CMD...`` / ``kubectl run NAME
--image=I -- CMD...`` run CMD: it is decided like a command on the host (wrapped, as
``sudo CMD`` is), in a working directory we do not know.  Opaque (see
:class:`bastion.policy.wrappers.Opaque`):

* a container that reaches the host: ``--privileged``, a bind mount of a host path
  (``-v /:/mnt``, ``--mount type=bind``), ``--volumes-from``, ``--pid/--ipc/--uts/
  --userns/--network=host``, ``--cap-add``, ``--device``, ``--security-opt``,
  ``--cgroup-parent``; files the client reads or writes (``--env-file``, ``--label-file``,
  ``--cidfile``);
* a run without a command (the image's own entrypoint runs), ``--entrypoint`` with a
  run-time value, ``docker attach`` / ``kubectl attach`` / ``kubectl debug`` (a terminal
  into a running container), ``kubectl exec`` without ``--``;
* an option this table does not know (it may take a value and hide the image).

Pure: no IO.
"""

from __future__ import annotations

from typing import Any, Callable

from bastion.policy.words import Word

Action = Any                                  # a wrappers.Run or wrappers.Opaque
RunFn = Callable[[list[Word], str, Word | None], Action]
OpaqueFn = Callable[[str], Action]

# docker run/create options that take a value (long names; short letters below)
_RUN_VALUES = frozenset((
    "attach", "add-host", "annotation", "blkio-weight", "cap-add", "cap-drop", "cgroup-parent",
    "cgroupns", "cidfile", "cpu-period", "cpu-quota", "cpu-rt-period", "cpu-rt-runtime",
    "cpu-shares", "cpus", "cpuset-cpus", "cpuset-mems", "device", "device-cgroup-rule",
    "device-read-bps", "device-write-bps", "dns", "dns-option", "dns-search", "domainname",
    "entrypoint", "env", "env-file", "expose", "gpus", "group-add", "health-cmd",
    "health-interval", "health-retries", "health-start-period", "health-timeout", "hostname",
    "ip", "ip6", "ipc", "isolation", "kernel-memory", "label", "label-file", "link",
    "log-driver", "log-opt", "mac-address", "memory", "memory-reservation", "memory-swap",
    "memory-swappiness", "mount", "name", "network", "net", "network-alias", "oom-score-adj",
    "pid", "pids-limit", "platform", "publish", "pull", "restart", "runtime", "security-opt",
    "shm-size", "stop-signal", "stop-timeout", "storage-opt", "sysctl", "tmpfs", "ulimit",
    "user", "userns", "uts", "volume", "volume-driver", "volumes-from", "workdir",
    "detach-keys", "platform"))
_RUN_FLAGS = frozenset(("detach", "interactive", "tty", "rm", "init", "privileged",
                        "publish-all", "read-only", "no-healthcheck", "oom-kill-disable",
                        "sig-proxy", "disable-content-trust", "quiet", "help"))
_RUN_SHORT_VALUES = {"a": "attach", "c": "cpu-shares", "e": "env", "h": "hostname",
                     "l": "label", "m": "memory", "p": "publish", "u": "user", "v": "volume",
                     "w": "workdir"}
_RUN_SHORT_FLAGS = {"d": "detach", "i": "interactive", "t": "tty", "P": "publish-all",
                    "q": "quiet"}
_EXEC_VALUES = frozenset(("env", "env-file", "user", "workdir", "detach-keys"))
_EXEC_FLAGS = frozenset(("detach", "interactive", "tty", "privileged", "help"))
_EXEC_SHORT_VALUES = {"e": "env", "u": "user", "w": "workdir"}
_EXEC_SHORT_FLAGS = {"d": "detach", "i": "interactive", "t": "tty"}
_HOST_NAMESPACES = ("pid", "ipc", "uts", "userns", "network", "net", "cgroupns")
_REACH_HOST = {"privileged": "runs a privileged container (it reaches the host)",
               "cap-add": "adds capabilities to the container",
               "device": "gives the container a host device",
               "device-cgroup-rule": "gives the container host devices",
               "security-opt": "changes the container's confinement",
               "cgroup-parent": "moves the container's cgroup",
               "volumes-from": "mounts another container's volumes (host paths among them)",
               "env-file": "the client reads a local file", "label-file":
               "the client reads a local file", "cidfile": "the client writes a local file"}
_DOCKER_GLOBAL_VALUES = frozenset(("host", "log-level", "context", "config", "tlscacert",
                                   "tlscert", "tlskey"))
_DOCKER_GLOBAL_SHORT = {"H": "host", "l": "log-level", "c": "context"}


class _Stop(Exception):
    def __init__(self, why: str) -> None:
        self.why = why


def _options(words: list[Word], i: int, values: frozenset[str], flags: frozenset[str],
             short_values: dict[str, str], short_flags: dict[str, str],
             prog: str) -> tuple[int, list[tuple[str, Word | None]]]:
    """Read options from ``words[i]``; return (first operand, [(name, Word|None)])."""
    seen: list[tuple[str, Word | None]] = []
    n = len(words)
    while i < n:
        w = words[i]
        v = w.value
        if v is None:
            head = w.template[0] if w.template else None
            if head is None or head.startswith("-"):
                raise _Stop(f"a run-time word ({w.raw}) among the options of {prog}")
            return i, seen
        if v == "--":
            return i + 1, seen
        if not v.startswith("-") or v == "-":
            return i, seen
        i += 1
        if v.startswith("--"):
            name, eq, val = v[2:].partition("=")
            if name in values:
                if eq:
                    seen.append((name, Word.literal(val)))
                elif i < n:
                    seen.append((name, words[i]))
                    i += 1
                else:
                    raise _Stop(f"{prog} --{name} lacks its value")
            elif name in flags:
                seen.append((name, Word.literal(val) if eq else None))
            else:
                raise _Stop(f"{prog}: option --{name} is not in the table")
            continue
        body = v[1:]
        for k, c in enumerate(body):
            if c in short_values:
                rest = body[k + 1:]
                if rest:
                    seen.append((short_values[c], Word.literal(rest.lstrip("="))))
                elif i < n:
                    seen.append((short_values[c], words[i]))
                    i += 1
                else:
                    raise _Stop(f"{prog} -{c} lacks its value")
                break
            if c in short_flags:
                seen.append((short_flags[c], None))
                continue
            raise _Stop(f"{prog}: option -{c} is not in the table")
    return i, seen


def _host_reach(seen: list[tuple[str, Word | None]], prog: str) -> str | None:
    for name, w in seen:
        val = None if w is None else w.value
        if name in _REACH_HOST:
            if name == "privileged" and val in ("false",):
                continue
            return f"{prog} --{name}: {_REACH_HOST[name]}"
        if name in _HOST_NAMESPACES and (val is None or val.startswith(("host", "container:"))):
            if w is None:
                continue
            return f"{prog} --{name}={val if val is not None else w.raw}: shares the host's namespace"
        if name == "volume" and w is not None:
            src = (val or "").split(":", 1)[0] if val is not None else None
            if src is None or not src or src.startswith(("/", ".", "~")) or "$" in src:
                return f"{prog} -v {w.raw}: mounts a host path into the container"
        if name == "mount" and w is not None:
            if val is None or "bind" in val or "source=/" in val or "src=/" in val:
                return f"{prog} --mount {w.raw}: mounts a host path into the container"
    return None


def docker(prog: str, words: list[Word], run: RunFn, opaque: OpaqueFn,
           elsewhere: Word) -> list[Action]:
    """What ``docker ...`` runs (``run``/``opaque`` build the wrapper actions)."""
    try:
        i, _ = _options(words, 1, _DOCKER_GLOBAL_VALUES, frozenset(("debug", "tls", "tlsverify",
                                                                    "help", "version")),
                        _DOCKER_GLOBAL_SHORT, {"D": "debug", "v": "version"}, prog)
        if i >= len(words) or words[i].value is None:
            return []
        sub = words[i].value
        i += 1
        if sub == "container" and i < len(words):
            sub = words[i].value or ""
            i += 1
        if sub in ("attach",):
            return [opaque(f"{prog} attach: a terminal into a running container")]
        if sub == "exec":
            i, seen = _options(words, i, _EXEC_VALUES, _EXEC_FLAGS, _EXEC_SHORT_VALUES,
                               _EXEC_SHORT_FLAGS, f"{prog} exec")
            why = _host_reach(seen, f"{prog} exec")
            if why:
                return [opaque(why)]
            if i + 1 >= len(words):
                return [opaque(f"{prog} exec without a command")]
            return [run(words[i + 1:], f"{prog} exec", elsewhere)]
        if sub in ("run", "create"):
            i, seen = _options(words, i, _RUN_VALUES, _RUN_FLAGS, _RUN_SHORT_VALUES,
                               _RUN_SHORT_FLAGS, f"{prog} {sub}")
            why = _host_reach(seen, f"{prog} {sub}")
            if why:
                return [opaque(why)]
            entry = [w for name, w in seen if name == "entrypoint" and w is not None]
            rest = list(words[i + 1:])
            if entry:
                if entry[-1].value is None:
                    return [opaque(f"{prog} {sub} --entrypoint known only at run time")]
                if entry[-1].value:
                    rest = [Word.literal(entry[-1].value)] + rest
            if i >= len(words):
                return [opaque(f"{prog} {sub} without an image")]
            if not rest:
                return [opaque(f"{prog} {sub} runs the image's own command, which the policy "
                               f"cannot see")]
            return [run(rest, f"{prog} {sub}", elsewhere)]
    except _Stop as stop:
        return [opaque(stop.why)]
    return []


_K_GLOBAL_VALUES = frozenset(("namespace", "context", "cluster", "user", "token",
                              "request-timeout", "as", "as-group", "certificate-authority",
                              "client-certificate", "client-key", "tls-server-name",
                              "cache-dir", "log-dir", "kubeconfig", "server", "v"))


def kubectl(prog: str, words: list[Word], run: RunFn, opaque: OpaqueFn,
            elsewhere: Word) -> list[Action]:
    """What ``kubectl exec/run/attach/debug`` run inside a pod."""
    n = len(words)
    i = 1
    while i < n:                      # global options before the subcommand
        v = words[i].value
        if v is None or not v.startswith("-"):
            break
        i += 1
        name = v.lstrip("-").partition("=")[0]
        if "=" not in v and (name in _K_GLOBAL_VALUES or v in ("-n", "-s", "-v")):
            i += 1
    if i >= n or words[i].value is None:
        return []
    sub = words[i].value
    if sub in ("attach", "debug"):
        return [opaque(f"{prog} {sub}: a terminal or debug container in the cluster")]
    if sub not in ("exec", "run"):
        return _spellings(prog, words, i, run, opaque)
    dash = next((k for k in range(i + 1, n) if words[k].value == "--"), None)
    if dash is None:
        if sub == "exec":
            return [opaque(f"{prog} exec without --: the command cannot be told from its "
                           f"options")]
        return [opaque(f"{prog} run starts the image's own command, which the policy cannot "
                       f"see")]
    if any(w.value is None for w in words[i + 1:dash]):
        return [opaque(f"{prog} {sub}: an option known only at run time")]
    if dash + 1 >= n:
        return [opaque(f"{prog} {sub} without a command")]
    return [run(words[dash + 1:], f"{prog} {sub}", elsewhere)]


def _resource(item: str) -> str:
    kind, slash, name = item.partition("/")
    return kind.lower().partition(".")[0] + slash + name


def _spellings(prog: str, words: list[Word], i: int, run: RunFn,
               opaque: OpaqueFn) -> list[Action]:
    """kubectl reads resource types case-insensitively, with a group (``secret.v1``) and as
    comma lists (``pods,secrets``): each other spelling is also decided as the plain type,
    one word at a time (``kubectl get pods,Secret.v1 x`` is also ``kubectl get pods x`` and
    ``kubectl get secret x``), so rules naming ``kubectl get secret*`` see it."""
    out: list[Action] = []
    changed = 0
    for k in range(i + 1, len(words)):
        v = words[k].value
        if v is None or v.startswith("-"):
            continue
        items = [_resource(x) for x in v.split(",") if x]
        if items == [v]:
            continue
        changed += 1
        if changed > 4 or len(items) > 16:
            return [opaque(f"{prog}: too many resource lists to decide one by one")]
        out.extend(run(words[:k] + [Word.literal(x)] + words[k + 1:], prog, None)
                   for x in items)
    return out


__all__ = ["docker", "kubectl"]
