"""The bastion's send and receive paths (bastion.ssh.sendpath, bastion.ssh.recvpath) with every
cipher family OpenSSH negotiates, through real rekeys: real ssh -J (RekeyLimit=1M) -> bastion
serve -> real sshd.  The upload is received by the bastion on the outer and the inner
connection (the inner one re-keyed every MB), the download on the upstream connection.

The bastion here offers chacha20-poly1305, AES-GCM and AES-CTR (``[settings] ciphers``);
the client picks one (and a MAC for CTR) for the inner connection, the upstream
connection prefers the same list.  Several MB go each way, checked by sha256 on the
other side; RekeyLimit=1M makes the client re-key the inner connection every MB, so
the bastion sends and receives with new keys (new AESGCM objects, new sequence numbers) many
times.  A byte out of place fails a MAC check (OpenSSH's or the bastion's) and the session, or
the sha256 (a wrong byte delivered by the receive path fails it: checked).
"""

from __future__ import annotations

import hashlib
import os

import pytest

from tests.e2e.harness import POLICY_RULES, BastionRig

CIPHERS = ["chacha20-poly1305@openssh.com", "aes128-gcm@openssh.com", "aes256-gcm@openssh.com",
           "aes128-ctr", "aes256-ctr"]
SIZE = 5 * 1024 * 1024 + 12345


@pytest.fixture(scope="module")
def cipher_rig(tmp_path_factory, issuer):
    r = BastionRig(tmp_path_factory.mktemp("rig-ciphers"), issuer).setup()
    listed = ", ".join(f'"{c}"' for c in CIPHERS)
    rules = POLICY_RULES.replace("[settings]\n", f"[settings]\nciphers = [{listed}]\n", 1)
    rules += '\n[[rules]]\nname = "checksums"\naction = "allow"\ncommands = ["sha256sum"]\n'
    r.write_policy(r.policy_text(rules))
    r.start()
    yield r
    r.close()


@pytest.mark.parametrize("cipher, mac", [
    ("chacha20-poly1305@openssh.com", None),
    ("aes128-gcm@openssh.com", None),
    ("aes256-gcm@openssh.com", None),
    ("aes128-ctr", "hmac-sha2-256-etm@openssh.com"),
    ("aes256-ctr", "hmac-sha2-512"),
])
def test_bulk_both_ways_with_rekeys_is_exact(cipher_rig, token, cipher, mac, tmp_path):
    args = ["-c", cipher, "-o", "RekeyLimit=1M", "-vv"]
    if mac:
        args += ["-o", f"MACs={mac}"]
    data = os.urandom(SIZE)
    digest = hashlib.sha256(data).hexdigest()

    up = cipher_rig.ssh(token, "sha256sum", input=data, args=tuple(args), timeout=120)
    assert up.returncode == 0, up.err[-3000:]
    assert f"cipher: {cipher}" in up.err                # the inner connection used it
    assert up.out.split()[0] == digest

    target = tmp_path / "data"                            # the target sshd is on this machine
    target.write_bytes(data)

    down = cipher_rig.ssh(token, f"cat {target}", args=tuple(args), timeout=120)
    assert down.returncode == 0, down.err[-3000:]
    assert hashlib.sha256(down.stdout).hexdigest() == digest
    # two first key exchanges (jump and inner connection), then at least one completed
    # rekey of the inner connection while the bastion was sending (more are started; how
    # many complete before the end depends on timing)
    assert down.err.count("SSH2_MSG_NEWKEYS received") >= 3, down.err[-3000:]
    assert up.err.count("SSH2_MSG_NEWKEYS received") >= 3, up.err[-3000:]
