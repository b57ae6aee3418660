"""One recording worker process and the pipes to it (the bastion side of one incarnation).

:class:`WriterProcess` starts ``python -m bastion.recording.worker`` with two pipes,
waits until it says ``ready`` (index open, its write lock taken once) or why it could
not start, and then only carries bytes: :meth:`WriterProcess.send` ships one batch
(one frame, frames.py: its data crosses without being pickled; the GIL is released
while the pipe takes it) and a *reader* thread
hands the worker's events to ``on_events`` and, once the process has ended, calls
``on_exit`` with its exit status.  The queue, acknowledgements, replay and respawn are
the supervisor's (bastion.recording.supervisor).

Why a process: escaping a stream into asciicast JSON, hashing and writing it cost
about as much CPU as relaying it; in a thread they held the GIL the event loop needs
(recording took ~24 % of relay throughput).  The worker runs beside the loop on
another core.

The worker gets no secret from the environment (names like TOKEN, PASS, KEY... are dropped);
on a shared store it gets one key through a pipe of its own: the key of the store's tail
journal (bastion.recording.tailstore), which seals what its maskers hold undecided and opens
what a dead peer's held. It ignores the signals meant for the bastion, and inherits the data
dir's lock.

Not covered: what the worker does with a batch (worker.py, writer.py).
"""

from __future__ import annotations

import fcntl
import logging
import os
import pickle
import signal
import subprocess
import sys
import threading
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Callable

import bastion
from bastion.errors import RecordingError
from bastion.recording import frames
from bastion import store
from bastion.secret import SECRET_NAME

log = logging.getLogger("bastion.recording")

START_TIMEOUT = 30.0         # the worker must have opened the index by then
PIPE_BYTES = 1024 * 1024     # the data pipe's capacity (Linux F_SETPIPE_SZ; best effort)


class WriterProcess:
    """The recording worker process and the reader thread that hears it."""

    def __init__(self, data_dir: Path, max_bytes: int, lock_fd: int,
                 on_events: Callable[["WriterProcess", list[Any]], None],
                 on_exit: Callable[["WriterProcess", int], None], *,
                 tail_key: bytes | None = None) -> None:
        self._on_events = on_events
        self._on_exit = on_exit
        self._ready = threading.Event()
        self._fatal: str | None = None
        self._started = False            # it said "ready"
        self._send_lock = threading.Lock()
        self.exited = threading.Event()
        self.returncode: int | None = None
        to_r, to_w = os.pipe()
        from_r, from_w = os.pipe()
        _grow_pipe(to_w)
        # the worker needs no secret: the vault passphrase, tokens... stay in this process
        env = {k: v for k, v in os.environ.items() if not SECRET_NAME.search(k)}
        env.update(store.current().env())   # a shared store: where it is, how to log in
        root = str(Path(bastion.__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        level = logging.getLevelName(log.getEffectiveLevel())
        argv = [sys.executable, "-m", "bastion.recording.worker", "--data-dir", str(data_dir),
                "--max-bytes", str(max_bytes), "--in-fd", str(to_r), "--out-fd", str(from_w),
                "--lock-fd", str(lock_fd), "--log-level", str(level)]
        key_fds: tuple[int, ...] = ()
        if tail_key:                     # never in argv or the environment
            key_r, key_w = os.pipe()
            os.write(key_w, tail_key)
            os.close(key_w)
            key_fds = (key_r,)
            argv += ["--tail-key-fd", str(key_r)]
        try:
            self.proc = subprocess.Popen(argv, pass_fds=(to_r, from_w, lock_fd, *key_fds),
                                         env=env, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        except OSError as exc:
            for fd in (to_r, to_w, from_r, from_w, *key_fds):
                os.close(fd)
            raise RecordingError(f"cannot start the recording worker: {exc}",
                                 hint="bastion refuses to run sessions it cannot record") from exc
        for fd in (to_r, from_w, *key_fds):
            os.close(fd)
        self.pid = self.proc.pid
        self._out = Connection(to_w, readable=False)
        self._in = Connection(from_r, writable=False)
        self._reader = threading.Thread(target=self._read, name="bastion-recording-reader",
                                        daemon=True)
        self._reader.start()
        if not self._ready.wait(START_TIMEOUT) or not self._started:
            why = self._fatal or (f"it exited with status {self.returncode}"
                                  if self.returncode is not None
                                  else f"it did not start within {START_TIMEOUT:g} s")
            self.kill()
            self._reader.join(10)
            raise RecordingError(f"the recording worker could not start: {why}",
                                 hint="bastion refuses to run sessions it cannot record; "
                                      "check the data dir and the log above")

    def send(self, batch: list[Any]) -> bool:
        """Ship one batch of ``(seq, op)`` as one frame (frames.py); False if the worker is gone."""
        try:
            with self._send_lock:
                frames.write_frame(self._out.fileno(), batch)
        except (OSError, ValueError) as exc:        # the worker is gone: the reader reports it
            log.debug("recording: send to the worker failed: %s", exc)
            return False
        except Exception:                           # a bug (an op that does not pickle)
            log.exception("recording: a batch could not be sent")
            self.kill()
            return False
        return True

    def kill(self) -> None:
        try:
            self.proc.send_signal(signal.SIGKILL)
        except OSError:
            pass

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the process has ended and its events were handed on."""
        self._reader.join(timeout)
        return not self._reader.is_alive()

    @property
    def alive(self) -> bool:
        return not self.exited.is_set()

    def _read(self) -> None:
        try:
            while True:
                try:
                    events = pickle.loads(self._in.recv_bytes())
                except (EOFError, OSError):
                    break
                rest = []
                for event in events:
                    if event[0] == "ready":
                        self._started = True
                        self._ready.set()
                    elif event[0] == "fatal":
                        self._fatal = event[1]
                        self._ready.set()
                    else:
                        rest.append(event)
                if rest and self._started:
                    self._on_events(self, rest)
        except Exception:                           # never leave the supervisor waiting
            log.exception("recording reader failed")
            self.kill()
        finally:
            self.returncode = self.proc.wait()
            for conn in (self._in, self._out):
                try:
                    conn.close()
                except OSError:
                    pass
            self.exited.set()
            self._ready.set()
            if self._started:
                try:
                    self._on_exit(self, self.returncode)
                except Exception:  # noqa: BLE001
                    log.exception("recording: handling the worker's exit failed")


def describe_exit(rc: int) -> str:
    return f"killed by signal {-rc}" if rc < 0 else f"exit status {rc}"


def _grow_pipe(fd: int) -> None:
    try:
        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_BYTES)
    except OSError:
        pass                             # a smaller pipe only means more, smaller writes
