"""Issue 16 item 7: a policy reload is all or nothing, and the file watcher survives anything.

Every bad file below would change the masks, the rules and the settings if it were taken; each
is refused as a whole instead, on SIGHUP and through the watcher: the old masks still mask, the
old rules still decide, one log line says why, and a later valid file is still picked up.
In process (bastion.services.Services with its real parts) the whole previous state is checked
object by object; end to end (``bastion serve``, the OpenSSH client) it is checked through what
an agent sees and what the recordings hold.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from pathlib import Path

import asyncssh
import pytest

from bastion.config import load_config
from bastion.identity.oidc import TokenValidator
from bastion.services import Services
from bastion.ssh.server import watch_policy
from bastion.ssh.upstream import UpstreamPool
from tests.e2e.harness import POLICY_RULES, BastionRig

EMP, TCK = "EMP-123456", "TCK-1234"
OLD_MASK = "[[masks]]\nname = \"employee-id\"\nregex = 'EMP-[0-9]{6}'\n"
NEW_MASK = "[[masks]]\nname = \"ticket\"\nregex = 'TCK-[0-9]{4}'\n"
# the new rules no longer allow printf: a reload taken would deny it
NEW_RULES = POLICY_RULES.replace('"printf", ', "")

# name -> (how the new file is broken, what the refusal says)
BAD = {
    "no-oidc": (lambda t: _drop_oidc(t), "policy has no [oidc] table"),
    "bad-mask-regex": (lambda t: t + "[[masks]]\nname = \"broken\"\nregex = 'EMP-(['\n",
                       "masks[1].regex is not a valid regular expression"),
    "mask-regex-too-deep": (lambda t: t + "[[masks]]\nname = \"deep\"\nregex = '"
                            + "(?:" * 2000 + "x" + ")" * 2000 + "'\n",
                            "masks[1].regex is too complex to compile"),
    # parses, then raises inside the reload while building the new token validator
    "validator-fails": (lambda t: _oidc_v1_common(t), "oidc.allow_v1 needs an issuer"),
    "unknown-cipher": (lambda t: t.replace("[settings]\n", "[settings]\nciphers = [\"rot13\"]\n", 1),
                       "unsupported cipher(s) rot13"),
    "not-utf8": (lambda t: t + "# \udcff\n", "policy file is not UTF-8 text"),
}


def _drop_oidc(text: str) -> str:
    head, rest = text.split("[oidc]", 1)
    return head + rest[rest.index("\n[[targets]]"):]


def _oidc_v1_common(text: str) -> str:
    head, rest = text.split("[oidc]", 1)
    body = rest[:rest.index("\n[[targets]]")]
    return (head + '[oidc]\nissuer = "https://login.microsoftonline.com/common/v2.0"\n'
            'audience = "api://bastion"\nallow_v1 = true\n' + rest[len(body):])


def _write(path: Path, text: str) -> None:
    path.write_bytes(text.encode("utf-8", "surrogateescape"))


# -- in process ------------------------------------------------------------------------------

HOST_KEY = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
OIDC = '[oidc]\nissuer = "https://idp.example.com/bastion"\naudience = "api://bastion"\n'


def _policy(rules: str, masks: str, settings: str = "") -> str:
    target = ('[[targets]]\nname = "web1"\nhost = "127.0.0.1"\nuser = "deploy"\nkey = "web1"\n'
              f'host_key = "{HOST_KEY}"\n')
    grant = '[[grants]]\nwho = ["role:agents"]\ntargets = ["web1"]\nchannels = ["exec"]\n'
    return "\n".join((OIDC, target, grant, rules.replace("[settings]\n", "[settings]\n" + settings, 1),
                      masks))


class Broker:
    """The approval broker seam of Services: records the settings it is given; ``fail_on``
    makes reconfigure raise for settings with that connect_timeout (an error mid-swap)."""

    def __init__(self, settings) -> None:
        self.settings = settings
        self.calls = 0
        self.fail_on: float | None = None

    def reconfigure(self, settings) -> None:
        self.calls += 1
        if self.fail_on is not None and settings.connect_timeout == self.fail_on:
            raise RuntimeError("broker exploded")
        self.settings = settings

    def close(self) -> None:
        pass


@pytest.fixture
def services(tmp_path):
    path = tmp_path / "policy.toml"
    _write(path, _policy(POLICY_RULES, OLD_MASK, "connect_timeout = 7\n"))
    config = load_config(path)
    s = Services(policy_path=path, data_dir=tmp_path, keys_dir=tmp_path, config=config,
                 validator=TokenValidator(config.oidc), vault=None, hostkeys=None,
                 pool=UpstreamPool(load_key=lambda name: None, connect_timeout=7),
                 inner_options=None, broker=Broker(config.settings))
    s.detectors = s._detectors_for(config)
    s._policy_stamp = s._stamp()
    return s


def _state(s: Services) -> tuple:
    return (s.config, s.detectors, s.validator, s.broker.settings, s.pool.connect_timeout,
            s.pool.ciphers, s.pool.idle_timeout, s.pool.max_connects, s.pool.queue_timeout)


def _old_state_holds(s: Services, before: tuple) -> None:
    assert all(a is b or a == b for a, b in zip(_state(s), before))
    assert s.mask(f"id {EMP} {TCK}") == f"id [MASKED:employee-id] {TCK}"
    assert [m.name for m in s.config.masks] == ["employee-id"]
    assert "printf" in s.config.raw["rules"][0]["commands"]


@pytest.mark.parametrize("name", sorted(BAD))
def test_a_bad_file_keeps_the_whole_previous_state(services, name, caplog):
    broken, says = BAD[name]
    before = _state(services)
    _write(services.policy_path, broken(_policy(NEW_RULES, NEW_MASK, "connect_timeout = 9\n")))
    with caplog.at_level(logging.DEBUG, logger="bastion.services"):
        assert services.reload() is False
    _old_state_holds(services, before)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    line = errors[0].getMessage()
    assert line.startswith("policy reload refused, previous policy kept: ") and says in line
    assert "\n" not in line and not errors[0].exc_info
    # the next valid file is taken whole
    _write(services.policy_path, _policy(NEW_RULES, NEW_MASK, "connect_timeout = 9\n"
                                         "upstream_connects = 3\nupstream_queue_timeout = 20\n"))
    assert services.reload() is True
    assert services.mask(f"id {EMP} {TCK}") == f"id {EMP} [MASKED:ticket]"
    assert services.pool.connect_timeout == 9 and services.broker.settings.connect_timeout == 9
    assert (services.pool.max_connects, services.pool.queue_timeout) == (3, 20)


def test_an_error_while_swapping_puts_everything_back(services, caplog):
    before = _state(services)
    services.broker.fail_on = 9
    _write(services.policy_path, _policy(NEW_RULES, NEW_MASK, "connect_timeout = 9\n"))
    with caplog.at_level(logging.DEBUG, logger="bastion.services"):
        assert services.reload() is False
    _old_state_holds(services, before)
    assert services.broker.calls == 2            # the new settings (raised), then the old again
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == ["policy reload refused, previous policy kept: RuntimeError: broker exploded"]


async def test_the_watcher_survives_any_error_and_takes_a_later_file(services):
    stop = asyncio.Event()
    interval = 0.05
    task = asyncio.ensure_future(watch_policy(services, stop, interval))

    async def settle() -> None:                  # a few polls
        await asyncio.sleep(4 * interval)

    try:
        before = _state(services)
        for name in sorted(BAD):
            _write(services.policy_path,
                   BAD[name][0](_policy(NEW_RULES, NEW_MASK, "connect_timeout = 9\n")))
            await settle()
            _old_state_holds(services, before)
        services.broker.fail_on = 9
        _write(services.policy_path, _policy(NEW_RULES, NEW_MASK, "connect_timeout = 9\n"))
        await settle()
        _old_state_holds(services, before)
        services.broker.fail_on = None
        _write(services.policy_path, _policy(NEW_RULES, NEW_MASK, "connect_timeout = 11\n"))
        await settle()
        assert services.config.settings.connect_timeout == 11
        assert services.mask(f"id {EMP} {TCK}") == f"id {EMP} [MASKED:ticket]"
        assert not task.done()
    finally:
        stop.set()
        await asyncio.wait_for(task, 10 * interval)


async def test_the_watcher_loop_itself_outlives_exceptions_of_any_kind(caplog):
    class Exploding:
        """The watcher's services seam: each step raises something else, then works."""

        def __init__(self) -> None:
            self.errors = [RuntimeError("boom"), KeyError("k"), RecursionError("deep"), None]
            self.reloads = self.flushes = self.checks = 0

        def reload_if_changed(self) -> bool:
            self.reloads += 1
            error = self.errors[min(self.reloads, len(self.errors)) - 1]
            if error is not None:
                raise error
            return False

        def flush_refused(self) -> None:
            self.flushes += 1
            if self.flushes == 1:
                raise OSError("disk")

        def check_peers(self) -> None:
            self.checks += 1
            if self.checks == 2:
                raise ConnectionError("store")

    fake = Exploding()
    stop = asyncio.Event()
    with caplog.at_level(logging.ERROR, logger="bastion.server"):
        task = asyncio.ensure_future(watch_policy(fake, stop, 0.01))
        for _ in range(200):
            if fake.reloads >= 6:
                break
            await asyncio.sleep(0.01)
        stop.set()
        await asyncio.wait_for(task, 1)
    assert fake.reloads >= 6 and fake.flushes >= 6 and fake.checks >= 6   # every step, every poll
    assert task.exception() is None
    failed = [r.getMessage() for r in caplog.records]
    assert "policy watcher: policy reload failed" in failed
    assert "policy watcher: refused-login summaries failed" in failed
    assert "policy watcher: comparing with the store's live nodes failed" in failed


# -- end to end ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def rig(tmp_path_factory, issuer):
    r = BastionRig(tmp_path_factory.mktemp("reload"), issuer).setup()
    r.old_text = r.policy_text(POLICY_RULES.replace("[settings]\n", "[settings]\nmask_live = true\n",
                                                    1)) + "\n" + OLD_MASK
    r.new_text = r.policy_text(NEW_RULES.replace("[settings]\n", "[settings]\nmask_live = true\n",
                                                 1)) + "\n" + NEW_MASK
    r.write_policy(r.old_text)
    r.start()
    yield r
    r.close()


def _refusals(rig) -> list[str]:
    return [line for line in rig.log().splitlines() if "policy reload refused" in line]


def _wait_refusals(rig, n: int, timeout: float = 15.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while len(_refusals(rig)) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    return _refusals(rig)


def _old_policy_and_masks_in_force(rig, token) -> None:
    r = rig.ssh(token, f"echo id {EMP} {TCK}")
    assert r.returncode == 0, r.err
    assert r.out == f"id [MASKED:employee-id] {TCK}\n"       # the old mask, live
    r = rig.ssh(token, "printf 'still-allowed\\n'")
    assert (r.returncode, r.out) == (0, "still-allowed\n"), r.err   # the old rules


def test_bad_files_on_sighup_and_through_the_watcher_change_nothing(rig, token):
    _old_policy_and_masks_in_force(rig, token)
    seen = len(_refusals(rig))
    for name in sorted(BAD):
        broken, says = BAD[name]
        # on SIGHUP
        _write(rig.policy_path, broken(rig.new_text))
        rig.proc.send_signal(signal.SIGHUP)
        lines = _wait_refusals(rig, seen + 1)
        assert len(lines) > seen, f"{name}: no refusal on SIGHUP"
        assert says in lines[-1], (name, lines[-1])
        seen = len(lines)
        _old_policy_and_masks_in_force(rig, token)
        # through the watcher (the file written again: a new change to notice)
        _write(rig.policy_path, broken(rig.new_text))
        lines = _wait_refusals(rig, seen + 1)
        assert len(lines) > seen, f"{name}: the watcher did not notice the file"
        assert says in lines[-1], (name, lines[-1])
        seen = len(lines)
        _old_policy_and_masks_in_force(rig, token)
    assert rig.proc.poll() is None
    # the custom-masked value never reached a recording, the index or the log meanwhile
    # (recordings of closed channels are complete)
    blobs = [p.read_bytes() for p in (rig.data_dir / "recordings").rglob("*.cast")]
    blobs.append(rig.index_bytes())          # SQLite's file and WAL, or the PostgreSQL store
    blobs.append(rig.log().encode())
    assert any(b"[MASKED:employee-id]" in b for b in blobs)
    assert not any(EMP.encode() in b for b in blobs)
    # the watcher is alive: a later valid file is taken whole
    _write(rig.policy_path, rig.new_text)
    rig.wait_log("policy reloaded", timeout=15)
    r = rig.ssh(token, f"echo id {EMP} {TCK}")
    assert r.out == f"id {EMP} [MASKED:ticket]\n"
    r = rig.ssh(token, "printf 'now-denied\\n'")
    assert r.returncode == 126 and "now-denied" not in r.out
    log = rig.log()
    assert "Traceback" not in log
    assert "policy watcher:" not in log                      # nothing reached the watcher's net
