"""The agent's SFTP requests, served with reads and writes in flight together.

asyncssh's ``SFTPServerHandler`` answers one request before it reads the next. The
bastion relays each request upstream, so that would cost one round trip to the target
per 32-255 KB, and throw away the pipelining OpenSSH's client does (up to 64 requests
outstanding). :class:`PipelinedHandler` keeps that pipelining for the bulk of a
transfer:

* ``READ`` and ``WRITE`` requests run as tasks, up to ``MAX_IN_FLIGHT`` at once,
  started in the order they arrived. Each sends its upstream request before it first
  waits, so the target receives them in the agent's order. Answers may go back out of
  order, which the SFTP protocol allows: each carries its request id.
* Every other request (open, close, stat, rename ...) first waits until no read or
  write is in flight. A ``close`` therefore sees every write before it acknowledged,
  and the order of everything that is not bulk data stays the agent's.

Decisions are made at open (:mod:`bastion.ssh.sftprelay`): a read or write only
uses a handle that was opened after its decision.

Not covered: running opens or stats concurrently (they are few per file).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncssh
from asyncssh.constants import FXP_READ, FXP_WRITE
from asyncssh.packet import PacketDecodeError
from asyncssh.sftp import SFTPBadMessage, SFTPServerHandler

log = logging.getLogger("bastion.sftp")

MAX_IN_FLIGHT = 64          # OpenSSH's sftp keeps at most 64 requests outstanding
_BULK = frozenset({FXP_READ, FXP_WRITE})


class PipelinedHandler(SFTPServerHandler):
    """asyncssh's SFTP server protocol with bulk requests in flight together (module doc)."""

    async def recv_packets(self) -> None:
        inflight: set[asyncio.Task[None]] = set()
        failure: Exception | None = None
        ended = False
        try:
            while self._reader:
                packet = await self.recv_packet()
                pkttype = packet.get_byte()
                pktid = packet.get_uint32()
                self.log_received_packet(pkttype, pktid, packet)
                if pkttype in _BULK:
                    while len(inflight) >= MAX_IN_FLIGHT:
                        await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
                    task = asyncio.ensure_future(self._process_packet(pkttype, pktid, packet))
                    inflight.add(task)
                    task.add_done_callback(inflight.discard)
                    continue
                if inflight:
                    await asyncio.wait(set(inflight))
                await self._process_packet(pkttype, pktid, packet)
        except PacketDecodeError as exc:
            failure, ended = SFTPBadMessage(str(exc)), True
        except EOFError:
            ended = True
        except (OSError, asyncssh.Error) as exc:
            failure, ended = exc, True
        finally:
            if inflight:                       # their answers go out before the end
                await asyncio.wait(set(inflight))
        if ended:
            await self._cleanup(failure)


def start_server(server: Any, stream: Any, chan: Any, version: int) -> "asyncio.Task[None]":
    """Run the SFTP server protocol for ``server`` on the agent's channel ``chan``, whose
    callbacks feed ``stream`` (an asyncssh ``SSHServerStreamSession``)."""
    from asyncssh.stream import SSHReader, SSHWriter
    reader: SSHReader[bytes] = SSHReader(stream, chan)
    writer: SSHWriter[bytes] = SSHWriter(stream, chan)
    handler = PipelinedHandler(server, reader, writer, version)
    task = asyncio.ensure_future(handler.run())
    task.add_done_callback(_log_failure)
    return task


def _log_failure(task: "asyncio.Task[None]") -> None:
    if not task.cancelled() and task.exception() is not None:
        exc = task.exception()
        log.error("sftp server protocol failed: %r", exc, exc_info=exc)
