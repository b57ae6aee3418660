"""CPU per MB of receiving channel data: asyncssh's receive path vs bastion.ssh.recvpath.

In process, no sockets: a stream of CHANNEL_DATA packets (``--packet`` bytes of data
each, encrypted with asyncssh's own ``encrypt_packet``) is handed, in ``--read``-byte
socket reads, to an asyncssh client connection object with only the state its receive
path reads (keys from asyncssh's ``get_encryption``, auth and kex done, one open
channel whose session drops what it gets), through wire's ``feed_in_slices`` and with
wire's and sendpath's process-wide changes, as in ``bastion serve``; first with
asyncssh's receive path, then with ``recvpath.fast_recv_path``, alternating
``--rounds`` times.  CPU time is the process's (``time.process_time``).  This is the
part of the relay's cost the module changes, not the relay: see bench.ab_bulk for that.

    python -m bench.recv_path [--mb 100] [--packet 32768] [--read 262144] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Any

import asyncssh
from asyncssh import channel as achannel
from asyncssh import connection as aconn
from asyncssh.constants import MSG_CHANNEL_DATA
from asyncssh.encryption import get_encryption, get_encryption_params

from bastion.ssh import recvpath, sendpath, wire
from bench.report import write_json

CASES = [("chacha20-poly1305@openssh.com", ""), ("aes128-gcm@openssh.com", ""),
         ("aes256-gcm@openssh.com", ""), ("aes128-ctr", "hmac-sha2-256-etm@openssh.com"),
         ("aes256-ctr", "hmac-sha2-256")]
CHAN = 5


class _Drop:
    def data_received(self, data: Any, datatype: Any) -> None:
        pass


def _params(enc_alg: bytes, mac_alg: bytes) -> tuple:
    keysize, ivsize, blocksize, mac_keysize, macsize, etm = get_encryption_params(enc_alg, mac_alg)
    keys = (os.urandom(keysize), os.urandom(ivsize), os.urandom(mac_keysize))
    return keys, max(8, blocksize), macsize, etm


def _stream(enc_alg: bytes, mac_alg: bytes, params: tuple, mb: int, packet: int) -> bytes:
    (key, iv, mac_key), blocksize, _, etm = params
    enc = get_encryption(enc_alg, key, iv, mac_alg, mac_key, etm)
    data = os.urandom(packet)
    payload = bytes((MSG_CHANNEL_DATA,)) + CHAN.to_bytes(4, "big") + packet.to_bytes(4, "big") + data
    out = []
    for seq in range(mb * 1024 * 1024 // packet):
        padlen = -((1 if etm else 5) + len(payload)) % blocksize
        padlen += blocksize if padlen < 4 else 0
        body = bytes((padlen,)) + payload + os.urandom(padlen)
        ct, mac = enc.encrypt_packet(seq, len(body).to_bytes(4, "big"), body)
        out += (ct, mac)
    return b"".join(out)


def _conn(enc_alg: bytes, mac_alg: bytes, params: tuple, window: int) -> Any:
    (key, iv, mac_key), blocksize, macsize, etm = params
    c: Any = aconn.SSHClientConnection.__new__(aconn.SSHClientConnection)
    c._logger = asyncssh.logging.logger
    c._inpbuf, c._packet, c._pktlen = b"", b"", 0
    c._recv_encryption = get_encryption(enc_alg, key, iv, mac_alg, mac_key, etm)
    c._recv_blocksize, c._recv_macsize = blocksize, macsize
    c._recv_seq, c._max_recv_pktlen = 0, 1 << 20
    c._decompressor, c._decompress_after_auth = None, False
    c._auth_complete = c._kex_complete = True
    c._auth, c._auth_final, c._kex, c._ignore_first_kex, c._strict_kex = None, False, None, False, True
    c._transport = object()
    chan: Any = achannel.SSHChannel.__new__(achannel.SSHChannel)
    chan._conn, chan._send_chan, chan._recv_chan, chan._logger = c, 9, CHAN, c._logger
    chan._recv_state = chan._send_state = "open"
    chan._init_recv_window = chan._recv_window = window
    chan._recv_paused, chan._recv_buf, chan._encoding = False, [], None
    chan._session = _Drop()
    c._channels = {CHAN: chan}
    c._recv_handler = c._recv_pkthdr
    c._reset_keepalive_timer = lambda: None
    c._force_close = lambda exc: (_ for _ in ()).throw(exc)
    return c


def _run(fast: bool, enc_alg: str, mac_alg: str, params: tuple, stream: bytes, read: int) -> float:
    conn = _conn(enc_alg.encode(), mac_alg.encode(), params, 2 * len(stream))
    wire.feed_in_slices(conn)
    if fast:
        recvpath.fast_recv_path(conn)
    reads = [stream[pos:pos + read] for pos in range(0, len(stream), read)]   # (as recv() gives)
    t0 = time.process_time()
    for data in reads:
        conn.data_received(data)
    ms = (time.process_time() - t0) * 1000
    assert conn._inpbuf == b"" and conn._recv_seq > 0, "the stream was not received whole"
    return ms / (len(stream) / 1e6)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=100)
    ap.add_argument("--packet", type=int, default=32768, help="data bytes per packet")
    ap.add_argument("--read", type=int, default=262144, help="bytes per socket read")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    assert recvpath.APPLIES, "asyncssh is not the version bastion.ssh.recvpath was written for"
    wire.skip_unlogged_packet_lines()        # as in the relay, on main too
    sendpath.install_process_wide()          # (one AESGCM per key, as on main)
    rows = []
    for enc_alg, mac_alg in CASES:
        params = _params(enc_alg.encode(), mac_alg.encode())
        stream = _stream(enc_alg.encode(), mac_alg.encode(), params, args.mb, args.packet)
        runs: dict[str, list[float]] = {"asyncssh": [], "recvpath": []}
        for _ in range(args.rounds):
            runs["asyncssh"].append(_run(False, enc_alg, mac_alg, params, stream, args.read))
            runs["recvpath"].append(_run(True, enc_alg, mac_alg, params, stream, args.read))
        a, b = (statistics.median(runs[k]) for k in ("asyncssh", "recvpath"))
        per_packet = 1e3 * len(stream) / 1e6 / (args.mb * 1024 * 1024 // args.packet)  # us per ms/MB
        rows.append({"cipher": enc_alg, "mac": mac_alg or "(aead)", "asyncssh_ms_per_mb": a,
                     "recvpath_ms_per_mb": b, "runs": runs})
        print(f"{enc_alg:30s} {mac_alg or '(aead)':30s} asyncssh {a:5.2f}  recvpath {b:5.2f} "
              f"ms CPU/MB  ({(a - b) / a:.0%} less; {a * per_packet:.1f} -> {b * per_packet:.1f} "
              f"us per packet)")
    out = {"packet": args.packet, "read": args.read, "mb": args.mb, "load": os.getloadavg(),
           "rows": rows}
    if args.out:
        write_json(out, Path(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
