"""The agent's SFTP requests, served with reads and writes in flight together.

asyncssh's ``SFTPServerHandler`` answers one request before it reads the next. The
bastion relays each request upstream, so that would cost one round trip to the target
per 32-255 KB, and throw away the pipelining OpenSSH's client does (up to 64 requests
outstanding). :class:`PipelinedHandler` keeps that pipelining for the bulk of a
transfer:

* ``READ`` and ``WRITE`` requests run as tasks, up to ``MAX_IN_FLIGHT`` at once and
  ``MAX_IN_FLIGHT_BYTES`` of data (a write's data, a read's answer: :func:`bulk_cost`),
  started in the order they arrived. Each sends its upstream request before it first
  waits, so the target receives them in the agent's order. Answers may go back out of
  order, which the SFTP protocol allows: each carries its request id.
* Every other request (open, close, stat, rename ...) first waits until no read or
  write is in flight. A ``close`` therefore sees every write before it acknowledged,
  and the order of everything that is not bulk data stays the agent's.

What one sftp channel may make the bastion hold is bounded, whatever the agent sends:

* requests not yet read: the channel's window twice over (the stream's buffer pauses
  the channel at one window, the channel then holds at most what the window allowed);
* requests in flight, or their answers once done: ``MAX_IN_FLIGHT_BYTES``, and the next
  request waiting for room (at most asyncssh's 4 MiB packet limit); a read is answered
  with at most ``READ_MAX`` bytes (SFTP allows short reads; :mod:`bastion.ssh.sftprelay`
  cuts it);
* answers the agent has not taken (its window is full): the next request is not read
  while more than ``SEND_HIGH`` is queued.

With the 4 MiB inner window that is at most 8 + 16 + 4 + 1 = 29 MiB per sftp channel, plus
the read-ahead's blocks of each open file (:mod:`bastion.ssh.sftpreadahead`).  Before,
64 writes of 4 MiB could be in flight (256 MiB) and answers queued without limit.

Decisions are made at open (:mod:`bastion.ssh.sftprelay`): a read or write only
uses a handle that was opened after its decision.

Not covered: running opens or stats concurrently (they are few per file).
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from typing import Any

import asyncssh
from asyncssh.constants import FXP_READ, FXP_WRITE
from asyncssh.packet import PacketDecodeError
from asyncssh.sftp import MAX_SFTP_READ_LEN, SFTPBadMessage, SFTPServerHandler

from bastion.proto.sanitize import sanitize

log = logging.getLogger("bastion.sftp")

MAX_IN_FLIGHT = 64          # OpenSSH's sftp keeps at most 64 requests outstanding
MAX_IN_FLIGHT_BYTES = 16 * 1024 * 1024   # OpenSSH's 64 x 255 KiB stays just under it
READ_MAX = MAX_SFTP_READ_LEN             # the longest read answered (what limits@ says)
SEND_HIGH = 1024 * 1024     # answers queued for the agent before its next request waits
_BULK = frozenset({FXP_READ, FXP_WRITE})


def bulk_cost(pkttype: int, payload: bytes) -> int:
    """Bytes a READ or WRITE holds in the bastion while in flight: the data of a write,
    the answer of a read (``payload``: the whole SFTP packet; a read ends in its length)."""
    if pkttype == FXP_READ:
        return min(int.from_bytes(payload[-4:], "big"), READ_MAX) if len(payload) >= 4 else 0
    return len(payload)


class PipelinedHandler(SFTPServerHandler):
    """asyncssh's SFTP server protocol with bulk requests in flight together (module doc)."""

    async def recv_packets(self) -> None:
        inflight: set[asyncio.Task[None]] = set()
        held = [0]                              # bytes of the requests in flight
        failure: Exception | None = None
        ended = False
        try:
            while self._reader:
                packet = await self.recv_packet()
                pkttype = packet.get_byte()
                pktid = packet.get_uint32()
                self.log_received_packet(pkttype, pktid, packet)
                if pkttype in _BULK:
                    cost = bulk_cost(pkttype, packet.get_full_payload())
                    while inflight and (len(inflight) >= MAX_IN_FLIGHT
                                        or held[0] + cost > MAX_IN_FLIGHT_BYTES):
                        await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
                    writer = self._writer
                    if writer is not None:      # answers queued: at most SEND_HIGH more
                        await writer.drain()
                    task = asyncio.ensure_future(self._process_packet(pkttype, pktid, packet))
                    inflight.add(task)
                    held[0] += cost
                    task.add_done_callback(_done(inflight, held, cost))
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


def _done(inflight: set[Any], held: list[int], cost: int) -> Any:
    """The callback of a bulk request's task: it is no longer in flight."""
    def done(task: "asyncio.Task[None]") -> None:
        inflight.discard(task)
        held[0] -= cost
    return done


def start_server(server: Any, stream: Any, chan: Any, version: int) -> "asyncio.Task[None]":
    """Run the SFTP server protocol for ``server`` on the agent's channel ``chan``, whose
    callbacks feed ``stream`` (an asyncssh ``SSHServerStreamSession``)."""
    from asyncssh.stream import SSHReader, SSHWriter
    reader: SSHReader[bytes] = SSHReader(stream, chan)
    writer: SSHWriter[bytes] = SSHWriter(stream, chan)
    chan.set_write_buffer_limits(high=SEND_HIGH)
    handler = PipelinedHandler(server, reader, writer, version)
    task = asyncio.ensure_future(handler.run())
    task.add_done_callback(lambda t: _ended(t, chan))
    return task


def _ended(task: "asyncio.Task[None]", chan: Any) -> None:
    """A protocol that failed ends the agent's channel: its sftp would wait for an answer
    that never comes."""
    if not task.cancelled() and task.exception() is not None:
        exc = task.exception()
        # the traceback may quote agent bytes (a path that is not UTF-8): shown inert
        trace = sanitize("".join(traceback.format_exception(exc)), keep_newlines=True)
        log.error("sftp server protocol failed; the agent's channel is closed:\n%s", trace)
        chan.close()
