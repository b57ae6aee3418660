"""The inner SSH connection the bastion terminates for a target.

After the outer connection has authenticated an agent (OIDC) and granted it a
target, the agent's ``ssh`` speaks SSH to "the target" through a direct-tcpip
channel.  The bastion answers that itself:

* it presents a host certificate for the target's name, signed by the bastion's
  host CA (``bastion ca known-hosts`` prints the line agents trust);
* there is no second login: the inner connection inherits the outer principal and
  accepts ``none`` — but only for the target's own login (``deploy@web1``); any
  other login is refused with a banner naming the right one;
* sessions (exec, shell) go through policy (:mod:`bastion.ssh.session`); port
  forwarding, agent forwarding and X11 are refused on inner connections for now.
"""

from __future__ import annotations

import copy
import logging
import time

import asyncssh

from bastion.logfmt import fields as log_fields
from bastion.ssh.relay import printable
from bastion.ssh.algs import server_algs
from bastion.ssh.context import InnerContext
from bastion.ssh.session import InnerSession

log = logging.getLogger("bastion.inner")
audit = logging.getLogger("bastion.audit")

INNER_WINDOW = 4 * 1024 * 1024
OPTIONS_TTL = 3600.0   # rebuild (and re-certify) at least hourly; certificates live longer


class InnerServer(asyncssh.SSHServer):
    """asyncssh server callbacks of one inner connection.  Denies by default."""

    def __init__(self, ctx: InnerContext) -> None:
        self.ctx = ctx
        self.conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn

    def connection_lost(self, exc: Exception | None) -> None:
        log.debug("inner connection %s closed: %s", self.ctx.conn_id, exc)
        if self.ctx.recording is not None:
            # a channel whose upstream command has not ended yet closes later, with its exit
            # status; the session row follows it (bastion.recording.recorder)
            self.ctx.recording.close(wait_for_channels=True)

    def begin_auth(self, username: str) -> bool:
        """No auth when the login is the target's user; otherwise an impossible login."""
        self.ctx.login = username
        target = self.ctx.target
        if username == target.user:
            audit.info("inner login principal=%s target=%s login=%s client=%s",
                       self.ctx.principal.subject, target.name, username, self.ctx.client,
                       extra=log_fields("inner_login", principal=self.ctx.principal.subject,
                                        target=target.name, login=username,
                                        client=self.ctx.client))
            return False
        audit.warning("inner login refused principal=%s target=%s login=%r client=%s: "
                      "not the target's user", self.ctx.principal.subject, target.name,
                      username, self.ctx.client,
                      extra=log_fields("inner_login_refused", principal=self.ctx.principal.subject,
                                       target=target.name, login=printable(username),
                                       client=self.ctx.client, reason="not the target's user"))
        services = self.ctx.services
        services.record_refused(self.ctx.principal, self.ctx.client, target.name, username,
                                f"login {username!r} is not the user of target {target.name}")
        if self.conn:
            self.conn.send_auth_banner(
                f"bastion: target {target.name} is reached as {target.user}@{target.name}, "
                f"not {username}@{target.name}\r\n")
        return True

    # Every authentication method is refused: only the 'none' path above logs in.
    def password_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def host_based_auth_supported(self) -> bool:
        return False

    def session_requested(self):
        chan = self.conn.create_server_channel(encoding=None, window=INNER_WINDOW)
        return chan, InnerSession(self.ctx)

    def connection_requested(self, dest_host, dest_port, orig_host, orig_port):
        """``ssh -L``: allowed only to a destination a grant's ``forward`` names
        (bastion.ssh.forward); the target opens it."""
        ctx = self.ctx
        services = ctx.services
        host = printable(str(dest_host))
        grant = services.config.forward_for(ctx.principal, ctx.target, str(dest_host),
                                            int(dest_port))
        expired = services.token_expired(ctx.principal)
        if grant is None or expired:
            why = expired or (f"no grant lets {ctx.principal.label} forward to "
                              f"{host}:{dest_port} from target {ctx.target.name}")
            audit.warning("port forwarding refused principal=%s target=%s dest=%s:%s: %s",
                          ctx.principal.subject, ctx.target.name, host, dest_port, why,
                          extra=log_fields("forward_refused", principal=ctx.principal.subject,
                                           target=ctx.target.name, dest=f"{host}:{dest_port}",
                                           reason=why))
            services.record_refused(ctx.principal, ctx.client, ctx.target.name, ctx.login,
                                    f"forward to {host}:{dest_port}: {why}")
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED,
                                            f"bastion: {why} (a grant's forward = "
                                            f"[\"HOST:PORT\"] allows it)")
        from bastion.ssh.forward import ForwardRelay
        return ForwardRelay(ctx, str(dest_host), int(dest_port), grant)

    def unix_connection_requested(self, dest_path):
        return False

    def server_requested(self, listen_host, listen_port):
        return False

    def unix_server_requested(self, listen_path):
        return False


class InnerOptionsCache:
    """Builds (once per target name) the asyncssh options of inner connections.

    Options are costly to build (asyncssh constructs them in an executor), so one is
    built per target and shallow-copied per connection with its own server factory.
    """

    def __init__(self, hostkeys) -> None:
        self._hostkeys = hostkeys
        self._cache: dict[str, tuple[float, asyncssh.SSHServerConnectionOptions]] = {}

    def invalidate(self) -> None:
        self._cache.clear()

    async def options_for(self, ctx: InnerContext) -> asyncssh.SSHServerConnectionOptions:
        name = ctx.target.name
        cached = self._cache.get(name)
        base = cached[1] if cached and time.monotonic() - cached[0] < OPTIONS_TTL else None
        if base is None:
            key, cert = self._hostkeys.cert_for(name)
            base = await asyncssh.SSHServerConnectionOptions.construct(
                server_host_keys=[(key, cert)],
                agent_forwarding=False, x11_forwarding=False, allow_pty=True,
                line_editor=False, allow_scp=False, config=None,
                **server_algs(ctx.services.config.settings.ciphers),
                keepalive_interval=0, login_timeout=60, gss_host=None,
            )
            self._cache[name] = (time.monotonic(), base)
        options = copy.copy(base)
        options.protocol_factory = lambda: InnerServer(ctx)
        return options
