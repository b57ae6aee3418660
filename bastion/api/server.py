"""Start the API beside ``bastion serve``'s SSH listener (called once it listens)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from bastion.api.http import start_http
from bastion.api.routes import Api
from bastion.api.tls import load_or_create

log = logging.getLogger("bastion.api")


async def start_api(services: Any, host: str, port: int, *, cert: Path | None = None,
                    key: Path | None = None, ui: Any = None) -> asyncio.AbstractServer:
    """Listen with TLS on ``host:port``; raises BastionError (bind, certificate) to stop.
    ``ui``: ``(Api) -> Handler`` for ``/ui/`` (the web viewer, bastion.web), or None."""
    from bastion.errors import BastionError
    from bastion.ssh.hostca import default_bastion_names
    names = tuple(n for n in (host, *default_bastion_names(), "127.0.0.1", "localhost")
                  if n not in ("0.0.0.0", "::", ""))
    ctx, cert_path, fingerprint = load_or_create(services.data_dir, names, cert, key)
    try:
        server = await start_http(Api(services, ui=ui), host, port, ctx)
    except OSError as exc:
        raise BastionError(f"cannot listen on {host}:{port} for the API (--api-listen): "
                           f"{exc.strerror or exc}",
                           hint="pass another --api-listen, or stop what uses that port") from exc
    sockets = getattr(server, "sockets", None) or ()
    bound = sockets[0].getsockname()[1] if sockets else port
    log.info("API listening on https://%s:%d (certificate %s, %s)", host, bound, cert_path,
             fingerprint)
    return server
