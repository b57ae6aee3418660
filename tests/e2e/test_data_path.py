"""The data path end to end: real ssh -J → bastion serve → real sshd, dev issuer over https."""

from __future__ import annotations

import os
import subprocess
import time

import pytest


def test_the_cli_prints_the_known_hosts_every_rig_trusts(rig):
    # the rigs write `ca known-hosts`'s text in process (harness.known_hosts_text), and real
    # ssh with StrictHostKeyChecking accepts it in every test: the CLI must print the same
    printed = rig.cli("ca", "known-hosts", "--bastion-host", f"127.0.0.1:{rig.port}").out
    assert printed == rig.known_hosts.read_text()
    assert "@cert-authority" in rig.known_hosts.read_text()


def test_allowed_exec_passes_stdout_stderr_and_exit_status(rig, token):
    r = rig.ssh(token, "echo hello-from-target; echo to-stderr >&2; exit 3")
    assert r.returncode == 3, r.err
    assert r.out == "hello-from-target\n"
    assert "to-stderr" in r.err


def test_token_of_2500_bytes_is_taken_over_several_rounds(rig, token):
    assert len(token) >= 2500
    before = len(rig.log())
    r = rig.ssh(token, "true")
    assert r.returncode == 0, r.err
    deadline = time.monotonic() + 10
    while "token_rounds=" not in rig.log()[before:] and time.monotonic() < deadline:
        time.sleep(0.05)
    # OpenSSH cuts each answer at 1023 bytes: 1000 + 1000 + the rest
    assert "token_rounds=3" in rig.log()[before:]


def test_stdin_streams_to_the_command_and_eof_ends_it(rig, token):
    data = os.urandom(300_000)
    r = rig.ssh(token, "cat", input=data)
    assert r.returncode == 0, r.err
    assert r.stdout == data


def test_binary_output_is_passed_exactly(rig, token):
    r = rig.ssh(token, "head -c 1000000 /dev/urandom | wc -c")
    assert r.returncode == 0, r.err
    assert r.out.strip() == "1000000"


def test_denied_command_never_reaches_the_host(rig, token):
    canary = rig.canary_dir / "canary.txt"
    r = rig.ssh(token, f"rm -rf {rig.canary_dir}")
    assert r.returncode == 126
    assert "denied by rule no-recursive-delete" in r.err
    assert canary.read_text() == "still here\n"


def test_denied_command_hidden_in_a_list_is_denied_whole(rig, token):
    canary = rig.canary_dir / "canary.txt"
    r = rig.ssh(token, f"echo harmless; rm -fr {rig.canary_dir}")
    assert r.returncode == 126
    assert r.out == ""                       # not even the harmless part ran
    assert canary.exists()


def test_review_without_approvers_configured_is_not_run(rig, token):
    r = rig.ssh(token, "systemctl restart nginx")
    assert r.returncode == 125
    assert "held for review by rule restarts-need-review" in r.err
    assert "no approvers are configured" in r.err


def test_command_no_rule_allows_is_denied_by_default(rig, token):
    r = rig.ssh(token, f"touch {rig.canary_dir}/made-by-agent")
    assert r.returncode == 126
    assert not (rig.canary_dir / "made-by-agent").exists()


def test_unknown_target_is_refused_with_its_name(rig, token):
    r = rig.ssh(token, "true", target="db9")
    assert r.returncode == 255
    assert "unknown target 'db9'" in r.err
    rig.wait_log("unknown target 'db9'")


def test_wrong_inner_login_is_refused_naming_the_right_one(rig, token):
    r = rig.ssh(token, "true", login="mallory")
    assert r.returncode == 255
    assert f"{rig.sshd.user}@web1" in r.err
    rig.wait_log("login='mallory'")


def test_principal_without_a_grant_is_refused(rig, issuer):
    outsider = issuer.add_client("e2e-outsider", roles=["readers"])
    r = rig.ssh(issuer.mint(client=outsider), "true")
    assert r.returncode == 255
    assert "not granted" in r.err


@pytest.mark.parametrize("case", ["expired", "wrong-audience", "garbage"])
def test_bad_token_is_refused_with_a_plain_denial_and_a_logged_reason(rig, issuer, agent_client,
                                                                      case):
    now = time.time()
    bad = {
        "expired": lambda: issuer.mint(client=agent_client, now=now - 7200, lifetime=600),
        "wrong-audience": lambda: issuer.mint(client=agent_client, audience="api://other"),
        "garbage": lambda: "not-a-jwt",
    }[case]()
    r = rig.ssh(bad, "true")
    assert r.returncode == 255
    assert "Permission denied" in r.err
    assert "expired" not in r.err and "audience" not in r.err       # plain denial for the agent
    rig.wait_log("login refused")
    assert bad not in rig.log()


def test_env_requests_are_dropped_unless_allowed(rig, token):
    # (not `echo $VAR`: an argument known only at run time counts as matching the deny
    # rule `* /etc/shadow`, as it should)
    r = rig.ssh(token, "env", env={"BASTION_TEST_OK": "passed", "BASTION_TEST_NO": "leaked"})
    assert r.returncode == 0, r.err
    assert "BASTION_TEST_OK=passed" in r.out.splitlines()
    assert "leaked" not in r.out


def test_exit_status_of_a_signal_is_passed_back(rig, token):
    r = rig.ssh(token, "kill -TERM 0")       # the remote shell's own process group
    # OpenSSH reports a remote death by signal as exit status 255
    assert r.returncode == 255, (r.returncode, r.err)
    rig.wait_log("exit signal TERM")


def test_port_forwarding_on_the_inner_connection_is_refused(rig, token):
    r = rig.ssh(token, None, args=("-N", "-W", "127.0.0.1:22"))
    assert r.returncode == 255
    assert "port forwarding is not allowed" in r.err or "prohibited" in r.err


def test_the_token_is_never_written_to_the_data_dir_or_log(rig, token):
    assert rig.ssh(token, "true").returncode == 0
    needle = token.encode()
    head = token.split(".")[2][:40].encode()        # a piece of the signature
    for path in list(rig.data_dir.rglob("*")) + [rig.log_path]:
        if path.is_file():
            blob = path.read_bytes()
            assert needle not in blob and head not in blob, f"token found in {path}"


@pytest.fixture(scope="module")
def rig_with_bad_targets(tmp_path_factory, issuer):
    """A bastion whose policy also names a target with the wrong pinned key and one that is down."""
    from bastion.demo.sshd import free_port
    from tests.e2e.harness import BastionRig
    r = BastionRig(tmp_path_factory.mktemp("rig-bad"), issuer)
    r.root.mkdir(parents=True, exist_ok=True)
    r.extra_targets = f"""
[[targets]]
name = "web-rebuilt"
host = "127.0.0.1"
port = PORT
user = "USER"
key = "web1"
host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN6hGegfdxPvbo1EcXEbNFvrlXaq3EpoPVTs2rPKUGlb"

[[targets]]
name = "web-down"
host = "127.0.0.1"
port = {free_port()}
user = "USER"
key = "web1"
host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN6hGegfdxPvbo1EcXEbNFvrlXaq3EpoPVTs2rPKUGlb"
"""
    r.setup()
    r.extra_targets = r.extra_targets.replace("PORT", str(r.sshd.port)).replace("USER", r.sshd.user)
    r.write_policy()
    r.start()
    yield r
    r.close()


def test_upstream_host_key_mismatch_is_refused_and_says_so(rig_with_bad_targets, token):
    r = rig_with_bad_targets.ssh(token, "true", target="web-rebuilt")
    assert r.returncode == 255
    assert "does not match the pinned" in r.err


def test_upstream_down_gives_a_clear_message(rig_with_bad_targets, token):
    r = rig_with_bad_targets.ssh(token, "true", target="web-down")
    assert r.returncode == 255
    assert "cannot reach target web-down" in r.err


def test_agent_and_x11_forwarding_are_not_passed_to_the_host(rig, token, tmp_path):
    sock = tmp_path / "agent.sock"
    agent = subprocess.run(["ssh-agent", "-a", str(sock)], capture_output=True, timeout=10)
    assert agent.returncode == 0
    try:
        r = rig.ssh(token, "env", args=("-A", "-X", "-o", "ForwardX11Trusted=yes"),
                    env={"SSH_AUTH_SOCK": str(sock), "DISPLAY": ":99"})
        assert r.returncode == 0, r.err
        assert "SSH_AUTH_SOCK" not in r.out
        assert "DISPLAY" not in r.out
    finally:
        subprocess.run(["ssh-agent", "-k"], env={**os.environ, "SSH_AGENT_PID":
                        agent.stdout.decode().split("SSH_AGENT_PID=")[1].split(";")[0]},
                       capture_output=True, timeout=10)


def test_no_padding_ignore_packets_with_aead_ciphers(rig, token):
    # asyncssh sends an empty SSH_MSG_IGNORE before every packet (a CBC countermeasure);
    # with the AES-GCM the bastion negotiates they are dropped (bastion.ssh.wire).  The
    # client logs each one it receives at debug3.  4 MB of output is >120 packets.
    r = rig.ssh(token, "head -c 4000000 /dev/zero | tr '\\0' x", args=("-vvv",))
    assert r.returncode == 0, r.err[-2000:]
    assert len(r.stdout) == 4_000_000
    assert "Received SSH2_MSG_IGNORE" not in r.err
    # the client saw the cipher that makes dropping them safe
    assert "cipher: aes128-gcm@openssh.com" in r.err or "cipher: aes256-gcm@openssh.com" in r.err


def test_the_channel_to_the_target_offers_the_agent_an_8_mib_window(rig, token):
    # The direct-tcpip channel that carries the inner SSH connection: its receive window is
    # what an upload may have on the way per round trip (bastion.ssh.link); asyncssh's
    # default of 2 MiB made puts over a 20 ms link 0.8x ProxyJump.  ssh -J passes -vvv to
    # the jump ssh, which logs the window the bastion offered when the channel opened.
    from bastion.ssh.link import LINK_PACKET, LINK_WINDOW
    r = rig.ssh(token, "true", args=("-vvv",))
    assert r.returncode == 0, r.err[-2000:]
    assert LINK_WINDOW == 8 * 1024 * 1024
    assert f"open confirm rwindow {LINK_WINDOW} rmax {LINK_PACKET}" in r.err, r.err[-3000:]
