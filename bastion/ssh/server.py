"""Run the bastion: listen, reload policy on SIGHUP or file change, shut down cleanly.

``serve(services, host, port)`` runs until SIGTERM/SIGINT; then it stops
accepting, tells every connected agent why it is being disconnected, closes the
upstream pool and the recorder, and returns.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import TYPE_CHECKING

import asyncssh

from bastion.errors import BastionError
from bastion.ssh.algs import server_algs
from bastion.ssh.limits import raise_nofile_limit
from bastion.ssh.outer import OuterServer
from bastion.ssh.wire import SocketTunnel

if TYPE_CHECKING:  # pragma: no cover - the Services are built by `bastion serve` and given
    from bastion.services import Services

log = logging.getLogger("bastion.server")

POLICY_POLL_SECONDS = 2.0
SHUTDOWN_MESSAGE = "bastion is shutting down; reconnect later"


async def start_listener(services: Services, host: str, port: int, *,
                         reuse_port: bool = False) -> asyncssh.SSHAcceptor:
    """Start accepting agent connections; the returned acceptor knows the bound port."""
    return await asyncssh.listen(
        host, port,
        server_factory=lambda: OuterServer(services),
        server_host_keys=services.hostkeys.server_host_keys(),
        config=None, **server_algs(services.config.settings.ciphers),
        agent_forwarding=False, x11_forwarding=False, allow_pty=False,
        allow_scp=False, line_editor=False,
        # bastion.ssh.outer enforces [settings] login_grace_time itself (reloadable);
        # asyncssh's own timer is the backstop
        login_timeout=services.config.settings.login_grace_time + 5,
        keepalive_interval=60, keepalive_count_max=3,
        gss_host=None,                          # no GSS: skips a getfqdn() per connection
        # TCP with joined writes (bastion.ssh.wire); reuse_port: `serve --workers` share it
        tunnel=SocketTunnel(reuse_address=True, **({"reuse_port": True} if reuse_port else {})),
    )


async def watch_policy(services: Services, stop: asyncio.Event,
                       interval: float = POLICY_POLL_SECONDS) -> None:
    """Every ``interval`` s until ``stop``: reload a changed policy file, store the refused-login
    summaries of minutes that ended, compare with a shared store's live nodes (when due).  Each step on its own: an error in one (of any type) is
    logged and the loop goes on, so a bad file never stops later reloads."""
    steps = (("policy reload", services.reload_if_changed),
             ("refused-login summaries", services.flush_refused),
             ("comparing with the store's live nodes", services.check_peers))
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), interval)
        except asyncio.TimeoutError:
            pass
        for what, step in steps:
            try:
                step()
            except Exception:  # noqa: BLE001 - the watcher must survive anything
                log.exception("policy watcher: %s failed", what)


def listen_error(host: str, port: int, exc: OSError) -> BastionError:
    """One sentence a person can act on for a failed bind (no traceback)."""
    import errno
    import socket
    where = f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return BastionError(f"cannot listen on {where}: the port is already in use",
                            hint="stop the other process on that port or pass another --listen")
    if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
        return BastionError(f"cannot listen on {where}: not an address of this machine "
                            f"({exc.strerror or exc})",
                            hint="pass --listen with a local address, e.g. 0.0.0.0:2222 or 127.0.0.1:2222")
    if exc.errno == errno.EACCES:
        return BastionError(f"cannot listen on {where}: permission denied",
                            hint="ports below 1024 need privileges; pass a port >= 1024")
    return BastionError(f"cannot listen on {where}: {exc.strerror or exc}",
                        hint="check the --listen address and port")


async def serve(services: Services, host: str, port: int, *, ready=None, also=None,
                worker: int = 0) -> None:
    """Serve agents on ``host:port`` until SIGTERM/SIGINT.  ``ready(port)`` is called once
    listening; ``also()``, if given, is awaited then too and returns a server to close at
    the end (the HTTPS API: bastion.api); its errors stop the start like a failed bind.
    ``worker``: worker N of ``bastion serve --workers`` (SO_REUSEPORT on the port its
    parent holds; the parent prints the listening line)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    limits = raise_nofile_limit()
    if limits is not None and limits[1] != limits[0]:
        log.info("open files limit %d (raised from %d; hard limit %d)",
                 limits[1], limits[0], limits[2])
    elif limits is not None:
        log.info("open files limit %d (hard limit %d)", limits[1], limits[2])
    try:
        await services.validator.refresh()      # the first login then pays no discovery/JWKS fetch
    except BastionError as exc:
        log.warning("identity provider not reachable at start (logins will retry): %s", exc)
    if worker:                              # its counters go on from its predecessor's
        from bastion import workermetrics
        try:
            await workermetrics.start(services.data_dir, worker)
        except OSError as exc:
            await services.close()
            raise BastionError(f"cannot share this worker's metrics in "
                               f"{workermetrics.metrics_dir(services.data_dir)}: "
                               f"{exc.strerror or exc}",
                               hint="the data dir must be writable by the bastion's user"
                               ) from exc
    try:
        acceptor = await start_listener(services, host, port, reuse_port=bool(worker))
    except OSError as exc:
        await services.close()
        await _stop_metrics(worker)
        raise listen_error(host, port, exc) from exc
    bound = acceptor.get_port()
    extra = None
    if also is not None:
        try:
            extra = await also()
        except BaseException:
            acceptor.close()
            await services.close()
            await _stop_metrics(worker)
            raise
    if worker:
        log.info("worker %d accepting on %s:%d", worker, host, bound)
    else:
        log.info("bastion listening on %s:%d (policy %s, data %s)", host, bound,
                 services.policy_path, services.data_dir)
    if ready is not None:
        ready(bound)

    def on_stop(signame: str) -> None:
        log.info("received %s: shutting down", signame)
        stop.set()

    def on_hup() -> None:
        log.info("received SIGHUP: reloading policy")
        try:
            services.reload()              # never raises; kept safe anyway: no signal kills serve
        except Exception:  # noqa: BLE001
            log.exception("policy reload failed")

    for sig, handler in ((signal.SIGTERM, lambda: on_stop("SIGTERM")),
                         (signal.SIGINT, lambda: on_stop("SIGINT")),
                         (signal.SIGHUP, on_hup)):
        try:
            loop.add_signal_handler(sig, handler)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - non-main thread
            pass

    watcher = asyncio.ensure_future(watch_policy(services, stop))
    try:
        await stop.wait()
    finally:
        watcher.cancel()
        acceptor.close()
        if extra is not None:
            extra.close()
        for server in services.connections:
            try:
                server.close(SHUTDOWN_MESSAGE)
            except Exception:  # noqa: BLE001 - best effort
                log.debug("error closing a connection", exc_info=True)
        if services.connections:
            await asyncio.sleep(0.3)         # let the goodbye messages go out
        await services.close()
        await _stop_metrics(worker)              # its last counters written
        try:
            await asyncio.wait_for(acceptor.wait_closed(), 5)
        except asyncio.TimeoutError:
            pass
        log.info("bastion stopped")


async def _stop_metrics(worker: int) -> None:
    if worker:
        from bastion import workermetrics
        try:
            await workermetrics.stop()
        except Exception:  # noqa: BLE001 - stopping goes on
            log.warning("could not write this worker's last metrics", exc_info=True)
