"""The one Services object that ``bastion serve`` builds and passes explicitly.

It owns the reloadable configuration (policy.toml), the token validator, the
vault, the host keys/CA, the upstream pool and (once wired) the recorder, plus
the small decisions every session needs (policy, env filtering) so that the SSH
glue stays thin.  Reload keeps the previous configuration when the new file is
invalid.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bastion.config import BastionConfig, load_config
from bastion.errors import BastionError, ConfigError
from bastion.identity.principal import Principal
from bastion.logfmt import fields as log_fields
from bastion.metrics import METRICS
from bastion.ssh.relay import printable

log = logging.getLogger("bastion.services")
audit = logging.getLogger("bastion.audit")


def _exec_dialects(target) -> tuple[str, ...]:
    shell = getattr(target, "shell", "auto")
    if shell == "auto":
        return ("bash", "sh") if _ENGINE_KNOWS_DIALECTS else ("bash",)
    return (shell,)


def _engine_knows_dialects() -> bool:
    import inspect
    from bastion.policy import Policy
    return "dialect" in inspect.signature(Policy.evaluate).parameters


_ENGINE_KNOWS_DIALECTS = _engine_knows_dialects()


def _dialect_arg(dialect: str) -> dict:
    """The engine's keyword for a dialect (none for bash, the grammar it always knew)."""
    return {} if dialect == "bash" else {"dialect": dialect}


def _store_node() -> str | None:
    """This process's node name in a shared store (None on SQLite)."""
    from bastion import store
    settings = store.current()
    return settings.node if settings.postgres else None


def _limits():
    from bastion.ssh import limits
    return limits


def _check_serving(config: BastionConfig, path) -> None:
    """What ``bastion serve`` needs beyond a valid file: an [oidc] table and known ciphers."""
    from bastion.ssh.algs import check_ciphers
    if config.oidc is None:
        raise ConfigError("policy has no [oidc] table: agents could not log in",
                          path=str(path), hint="add [oidc] issuer = ... and audience = ...")
    check_ciphers(config.settings.ciphers)


@dataclass(frozen=True)
class _Staged:
    """The reloadable state, built whole before it is swapped in."""
    config: BastionConfig
    detectors: Any
    validator: Any


@dataclass
class Services:
    policy_path: Path
    data_dir: Path
    keys_dir: Path
    config: BastionConfig
    validator: Any
    vault: Any
    hostkeys: Any
    pool: Any
    inner_options: Any
    recorder: Any = None
    broker: Any = None               # approvals.ApprovalBroker
    detectors: Any = None            # masking detectors: built-ins + [[masks]], per config load
    _policy_stamp: tuple | None = None
    policy_digest: str = ""          # of self.config (bastion.config.digest)
    policy_loaded: float = 0.0       # when self.config was loaded (time.time())
    policy_refused: tuple[float, str] | None = None   # the last reload refused since: (when, why)
    _publisher: Any = None           # nodeconfig.Publisher: a PostgreSQL store only
    _peers_checked: float = 0.0      # time.monotonic() of the last comparison with peers
    _servers: set = field(default_factory=set)
    refused_counter: Any = field(default_factory=lambda: _limits().RefusedCounter())
    preauth: Any = field(default_factory=lambda: _limits().PreauthGate())

    # -- construction ----------------------------------------------------------
    @classmethod
    def build(cls, policy_path: Path, data_dir: Path, keys_dir: Path, *,
              listen_host: str | None = None, worker: int = 0,
              recover_all: bool = True) -> "Services":
        from bastion.identity.oidc import TokenValidator
        from bastion.ssh.hostca import HostKeys, default_bastion_names
        from bastion.ssh.inner import InnerOptionsCache
        from bastion.ssh.upstream import UpstreamPool
        from bastion.vault import Vault

        config = load_config(policy_path)
        _check_serving(config, policy_path)
        from bastion import store
        if config.store is not None and not os.environ.get(store.location.ENV_URL):
            store.configure(config.store)
        if worker:               # each worker of `serve --workers` is its own node (shares.py)
            import dataclasses
            own = f"{store.current().node}-w{worker}"
            os.environ[store.location.ENV_NODE] = own       # the environment wins over [store]
            store.configure(dataclasses.replace(store.current(), node=own))
        log.info("session index: %s", store.describe())
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        names = default_bastion_names()
        if listen_host and listen_host not in ("0.0.0.0", "::") and listen_host not in names:
            names = names + (listen_host,)
        vault = Vault.from_env(keys_dir)
        vault.unlock()           # wrong passphrase: fail at start, not at the first session
        hostkeys = HostKeys.load_or_create(data_dir, names, vault=vault)   # encrypted like it
        for name in sorted({t.key for t in config.targets.values()}):
            vault.load(name)     # a key named by [[targets]] but missing: fail at start too
        from bastion.approvals import ApprovalBroker
        from bastion.recording import Recorder
        from bastion.recording.tailjournal import PURPOSE
        from bastion.recording.tailstore import PURPOSE as STORE_TAILS
        from bastion.ssh.hostca import HOSTKEYS_DIR
        detectors = cls._detectors_for(config)
        recorder = Recorder.open(
            data_dir, max_bytes=config.settings.recording_max_bytes, detectors=detectors,
            journal_key=vault.sibling(data_dir / HOSTKEYS_DIR).subkey(PURPOSE),
            worker=worker, recover_all=recover_all,
            # the store's tail journal: one key on every node with this passphrase
            store_key_for=lambda salt: vault.salted_subkey(STORE_TAILS, salt))
        broker = ApprovalBroker.open(data_dir, config.settings, node=store.current().node)
        services = cls(
            policy_path=policy_path, data_dir=data_dir, keys_dir=keys_dir, config=config,
            recorder=recorder, broker=broker,
            validator=TokenValidator(config.oidc), vault=vault, hostkeys=hostkeys,
            pool=UpstreamPool(load_key=vault.load, connect_timeout=config.settings.connect_timeout,
                              ciphers=config.settings.ciphers,
                              idle_timeout=config.settings.upstream_idle_timeout,
                              max_connects=config.settings.upstream_connects,
                              queue_timeout=config.settings.upstream_queue_timeout),
            inner_options=InnerOptionsCache(hostkeys),
        )
        services._policy_stamp = services._stamp()
        services.detectors = detectors
        services.policy_digest, services.policy_loaded = config.digest, time.time()
        recorder.status_extra = services.policy_status
        if store.current().postgres:      # peers compare what each node enforces
            from bastion.recording.leases import LEASE
            from bastion.recording.nodeconfig import Publisher
            services._publisher = Publisher(data_dir, store.current().node, LEASE)
            services._publish(wait=True)   # a start that differs from live peers says so first
        return services

    @staticmethod
    def _detectors_for(config: BastionConfig):
        from bastion.proto.masker import BUILTIN, Masker, detectors_from_config
        detectors = tuple(BUILTIN) + tuple(detectors_from_config(config.masks))
        Masker(detectors)      # compile the trigger database now (~0.1 s), not in the first session
        return detectors

    def _stamp(self) -> tuple | None:
        """What says the policy file changed: inode, mtime (ns) and size (None: unreadable)."""
        try:
            st = os.stat(self.policy_path)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    # -- reload ----------------------------------------------------------------
    def reload(self) -> bool:
        """Load policy.toml again, all or nothing; never raises (SIGHUP and the watcher call it).

        Everything the new file needs is built and checked before anything is swapped:
        the config itself, an ``[oidc]`` table and its token validator, the ciphers,
        the masking detectors (custom ``[[masks]]`` compiled).  Then the approval broker
        takes the new settings and the rest is swapped in one step that no session can
        see half done (no await in between).  On any error, of any type, the whole
        previous state stays (policy, grants, masks, validator, settings, broker) and
        one log line says why.  Returns whether the new file is in force.
        """
        self._policy_stamp = self._stamp()
        previous = self._current()
        try:
            staged = self._prepare(load_config(self.policy_path))
            self._swap(staged)
        except Exception as exc:  # noqa: BLE001 - a bad file never takes the bastion down
            try:
                self._swap(previous)
            except Exception:  # noqa: BLE001 - the old state is still assigned; say so
                log.exception("policy reload: restoring the previous broker settings failed")
            why = str(exc) if isinstance(exc, BastionError) else f"{type(exc).__name__}: {exc}"
            log.error("policy reload refused, previous policy kept: %s", printable(why))
            if not isinstance(exc, BastionError):
                log.debug("policy reload failure", exc_info=True)
            self.policy_refused = (time.time(), printable(why))
            METRICS.inc("bastion_policy_reloads_total", result="refused")
            self._publish()
            return False
        config = staged.config
        self.policy_loaded, self.policy_refused = time.time(), None
        METRICS.inc("bastion_policy_reloads_total", result="ok")
        log.info("policy reloaded from %s: %d targets, %d grants, %d masks (%s)",
                 self.policy_path, len(config.targets), len(config.grants), len(config.masks),
                 self.policy_digest)
        self._publish()
        return True

    def policy_status(self) -> dict[str, Any]:
        """The policy in force, for ``bastion status`` (and what a node publishes)."""
        refused = self.policy_refused
        return {"policy": {"path": str(self.policy_path), "digest": self.policy_digest,
                           "loaded": self.policy_loaded,
                           "refused_at": refused[0] if refused else None,
                           "refused": refused[1] if refused else None,
                           "node": _store_node()}}

    def _published(self) -> dict[str, Any]:
        refused = self.policy_refused
        return {"policy": self.policy_digest, "policy_loaded": self.policy_loaded,
                "policy_error": refused[1] if refused else None,
                "policy_error_at": refused[0] if refused else None,
                "host_ca": self.hostkeys.ca_key.get_fingerprint("sha256"),
                "host_key": self.hostkeys.host_key.get_fingerprint("sha256")}

    def _publish(self, wait: bool = False) -> None:
        """This node's values into the shared store (bastion.recording.nodeconfig)."""
        if self._publisher is not None:
            self._publisher.publish(self._published(), wait=wait)
            self._peers_checked = time.monotonic()

    def check_peers(self) -> None:
        """Every lease/2 s (the policy watcher calls it): compare with the live peers again,
        in the publisher's thread; it warns when the differences changed."""
        if self._publisher is None:
            return
        if time.monotonic() - self._peers_checked >= self._publisher.lease / 2:
            self._peers_checked = time.monotonic()
            self._publisher.check(self._published())

    def reload_if_changed(self) -> bool:
        if self._stamp() != self._policy_stamp:
            return self.reload()
        return False

    def _current(self) -> "_Staged":
        return _Staged(self.config, self.detectors, self.validator)

    def _prepare(self, config: BastionConfig) -> "_Staged":
        """Build what ``config`` needs, touching nothing in force (raises on any problem)."""
        _check_serving(config, self.policy_path)
        detectors = self._detectors_for(config)
        validator = self.validator
        if validator is None or config.oidc != self.config.oidc:
            from bastion.identity.oidc import TokenValidator
            validator = TokenValidator(config.oidc)
        return _Staged(config, detectors, validator)

    def _swap(self, staged: "_Staged") -> None:
        """Put ``staged`` in force.  Only the broker can fail, so it goes first."""
        settings = staged.config.settings
        if self.broker is not None:
            self.broker.reconfigure(settings)
        self.config, self.detectors, self.validator = staged.config, staged.detectors, staged.validator
        self.policy_digest = staged.config.digest
        if self.pool is not None:           # new connects; connections in use keep theirs
            self.pool.connect_timeout = settings.connect_timeout
            self.pool.ciphers = settings.ciphers
            self.pool.idle_timeout = settings.upstream_idle_timeout
            self.pool.set_max_connects(settings.upstream_connects)    # queued ones start now
            self.pool.queue_timeout = settings.upstream_queue_timeout
        if self.inner_options is not None:
            self.inner_options.invalidate()

    # -- connections -----------------------------------------------------------
    def track(self, server: Any) -> None:
        self._servers.add(server)

    def untrack(self, server: Any) -> None:
        self._servers.discard(server)

    @property
    def connections(self) -> set[Any]:
        return set(self._servers)

    def terminate(self, session_id: int, by: str, reason: str) -> bool:
        """End the live session ``session_id`` (an inner connection) now: a marker in its
        recording, an audit event, and a disconnect message the agent's ssh prints.
        False if no session of that id is open here."""
        import asyncssh
        for server in self.connections:
            for link in list(getattr(server, "inner_links", ())):
                ctx: Any = getattr(link, "ctx", None)
                rec = getattr(ctx, "recording", None)
                if ctx is None or rec is None or rec.id != session_id or link.inner is None:
                    continue
                why = printable(f"terminated by {by}: {reason}")
                try:
                    rec.marker(f"session {why}")
                except BastionError as exc:      # ending it matters more than the marker
                    log.error("session %s: the termination marker failed: %s", session_id, exc)
                audit.warning("session %s %s", session_id, why,
                              extra=log_fields("session_terminated", session=session_id,
                                               principal=ctx.principal.subject,
                                               target=ctx.target.name, by=by, reason=reason))
                link.inner.disconnect(asyncssh.DISC_BY_APPLICATION, f"bastion: session {why}")
                return True
        return False

    # -- decisions -------------------------------------------------------------
    def decide(self, ctx, line: str, *, channel: str, dialect: str | None = None,
               cwd: str | None = None):
        """Policy decision for one exec command or shell line; logged (and indexed).

        ``dialect``: the grammar of the shell that will run ``line`` (``bash`` or ``sh``).
        ``None`` (an exec command, run by the target user's login shell): the target's
        ``shell`` setting says which; with ``auto`` the line is decided in both grammars and
        the more restrictive decision stands, so text that bash and dash read differently
        cannot slip through.  ``cwd``: the shell's working directory, when known.
        """
        from bastion.policy import Action, Decision
        dialects = (dialect,) if dialect else _exec_dialects(ctx.target)
        decision = None
        why = self.token_expired(ctx.principal)
        if why:                          # new work needs a live token (bastion.identity.expiry)
            decision = Decision(Action.DENY, "<expired>", why)
            self._log_decision(ctx, line, channel, decision)
            return decision
        try:
            for one in dialects:
                found = self.config.policy.evaluate(ctx.principal, ctx.target, line,
                                                    cwd=cwd, **_dialect_arg(one))
                if decision is None or found.action.severity > decision.action.severity:
                    decision = found
        except Exception as exc:  # noqa: BLE001 - the engine must never fail open
            log.exception("policy engine failed; denying")
            decision = Decision(Action.DENY, "<error>", f"policy engine error: {type(exc).__name__}")
        self._log_decision(ctx, line, channel, decision)
        return decision

    def token_expired(self, principal) -> str | None:
        """Why ``principal`` may start nothing new (its token has expired), or None."""
        from bastion.identity.expiry import expired
        oidc = self.config.oidc
        return expired(principal, oidc.leeway if oidc is not None else 0)

    def session_grace(self) -> float:
        """Seconds open channels may outlive their principal's token."""
        from bastion.identity.expiry import DEFAULT_GRACE
        return float(getattr(self.config.settings, "session_max_after_expiry", DEFAULT_GRACE))

    def _log_decision(self, ctx, line: str, channel: str, decision) -> None:
        level = logging.INFO if decision.action.value == "allow" else logging.WARNING
        METRICS.inc("bastion_decisions_total", channel=channel, action=decision.action.value,
                    rule=decision.rule or "<none>")
        reason, shown = printable(self.mask(decision.reason)), printable(self.mask(line))
        session = ctx.recording.id if getattr(ctx, "recording", None) is not None else None
        audit.log(level, "decision principal=%s target=%s login=%s channel=%s action=%s rule=%s "
                         "reason=%s line=%s", ctx.principal.subject, ctx.target.name,
                  ctx.target.user, channel, decision.action.value, decision.rule, reason, shown,
                  extra=log_fields("decision", principal=ctx.principal.subject,
                               target=ctx.target.name, login=ctx.target.user, session=session,
                               channel=channel, action=decision.action.value,
                               rule=decision.rule, reason=reason, line=shown))

    def mask(self, text: str) -> str:
        """``text`` with every secret the detectors know masked (for logs and the index)."""
        from bastion.ssh.masking import mask_line
        return mask_line(text, self.detectors) if self.detectors else mask_line(text)

    def channel_masks(self, ctx, kind: str):
        """The maskers of a new channel; live masking per settings or any covering grant."""
        from bastion.ssh.masking import ChannelMasks
        live = self.config.mask_live_for(ctx.principal, ctx.target, kind)
        return ChannelMasks(self.detectors, live=live)

    def open_recording(self, ctx, kind: str, *, command: str | None, term: str | None,
                       size, env: dict | None, masks=None):
        """The recording of a new channel (and of its session, the first time).

        ``masks``: the channel's ChannelMasks; unless they mask live (the caller then
        records what they emit), the recording worker masks the channel's streams.
        Raises RecordingError when recording is unavailable: the caller refuses the channel.
        """
        from bastion.errors import RecordingError
        if self.recorder is None:
            raise RecordingError("no recorder configured")
        if ctx.recording is None:
            ctx.recording = self.recorder.start_session(
                principal=ctx.principal, client=ctx.client, target=ctx.target.name,
                login=ctx.login or ctx.target.user)
        width, height = (size[0], size[1]) if size else (80, 24)
        clean_env = {(k.decode() if isinstance(k, bytes) else str(k)):
                     (v.decode(errors="replace") if isinstance(v, bytes) else str(v))
                     for k, v in (env or {}).items()}
        if term:
            clean_env.setdefault("TERM", term)
        # masked live or not, the worker masks the recording too: it writes what a masker
        # holds back only once decided (more data or the end), never on a quiet timer
        worker_masks = masks.detectors if masks is not None else None
        return ctx.recording.open_channel(kind, command=self.mask(command) if command else None,
                                          term=term,
                                          width=width or 80, height=height or 24, env=clean_env,
                                          mask=worker_masks)

    @staticmethod
    def needs_more(text: str, dialect: str = "bash") -> bool:
        """Whether a shell would ask for more lines of ``text`` (open quote, ``&&``, ``if``...)."""
        from bastion.policy.continuation import needs_more
        return needs_more(text, dialect)

    def filter_env(self, env: dict) -> dict:
        """The variables of ``env`` that ``env_allow`` lets through to the target.  One with a
        NUL is not: sshd reads names and values as C strings and drops the whole upstream
        connection -- shared by every agent's sessions to that target -- on one."""
        allowed = self.config.settings.env_allow
        kept = {}
        for name, value in (env or {}).items():
            name_s = name.decode() if isinstance(name, bytes) else str(name)
            if any(fnmatch.fnmatchcase(name_s, pat) for pat in allowed):
                value_s = value.decode() if isinstance(value, bytes) else value
                if "\x00" in name_s or "\x00" in value_s:
                    from bastion.proto.sanitize import sanitize
                    log.warning("environment variable %s not passed on: it holds a NUL",
                                sanitize(name_s[:200]))
                    continue
                kept[name_s] = value_s
        return kept

    def record_refused(self, principal: Principal | None, client: str, target: str | None,
                       login: str | None, reason: str) -> bool:
        """Store a refused attempt in the index; client strings are length-capped first.

        Refused logins (no principal) are aggregated per source address per minute
        (bastion.ssh.limits.RefusedCounter): the first of a minute is stored at once, the
        rest as one summary row once the minute is over.  Returns whether a row was
        written for this attempt (callers log only those, so logs are bounded too).
        """
        from bastion.ssh.limits import (CLIENT_MAX, LOGIN_MAX, REASON_MAX, TARGET_MAX, cap,
                                         source_of)
        client = cap(client, CLIENT_MAX)
        login = cap(login, LOGIN_MAX)
        target = cap(target, TARGET_MAX)
        reason = cap(reason, REASON_MAX)
        if principal is not None:
            self._store_refused(principal, client, target, login, reason)
            return True
        rows = self.refused_counter.note(source_of(client), login, reason, time.time())
        stored_now = False
        for source, row_login, row_reason in rows:
            self._store_refused(None, client if row_reason is reason else source, None,
                                row_login, row_reason)
            stored_now = stored_now or row_reason is reason
        return stored_now

    def flush_refused(self, *, final: bool = False) -> None:
        """Store the summaries of refused-login minutes that are over (all of them if final)."""
        for source, login, reason in self.refused_counter.flush(None if final else time.time()):
            self._store_refused(None, source, None, login, reason)

    def _store_refused(self, principal, client, target, login, reason) -> None:
        if self.recorder is not None:
            try:
                self.recorder.refused(principal=principal, client=client, target=target,
                                      login=login, reason=reason)
            except BastionError as exc:
                log.error("could not record a refused attempt: %s", exc)

    async def close(self) -> None:
        if self._publisher is not None:
            self._publisher.close()
        await self.pool.close()
        if self.broker is not None:
            self.broker.close()          # pending requests end as "shutdown": nothing runs
        if self.recorder is not None:
            self.flush_refused(final=True)
            self.recorder.close()
