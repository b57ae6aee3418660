"""Drive the real ``ssh -tt`` client on a pseudo-terminal, the way a person types.

``Term`` is a small pexpect: it spawns ssh on a fresh pty, sends keys written in a
readable notation (``"ech<Left>o<CR>"``), keeps what the agent's screen received both raw
and with ANSI escapes stripped, and waits for regular expressions in the stripped text.
Nothing here sleeps to decide an outcome: every wait is for something on the screen (or
for the ssh process to end), bounded by a timeout that only turns a hang into a failure.

The bastion's prompt is ``user@target:cwd$ `` and ``> `` on continuation lines.
"""

from __future__ import annotations

import codecs
import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import termios
import time

# -- the screen ---------------------------------------------------------------------------

_ESCAPES = re.compile(
    rb"\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)"      # OSC ... BEL / ST (titles, OSC 133 marks)
    rb"|\x1b[P^_X][^\x1b]*\x1b\\"               # DCS / PM / APC / SOS strings
    rb"|\x1b\[[0-?]*[ -/]*[@-~]"                # CSI
    rb"|\x1b[()*+][0-9A-Za-z]"                  # charset designation
    rb"|\x1b[ -/]*[0-~]"                        # other two-byte escapes (ESC =, ESC >, ESC 7 ...)
    rb"|[\x00-\x08\x0b-\x0c\x0e-\x1f\x7f]"      # other controls but \t \n \r
)
# an escape sequence that may still be arriving at the end of a chunk
_PARTIAL = re.compile(rb"\x1b(?:\][^\x07\x1b]*\x1b?|[P^_X][^\x1b]*\x1b?|\[[0-?]*[ -/]*"
                      rb"|[()*+ -/]*)?\Z")


def strip_ansi(data: bytes) -> bytes:
    return _ESCAPES.sub(b"", data).replace(b"\r", b"")


def prompt_regex(target: str | None = None) -> str:
    host = re.escape(target) if target else r"[\w.-]+"
    return r"[\w.-]+@" + host + r":[^\s]*\$ "


# -- keys -----------------------------------------------------------------------------------

KEYS = {
    "CR": b"\r", "LF": b"\n", "Enter": b"\r", "Tab": b"\t", "BS": b"\x7f", "Esc": b"\x1b",
    "Space": b" ", "NUL": b"\x00", "lt": b"<", "gt": b">",
    "Left": b"\x1b[D", "Right": b"\x1b[C", "Up": b"\x1b[A", "Down": b"\x1b[B",
    "Home": b"\x1b[H", "End": b"\x1b[F", "Home1": b"\x1b[1~", "End4": b"\x1b[4~",
    "HomeO": b"\x1bOH", "EndO": b"\x1bOF", "Del": b"\x1b[3~", "Ins": b"\x1b[2~",
    "PgUp": b"\x1b[5~", "PgDn": b"\x1b[6~", "F5": b"\x1b[15~", "F1": b"\x1bOP",
    "C-Left": b"\x1b[1;5D", "C-Right": b"\x1b[1;5C",
    "PS": b"\x1b[200~", "PE": b"\x1b[201~",          # bracketed paste start / end
}
_KEY = re.compile(r"<(C-[a-z@\[\\\]^_?]|M-.|x[0-9a-fA-F]{2}|[A-Za-z][A-Za-z0-9-]*)>")


def keys(text: str) -> bytes:
    """``"ech<Left>o<CR>"`` -> bytes.  ``<C-a>`` control keys, ``<M-x>`` Meta (ESC x),
    ``<x85>`` one raw byte, ``<PS>``/``<PE>`` bracketed paste markers, names in KEYS.
    Anything else between angle brackets is literal text."""
    out = bytearray()
    pos = 0
    for m in _KEY.finditer(text):
        name = m.group(1)
        if name.startswith("C-") and len(name) == 3:
            ch = name[2]
            code = 0x7f if ch == "?" else (ord(ch.upper()) & 0x1f)
            seq = bytes([code])
        elif name.startswith("M-") and len(name) == 3:
            seq = b"\x1b" + name[2].encode()
        elif name.startswith("x") and len(name) == 3 and name not in KEYS:
            seq = bytes([int(name[1:], 16)])
        elif name in KEYS:
            seq = KEYS[name]
        else:
            continue
        out += text[pos:m.start()].encode()
        out += seq
        pos = m.end()
    out += text[pos:].encode()
    return bytes(out)


# -- the terminal -------------------------------------------------------------------------

class SessionEnded(AssertionError):
    pass


class Term:
    """The real ssh client (``ssh -tt``) on a real pty, connected through the bastion."""

    def __init__(self, rig, token: str, *, target: str = "web1", command: str | None = None,
                 cols: int = 200, rows: int = 50, extra_args: tuple = ()) -> None:
        self.target = target
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        argv = ["ssh", "-F", str(rig.ssh_config), "-tt", "-e", "none", *extra_args,
                f"{rig.sshd.user}@{target}"]
        if command is not None:
            argv.append(command)

        def make_controlling_tty():
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.proc = subprocess.Popen(argv, env=rig.agent_env(token), stdin=slave, stdout=slave,
                                     stderr=slave, start_new_session=True,
                                     preexec_fn=make_controlling_tty)
        os.close(slave)
        self.raw = b""
        self.text = ""                      # everything received, escapes stripped
        self.mark = 0                       # expect() searches self.text from here
        self._pending = b""
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._eof = False
        self.prompt = prompt_regex(target)
        self._sync_n = 0

    # -- input ------------------------------------------------------------------------
    def send(self, data: bytes | str) -> None:
        if isinstance(data, str):
            data = keys(data)
        # a pty takes at most ~4 KiB at once in canonical mode on some kernels; write it all
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.master, view)
            except BlockingIOError:
                self._pump(0.05)
                continue
            view = view[n:]
            if view:
                self._pump(0)

    def line(self, text: str) -> None:
        self.send(keys(text) + b"\r")

    # -- output -----------------------------------------------------------------------
    def _feed(self, chunk: bytes) -> None:
        self.raw += chunk
        data = self._pending + chunk
        m = _PARTIAL.search(data, max(0, len(data) - 4096))
        cut = m.start() if m and len(data) - m.start() < 4096 else len(data)
        self._pending = data[cut:]
        self.text += self._decoder.decode(strip_ansi(data[:cut]))

    def _pump(self, timeout: float) -> bool:
        """Read what is there (waiting up to ``timeout``); False at end of file."""
        if self._eof:
            return False
        ready, _, _ = select.select([self.master], [], [], max(0.0, timeout))
        if not ready:
            return True
        try:
            chunk = os.read(self.master, 1 << 16)
        except OSError:
            chunk = b""
        if not chunk:
            self._eof = True
            return False
        self._feed(chunk)
        # take whatever else is already queued before anyone looks at the text
        while True:
            ready, _, _ = select.select([self.master], [], [], 0)
            if not ready:
                return True
            try:
                chunk = os.read(self.master, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                self._eof = True
                return False
            self._feed(chunk)

    def tail(self, n: int = 1500) -> str:
        return self.text[-n:]

    def since(self, start: int) -> str:
        return self.text[start:]

    def expect(self, pattern: str, timeout: float = 15.0, *, what: str | None = None) -> re.Match:
        """Wait for ``pattern`` (a regex over the stripped screen text) after the mark."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.text, self.mark)
            if m:
                self.mark = m.end()
                return m
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{what or pattern!r} not seen within {timeout:g}s; "
                                     f"screen ends with:\n{self.tail()}")
            if not self._pump(min(left, 0.5)):
                m = rx.search(self.text, self.mark)
                if m:
                    self.mark = m.end()
                    return m
                raise SessionEnded(f"session ended before {what or pattern!r}; "
                                   f"screen ends with:\n{self.tail()}")

    def expect_any(self, patterns: dict, timeout: float = 15.0) -> str:
        """Wait for the first of several named patterns; returns its name."""
        combined = "|".join(f"(?P<{name}>{p})" for name, p in patterns.items())
        m = self.expect(combined, timeout, what=" or ".join(patterns))
        return m.lastgroup

    def at_prompt(self, timeout: float = 15.0) -> None:
        """Wait until the screen ends with a fresh, empty prompt (after the mark)."""
        self.expect(self.prompt + r"\Z", timeout, what="a fresh prompt")

    def at_continuation(self, timeout: float = 15.0) -> None:
        self.expect(r"(?:^|\n)> \Z", timeout, what="a continuation prompt '> '")

    def quiet_screen(self) -> None:
        """Take in what has already arrived (no waiting)."""
        self._pump(0)

    # -- helpers built on the above ------------------------------------------------
    def ready(self, timeout: float = 30.0) -> "Term":
        """The first prompt, then one command, so the terminal is known to be live."""
        self.at_prompt(timeout)
        self.sync(timeout=timeout)
        return self

    def sync(self, timeout: float = 15.0) -> None:
        """Run a probe whose output cannot be the echo of what was typed, and wait for the
        prompt after it: everything before has been handled."""
        self._sync_n += 1
        n = self._sync_n
        # quote removal (not $((...)), which a dialect check might hold) makes the output
        # differ from the echo of what was typed, in bash and in dash alike
        self.line(f"echo sync-{n}-''{1000 + n}")
        self.expect(rf"sync-{n}-{1000 + n}\n", timeout, what=f"probe output sync-{n}-{1000 + n}")
        self.at_prompt(timeout)

    def run(self, command: str, output: str | None = None, timeout: float = 15.0) -> str:
        """Type a command and Enter; wait for ``output`` (regex) if given and the next prompt.
        Returns the screen text from the command's Enter on."""
        start = len(self.text)
        self.line(command)
        if output is not None:
            self.expect(output, timeout)
        self.at_prompt(timeout)
        return self.text[start:]

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None and not self._eof

    def wait_exit(self, timeout: float = 20.0) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self._pump(0.1)
        try:
            return self.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise AssertionError(f"ssh did not exit within {timeout:g}s; screen ends with:\n"
                                 f"{self.tail()}") from None

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                self.proc.kill()
            self.proc.wait()
        try:
            os.close(self.master)
        except OSError:
            pass


# -- a rig with a dash target and a policy of the test's own ------------------------------

SH_TARGET = "web1sh"
TARGETS = {"bash": "web1", "sh": SH_TARGET}


def start_shell_rig(root, issuer, *, rules: str, interactive_commands: list[str]):
    """A BastionRig whose policy is ``rules`` plus a rule allowing ``interactive_commands``,
    with a second target ``web1sh`` (``shell = "sh"``) beside ``web1`` (the default shell).

    The target option ``shell`` and the rule option ``interactive`` are new; each is used only
    if ``bastion policy check`` accepts it.  Returns (rig, features): features holds "sh"
    when the dash target exists and "interactive" when the rule carries the flag."""
    from tests.e2e.harness import BastionRig

    rig = BastionRig(root, issuer).setup()
    interactive_list = ", ".join(f'"{c}"' for c in interactive_commands)

    def variant(with_sh: bool, with_interactive: bool) -> str:
        rig.extra_targets = (f"""
[[targets]]
name = "{SH_TARGET}"
host = "127.0.0.1"
port = {rig.sshd.port}
user = "{rig.sshd.user}"
key = "web1"
host_key = "{rig.sshd.host_key_line}"
labels = ["prod"]
shell = "sh"
""" if with_sh else "")
        flag = "interactive = true\n" if with_interactive else ""
        return rig.policy_text(rules + f"""
[[rules]]
name = "interactive-programs"
action = "allow"
commands = [{interactive_list}]
{flag}""")

    chosen = None
    for with_sh, with_interactive in ((True, True), (True, False), (False, True), (False, False)):
        text = variant(with_sh, with_interactive)
        rig.write_policy(text)
        if rig.cli("policy", "check", "--policy", str(rig.policy_path), check=False).returncode == 0:
            chosen = (with_sh, with_interactive)
            break
    if chosen is None:                      # let the bastion itself say what is wrong
        chosen = (False, False)
        rig.write_policy(variant(False, False))
    features = set()
    if chosen[0]:
        features.add("sh")
    if chosen[1]:
        features.add("interactive")
    try:
        rig.start()
    except BaseException:
        rig.close()
        raise
    return rig, features


def canary_state(rig) -> list[str]:
    """What is wrong with the canary (empty: intact)."""
    problems = []
    if not rig.canary_dir.is_dir():
        problems.append(f"the canary directory {rig.canary_dir} is gone")
    elif not (rig.canary_dir / "canary.txt").is_file():
        problems.append("canary.txt is gone")
    elif (rig.canary_dir / "canary.txt").read_text() != "still here\n":
        problems.append("canary.txt was changed")
    if (rig.canary_dir / "pwned").exists():
        problems.append(f"{rig.canary_dir / 'pwned'} was created")
    return problems


def reset_canary(rig) -> None:
    rig.canary_dir.mkdir(exist_ok=True)
    (rig.canary_dir / "canary.txt").write_text("still here\n")
    try:
        (rig.canary_dir / "pwned").unlink()
    except FileNotFoundError:
        pass
    except IsADirectoryError:
        import shutil
        shutil.rmtree(rig.canary_dir / "pwned")
