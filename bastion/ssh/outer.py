"""The outer SSH server: the connection agents make to the bastion itself.

Login: keyboard-interactive only.  The first prompt is ``OIDC token: ``; the
answer is the agent's OIDC access token, possibly over several rounds because
OpenSSH cuts every answer at 1023 bytes (see :mod:`bastion.identity.chunking`).
The outer login name is free: identity comes from the token.

After login the only thing an agent may do is open direct-tcpip channels
(``ssh -J``) to configured, granted targets; each such channel carries an inner
SSH connection that the bastion terminates itself (:mod:`bastion.ssh.inner`).
Sessions, remote forwarding and everything else on the outer connection are
refused.  Every refusal is logged with its reason and recorded in the index.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import asyncssh

from bastion.logfmt import fields as log_fields
from bastion.metrics import METRICS
from bastion.errors import IdentityError, TokenRejected
from bastion.identity.chunking import FIRST_PROMPT, TokenAssembler
from bastion.identity.principal import Principal
from bastion.ssh.context import InnerContext
from bastion.ssh.limits import LOGIN_MAX, cap
from bastion.ssh.link import LINK_PACKET, LINK_WINDOW, InnerLink
from bastion.ssh.relay import printable

if TYPE_CHECKING:  # pragma: no cover
    from bastion.services import Services

log = logging.getLogger("bastion.outer")
audit = logging.getLogger("bastion.audit")


class OuterServer(asyncssh.SSHServer):
    """asyncssh callbacks for one agent connection.  Everything not listed is refused."""

    def __init__(self, services: "Services") -> None:
        self.services = services
        self.conn: asyncssh.SSHServerConnection | None = None
        self.client = "?"
        self.login = ""
        self.principal: Principal | None = None
        self._assembler: TokenAssembler | None = None
        self.inner_links: set[InnerLink] = set()
        self.source = "?"
        self.failures = 0
        self._preauth = False          # counted in services.preauth until login or close
        self._grace: asyncio.TimerHandle | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        peer = conn.get_extra_info("peername") or ("?", 0)
        self.client = f"{peer[0]}:{peer[1]}"
        self.source = str(peer[0])
        settings = self.services.config.settings
        why = self.services.preauth.admit(self.source, max_total=settings.max_startups,
                                          max_per_source=settings.max_startups_per_source)
        if why is not None:
            # early drop, before the key exchange: costs the bastion one accept
            gate = self.services.preauth
            if gate.dropped == 1 or gate.dropped % 1000 == 0:
                log.warning("connection from %s dropped: %s (%d dropped so far)",
                            self.client, why, gate.dropped)
            conn.abort()
            return
        self._preauth = True
        self.services.track(self)
        self._grace = asyncio.get_running_loop().call_later(
            settings.login_grace_time, self._grace_expired, settings.login_grace_time)

    def _grace_expired(self, seconds: float) -> None:
        self._grace = None
        if self.principal is None and self.conn is not None:
            log.info("connection from %s: no login within %g s, disconnecting", self.client, seconds)
            self.conn.disconnect(asyncssh.DISC_PROTOCOL_ERROR,
                                 f"bastion: no login within {seconds:g} s")

    def _leave_preauth(self) -> None:
        if self._preauth:
            self._preauth = False
            self.services.preauth.release(self.source)
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None

    def auth_completed(self) -> None:
        self._leave_preauth()

    def connection_lost(self, exc: Exception | None) -> None:
        self._leave_preauth()
        self.services.untrack(self)
        log.debug("connection from %s closed: %s", self.client, exc)

    def _failed(self) -> bool:
        """Count a failed login; past ``max_auth_tries`` the connection is closed."""
        self.failures += 1
        limit = self.services.config.settings.max_auth_tries
        if self.failures >= limit and self.conn is not None:
            log.info("connection from %s: %d failed logins (max_auth_tries %d), disconnecting",
                     self.client, self.failures, limit)
            self.conn.disconnect(asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE,
                                 "bastion: too many authentication failures")
        return False

    # -- authentication ------------------------------------------------------
    def begin_auth(self, username: str) -> bool:
        self.login = cap(username, LOGIN_MAX)
        return True

    def password_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return False

    def host_based_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return True

    def get_kbdint_challenge(self, username: str, lang: str, submethods: str):
        if self.failures >= self.services.config.settings.max_auth_tries:
            return False
        self._assembler = TokenAssembler()
        return "", "", "", [(FIRST_PROMPT, False)]

    async def validate_kbdint_response(self, username: str, responses):
        assembler = self._assembler
        if assembler is None or len(responses) != 1:
            self._assembler = None
            return self._failed()
        try:
            next_prompt = assembler.feed(responses[0])
            if next_prompt is not None:
                return "", "", "", [(next_prompt, False)]
            token = assembler.token
            rounds = assembler.rounds
            self._assembler = None
            principal = await self.services.validator.validate(token)
        except TokenRejected as exc:
            self._assembler = None
            METRICS.inc("bastion_logins_total", result="refused")
            if self.services.record_refused(None, self.client, None, printable(username),
                                            f"token rejected: {exc.reason}"):
                audit.warning("login refused from %s (login %r): %s (further refusals from "
                              "this address this minute are counted, not logged)", self.client,
                              cap(printable(username), LOGIN_MAX), exc.reason,
                              extra=log_fields("login_refused", client=self.client,
                                               login=cap(printable(username), LOGIN_MAX),
                                               reason=exc.reason))
            else:
                log.debug("login refused from %s: %s (counted)", self.client, exc.reason)
            return self._failed()
        except IdentityError as exc:
            self._assembler = None
            METRICS.inc("bastion_logins_total", result="error")
            if self.services.record_refused(None, self.client, None, printable(username),
                                            f"identity provider unavailable: {exc}"):
                log.error("login from %s could not be checked: %s", self.client, exc)
            return self._failed()
        self.principal = principal
        METRICS.inc("bastion_logins_total", result="ok")
        audit.info("login principal=%s app=%s name=%r roles=%s client=%s token_rounds=%d",
                   principal.subject, principal.app_id, printable(principal.name),
                   ",".join(principal.roles), self.client, rounds,
                   extra=log_fields("login", principal=principal.subject, app=principal.app_id,
                                    name=printable(principal.name) if principal.name else None,
                                    roles=",".join(principal.roles), client=self.client))
        return True

    # -- channels --------------------------------------------------------------
    def session_requested(self):
        audit.warning("outer session refused principal=%s client=%s",
                      self.principal.subject if self.principal else "-", self.client)
        raise asyncssh.ChannelOpenError(
            asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED,
            "bastion: no shell on the bastion itself; use it as a jump host: "
            "ssh -J agent@bastion user@target")

    def connection_requested(self, dest_host: str, dest_port: int, orig_host: str, orig_port: int):
        services = self.services
        principal = self.principal
        config = services.config
        target = config.target(dest_host)
        expired = services.token_expired(principal)
        if expired:
            reason = expired
        elif target is None:
            reason = f"unknown target {printable(dest_host)!r}"
        elif not config.may_reach(principal, target):
            reason = f"target {target.name!r} is not granted to {principal.label}"
        else:
            reason = None
        if reason:
            audit.warning("channel refused principal=%s client=%s dest=%s:%s: %s",
                          principal.subject, self.client, printable(dest_host), dest_port, reason)
            services.record_refused(principal, self.client, printable(dest_host), None, reason)
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED,
                                            f"bastion: {reason}")
        ctx = InnerContext(services=services, principal=principal, target=target,
                           client=self.client)
        # the channel is made here to set its window (bastion.ssh.link); the session follows
        assert self.conn is not None
        chan = self.conn.create_tcp_channel(window=LINK_WINDOW, max_pktsize=LINK_PACKET)
        return chan, self._open_inner(ctx)

    async def _open_inner(self, ctx: InnerContext) -> InnerLink:
        options = await self.services.inner_options.options_for(ctx)
        loop = asyncio.get_running_loop()
        peer = tuple(self.client.rsplit(":", 1))
        link: InnerLink

        def make_connection():
            return asyncssh.SSHServerConnection(loop, options, wait=None)

        def lost():
            self.inner_links.discard(link)

        link = InnerLink(make_connection, (peer[0], int(peer[1]) if peer[1].isdigit() else 0), lost)
        link.ctx = ctx                   # (Services.terminate finds a session by it)
        self.inner_links.add(link)
        return link

    def server_requested(self, listen_host: str, listen_port: int) -> bool:
        return False

    def unix_connection_requested(self, dest_path: str):
        return False

    def unix_server_requested(self, listen_path: str) -> bool:
        return False

    def close(self, message: str) -> None:
        """Tell the agent why, then disconnect (used at shutdown).

        The inner connections' disconnect messages (which the agent's ssh prints) go
        out first; the outer connection is closed a moment later so they are not lost.
        """
        if self.conn is None:
            return
        for link in list(self.inner_links):
            if link.inner is not None:
                link.inner.disconnect(asyncssh.DISC_BY_APPLICATION, message)
            if link.transport is not None:
                link.transport.flush()
        conn = self.conn
        asyncio.get_running_loop().call_later(
            0.2, conn.disconnect, asyncssh.DISC_BY_APPLICATION, message)

