"""CPU per MB of building and encrypting sent packets: asyncssh's send path vs bastion.ssh.sendpath.

In process, no sockets: an asyncssh client connection object with only the state its
``send_packet`` reads (keys from asyncssh's ``get_encryption``, auth and kex done, a
transport that drops what it is given) sends MB of channel data, buffered as
``--write``-byte channel writes, in packets of ``--packet`` bytes, each as the channel's
``_flush_send_buf`` and ``send_packet`` would (asyncssh: a copy off the buffer's front,
the rest shifted down, String(data); sendpath: a view at an offset),
first through asyncssh's own code (its GCMCipher and SSHChannel methods restored),
then through the fast path, alternating ``--rounds`` times.  ``--against FILE`` adds
another version of the module (e.g. main's bastion/ssh/sendpath.py) as a third arm in the
same alternation, for a before/after of a change to it; ``--cipher`` keeps only the
ciphers named.  CPU time is the process's
(``time.process_time``), so other work on the machine moves it little.  This is the
part of the relay's cost the module changes, not the relay: see bench.ab_bulk for that.

    python -m bench.send_path [--mb 200] [--packet 32768] [--write 262144] [--rounds 3]
                              [--against PATH/sendpath.py] [--cipher chacha20-poly1305@openssh.com]
"""

from __future__ import annotations

import argparse
import importlib.util

import os
import statistics
import time
from pathlib import Path
from typing import Any

import asyncssh
from asyncssh import connection as aconn
from asyncssh.constants import MSG_CHANNEL_DATA
from asyncssh.crypto import cipher as acipher
from asyncssh.encryption import get_encryption, get_encryption_params

from bastion.ssh import sendpath, wire
from bench.report import write_json

CASES = [("chacha20-poly1305@openssh.com", ""), ("aes128-gcm@openssh.com", ""),
         ("aes256-gcm@openssh.com", ""), ("aes128-ctr", "hmac-sha2-256-etm@openssh.com"),
         ("aes256-ctr", "hmac-sha2-256")]


class _Sink:
    def write(self, data: Any) -> None:
        pass


class _Chan(asyncssh.packet.SSHPacketLogger):
    """What SSHChannel.send_packet reads: the connection and the peer's channel number."""

    _handler_names: dict[int, str] = {}

    def __init__(self, conn: Any) -> None:
        self._conn, self._send_chan = conn, 7

    @property
    def logger(self) -> Any:
        return self._conn.logger


def _conn(enc_alg: bytes, mac_alg: bytes) -> Any:
    keysize, ivsize, blocksize, mac_keysize, _, etm = get_encryption_params(enc_alg, mac_alg)
    c: Any = aconn.SSHClientConnection.__new__(aconn.SSHClientConnection)
    c._auth_complete = c._kex_complete = True
    c._auth_in_progress = False
    c._rekey_bytes, c._rekey_bytes_sent = 1 << 50, 0
    c._rekey_seconds, c._rekey_time = 3600, 1e18
    c._deferred_packets, c._compressor, c._compress_after_auth = [], None, False
    c._strict_kex, c._kexinit_sent, c._send_seq = True, False, 3
    c._logger = asyncssh.logging.logger
    c._transport = _Sink()
    c._send_encryption = get_encryption(enc_alg, os.urandom(keysize), os.urandom(ivsize),
                                        mac_alg, os.urandom(mac_keysize), etm)
    c._send_enchdrlen = 1 if etm else 5
    c._send_blocksize = max(8, blocksize)
    c.get_extra_info = lambda name, default=None: (
        enc_alg.decode() if name == "send_cipher" else default)
    wire.drop_cbc_padding_packets(c)
    return c


def _load(path: str) -> Any:
    """Another version of bastion.ssh.sendpath, from its file, as its own module."""
    spec = importlib.util.spec_from_file_location("sendpath_against", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.APPLIES, f"{path} does not apply to this asyncssh"
    return module


def _run(fast: Any, enc_alg: str, mac_alg: str, mb: int, packet: int, write: int) -> float:
    """ms CPU per MB through asyncssh's own send path (``fast`` None) or module ``fast``'s."""
    m = sendpath._MIRRORED
    if fast:
        fast.install_process_wide()
    else:
        acipher.GCMCipher.encrypt_and_sign = m["GCMCipher.encrypt_and_sign"]  # type: ignore
        acipher.GCMCipher.verify_and_decrypt = m["GCMCipher.verify_and_decrypt"]  # type: ignore
    conn = _conn(enc_alg.encode(), mac_alg.encode())
    if fast:
        fast.fast_send_path(conn)
    chan = _Chan(conn)
    send: Any = fast._channel_send_packet if fast else m["SSHChannel.send_packet"]
    block = os.urandom(write)
    t0 = time.process_time()
    for _ in range(mb * 1024 * 1024 // write):
        buf = bytearray(block)                     # what SSHChannel.write buffers
        if fast:                                   # as sendpath's _flush_send_buf
            for pos in range(0, write, packet):
                view = memoryview(buf)[pos:pos + packet]
                send(chan, MSG_CHANNEL_DATA, len(view).to_bytes(4, "big"), view)
        else:                                      # as asyncssh's
            while buf:
                data = buf[:packet]
                del buf[:packet]
                send(chan, MSG_CHANNEL_DATA, len(data).to_bytes(4, "big") + data)
    return (time.process_time() - t0) * 1000 / mb


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=200)
    ap.add_argument("--packet", type=int, default=32768)
    ap.add_argument("--write", type=int, default=262144, help="bytes per channel write")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--against", help="another sendpath.py to compare in the same run")
    ap.add_argument("--cipher", action="append", help="only this cipher (repeatable)")
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    arms: dict[str, Any] = {"asyncssh": None, "sendpath": sendpath}
    if args.against:
        arms["against"] = _load(args.against)
    assert sendpath.APPLIES, "asyncssh is not the version bastion.ssh.sendpath was written for"
    wire.skip_unlogged_packet_lines()        # as in the relay, on main too
    rows = []
    for enc_alg, mac_alg in CASES:
        if args.cipher and enc_alg not in args.cipher:
            continue
        runs: dict[str, list[float]] = {name: [] for name in arms}
        for _ in range(args.rounds):
            for name, module in arms.items():
                runs[name].append(_run(module, enc_alg, mac_alg, args.mb, args.packet,
                                       args.write))
        med = {name: statistics.median(v) for name, v in runs.items()}
        a, b = med["asyncssh"], med["sendpath"]
        rows.append({"cipher": enc_alg, "mac": mac_alg or "(aead)", "asyncssh_ms_per_mb": a,
                     "sendpath_ms_per_mb": b, "against_ms_per_mb": med.get("against"),
                     "runs": runs})
        line = (f"{enc_alg:32s} {mac_alg or '(aead)':32s} asyncssh {a:5.2f}  sendpath {b:5.2f} "
                f"ms CPU/MB  ({(a - b) / a:.0%} less)")
        if "against" in med:
            line += f"  against {med['against']:5.2f}"
        print(line)
    out = {"packet": args.packet, "write": args.write, "mb": args.mb, "load": os.getloadavg(),
           "against": args.against, "rows": rows}
    if args.out:
        write_json(out, Path(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
