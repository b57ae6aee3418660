"""The vault: encrypted round trip, wrong passphrase, tampering, permissions, imports by real ssh-keygen."""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import asyncssh
import pytest

from bastion.errors import VaultError
from bastion.secret import Secret
from bastion.vault import (
    PASSPHRASE_ENV, PASSPHRASE_FILE_ENV, Vault, check_name, passphrase_from_env,
)
from bastion.vault.files import atomic_write

SSH_KEYGEN = shutil.which("ssh-keygen")
needs_keygen = pytest.mark.skipif(SSH_KEYGEN is None, reason="ssh-keygen (OpenSSH) not installed")
PW = Secret("correct horse battery staple")


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    return tmp_path / "keys"


@pytest.fixture
def vault(keys_dir: Path) -> Vault:
    return Vault(keys_dir, PW)


def _sig_roundtrip(private: asyncssh.SSHKey, public_line: str) -> bool:
    public = asyncssh.import_public_key(public_line)
    return public.verify(b"hello", private.sign(b"hello", private.sig_algorithms[0]))


@pytest.mark.parametrize("algorithm, ssh_name", [
    ("ed25519", "ssh-ed25519"),
    ("rsa", "ssh-rsa"),
    ("ecdsa", "ecdsa-sha2-nistp256"),
])
def test_generate_then_load_in_a_new_process_view(keys_dir: Path, algorithm: str, ssh_name: str):
    line = Vault(keys_dir, PW).generate("web1", algorithm)
    assert line.startswith(ssh_name + " ") and line.endswith(" bastion:web1")
    key = Vault(keys_dir, PW).load("web1")           # a fresh instance: nothing cached
    assert key.algorithm.decode() == ssh_name
    assert _sig_roundtrip(key, line)
    assert (keys_dir / "web1.pub").read_text().strip() == line


def test_public_line_and_info_match_the_key(vault: Vault):
    line = vault.generate("db-1.prod")
    info = vault.info("db-1.prod")
    assert vault.public_line("db-1.prod") == line == info.public_line
    assert info.fingerprint == vault.load("db-1.prod").get_fingerprint("sha256")
    assert info.fingerprint.startswith("SHA256:")


def test_wrong_passphrase(keys_dir: Path):
    Vault(keys_dir, PW).generate("web1")
    with pytest.raises(VaultError, match="wrong vault passphrase"):
        Vault(keys_dir, Secret("not it")).load("web1")


def test_unlock_checks_the_passphrase_up_front(keys_dir: Path):
    v = Vault(keys_dir, PW)
    v.generate("web1")
    v.generate("db1")
    assert Vault(keys_dir, PW).unlock() == ["db1", "web1"]
    with pytest.raises(VaultError, match="wrong vault passphrase"):
        Vault(keys_dir, Secret("not it")).unlock()
    with pytest.raises(VaultError, match="not set"):
        Vault(keys_dir, None).unlock()


def test_new_key_with_another_passphrase_is_refused(keys_dir: Path):
    Vault(keys_dir, PW).generate("web1")
    with pytest.raises(VaultError, match="wrong vault passphrase"):
        Vault(keys_dir, Secret("not it")).generate("web2")
    assert not (keys_dir / "web2.key").exists()


def test_keys_share_one_salt_so_scrypt_runs_once(vault: Vault, keys_dir: Path):
    vault.generate("a")
    vault.generate("b")
    salts = {json.loads((keys_dir / f"{n}.key").read_text())["header"]["kdf"]["salt"] for n in "ab"}
    assert len(salts) == 1
    fresh = Vault(keys_dir, PW)
    fresh.load("a")
    fresh.load("b")
    assert len(fresh._derived) == 1


def _rewrite(path: Path, change) -> None:
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def _flip_ciphertext(doc):
    raw = bytearray(base64.b64decode(doc["ciphertext"]))
    raw[len(raw) // 2] ^= 0x01
    doc["ciphertext"] = base64.b64encode(bytes(raw)).decode()


def _swap_public(doc):
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    doc["header"]["public"] = other + " bastion:web1"


def _truncate_tag(doc):
    doc["ciphertext"] = base64.b64encode(base64.b64decode(doc["ciphertext"])[:-1]).decode()


@pytest.mark.parametrize("change", [_flip_ciphertext, _swap_public, _truncate_tag],
                         ids=["ciphertext-bit", "header-public", "tag-cut"])
def test_tampered_file_is_detected_not_called_a_wrong_passphrase(keys_dir: Path, change):
    Vault(keys_dir, PW).generate("web1")
    _rewrite(keys_dir / "web1.key", change)
    with pytest.raises(VaultError, match="tampered") as info:
        Vault(keys_dir, PW).load("web1")
    assert "wrong vault passphrase" not in str(info.value)


def _header_field(name, value):
    def change(doc):
        doc["header"][name] = value
    return change


@pytest.mark.parametrize("change", [_header_field("name", 7), _header_field("kdf", "scrypt"),
                                    _header_field("cipher", None),
                                    _header_field("kdf", {"name": "scrypt", "n": 2 ** 30, "r": 8,
                                                          "p": 1, "salt": "AAAA"})],
                         ids=["name-int", "kdf-str", "cipher-null", "kdf-huge"])
def test_malformed_header_is_damaged_for_list_and_load(keys_dir: Path, change):
    Vault(keys_dir, PW).generate("web1")
    _rewrite(keys_dir / "web1.key", change)
    for action in (lambda: Vault(keys_dir, None).list(), lambda: Vault(keys_dir, PW).load("web1")):
        with pytest.raises(VaultError, match="damaged"):
            action()


@pytest.mark.parametrize("content", [b"", b"not json", b'{"header": {}, "ciphertext": ""}',
                                     b'{"header": {"format": "x"}, "ciphertext": ""}'])
def test_damaged_file(keys_dir: Path, content: bytes):
    Vault(keys_dir, PW).generate("web1")
    (keys_dir / "web1.key").write_bytes(content)
    with pytest.raises(VaultError, match="damaged"):
        Vault(keys_dir, PW).load("web1")


def test_renamed_file_is_refused(keys_dir: Path):
    Vault(keys_dir, PW).generate("web1")
    os.rename(keys_dir / "web1.key", keys_dir / "web2.key")
    with pytest.raises(VaultError, match="holds key 'web1'"):
        Vault(keys_dir, PW).load("web2")
    with pytest.raises(VaultError, match="holds key 'web1'"):
        Vault(keys_dir, None).list()


def test_permissions(tmp_path: Path):
    keys_dir = tmp_path / "keys"
    keys_dir.mkdir(mode=0o755)
    (keys_dir).chmod(0o755)              # e.g. a fresh git checkout holding README.md
    Vault(keys_dir, PW).generate("web1")
    assert stat.S_IMODE(keys_dir.stat().st_mode) == 0o700
    for path in keys_dir.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert sorted(p.name for p in keys_dir.iterdir()) == ["web1.key", "web1.pub"]  # no temp left


def test_refuses_to_overwrite_unless_forced(vault: Vault, keys_dir: Path):
    first = vault.generate("web1")
    with pytest.raises(VaultError, match="already exists") as info:
        vault.generate("web1")
    assert "--force" in info.value.hint
    assert vault.public_line("web1") == first
    second = vault.generate("web1", force=True)
    assert second != first
    assert Vault(keys_dir, PW).public_line("web1") == second


def test_cache_returns_same_key_and_notices_a_replaced_file(keys_dir: Path):
    server = Vault(keys_dir, PW)
    server.generate("web1")
    first = server.load("web1")
    assert server.load("web1") is first
    replaced = Vault(keys_dir, PW).generate("web1", force=True)   # e.g. `bastion keys generate --force`
    again = server.load("web1")
    assert again is not first and _sig_roundtrip(again, replaced)


def test_listing_needs_no_passphrase(keys_dir: Path):
    v = Vault(keys_dir, PW)
    lines = {n: v.generate(n, a) for n, a in [("web1", "ed25519"), ("db1", "rsa")]}
    (keys_dir / "README.md").write_text("not a key")
    locked = Vault(keys_dir, None)
    infos = locked.list()
    assert [i.name for i in infos] == ["db1", "web1"]
    assert {i.name: i.public_line for i in infos} == lines
    assert {i.name: i.algorithm for i in infos} == {"db1": "ssh-rsa", "web1": "ssh-ed25519"}
    with pytest.raises(VaultError, match="passphrase is not set") as info:
        locked.load("web1")
    assert PASSPHRASE_ENV in info.value.hint and PASSPHRASE_FILE_ENV in info.value.hint


def test_list_of_missing_dir_is_empty(tmp_path: Path):
    assert Vault(tmp_path / "nope", None).list() == []


def test_missing_key_names_it_and_says_how_to_create_it(vault: Vault):
    with pytest.raises(VaultError, match="no key 'web9'") as info:
        vault.load("web9")
    assert "bastion keys generate web9" in info.value.hint


@pytest.mark.parametrize("name, ok", [
    ("web1", True), ("db-1.prod_x", True), ("A", True), ("x" * 64, True),
    ("", False), (".hidden", False), ("-x", False), ("a/b", False), ("../up", False),
    ("a b", False), ("x" * 65, False), ("wéb", False), ("a\nb", False), ("web1\n", False),
])
def test_names(name: str, ok: bool):
    if ok:
        assert check_name(name) == name
    else:
        with pytest.raises(VaultError, match="invalid key name"):
            check_name(name)


def test_unknown_algorithm(vault: Vault):
    with pytest.raises(VaultError, match="unknown key algorithm"):
        vault.generate("web1", "dsa")


def test_passphrase_never_in_repr(vault: Vault):
    assert PW.reveal() not in repr(vault)
    assert "<secret>" in repr(vault)


def test_passphrase_from_env(tmp_path: Path):
    f = tmp_path / "pw"
    f.write_text("from file\n")
    assert passphrase_from_env({}) is None
    assert passphrase_from_env({PASSPHRASE_ENV: "s3"}).reveal() == "s3"
    assert passphrase_from_env({PASSPHRASE_FILE_ENV: str(f)}).reveal() == "from file"
    with pytest.raises(VaultError, match="both"):
        passphrase_from_env({PASSPHRASE_ENV: "x", PASSPHRASE_FILE_ENV: str(f)})
    with pytest.raises(VaultError, match="empty"):
        passphrase_from_env({PASSPHRASE_ENV: ""})
    with pytest.raises(VaultError, match="cannot read"):
        passphrase_from_env({PASSPHRASE_FILE_ENV: str(tmp_path / "missing")})


def test_atomic_write_no_clobber(tmp_path: Path):
    target = tmp_path / "f"
    atomic_write(target, b"one")
    with pytest.raises(FileExistsError):
        atomic_write(target, b"two")
    assert target.read_bytes() == b"one"
    atomic_write(target, b"three", overwrite=True)
    assert target.read_bytes() == b"three"
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


# --------------------------------------------------------------------------- imports

def _keygen(tmp_path: Path, name: str, kind: str, passphrase: str = "", pem: bool = False) -> Path:
    path = tmp_path / name
    cmd = [SSH_KEYGEN, "-q", "-t", kind, "-N", passphrase, "-C", "someone@laptop", "-f", str(path)]
    if pem:
        cmd[2:2] = ["-m", "PEM"]
    subprocess.run(cmd, check=True, timeout=30)
    return path


def _public_blob(line: str) -> str:
    return line.split()[1]


@needs_keygen
@pytest.mark.parametrize("kind, passphrase, pem", [
    ("ed25519", "", False),
    ("rsa", "", True),
    ("rsa", "src pass", True),       # legacy encrypted PEM: no bcrypt needed
    ("ecdsa", "", False),
])
def test_import_ssh_keygen_key(tmp_path: Path, vault: Vault, kind: str, passphrase: str, pem: bool):
    src = _keygen(tmp_path, "id_src", kind, passphrase, pem)
    line = vault.import_key("web1", src, Secret(passphrase) if passphrase else None)
    expected = Path(str(src) + ".pub").read_text()
    assert _public_blob(line) == _public_blob(expected)
    assert line.endswith(" bastion:web1")
    assert _sig_roundtrip(Vault(vault.keys_dir, PW).load("web1"), expected)


@needs_keygen
def test_import_encrypted_openssh_key(tmp_path: Path, vault: Vault):
    pytest.importorskip("bcrypt", reason="OpenSSH's encrypted key format needs the bcrypt package")
    src = _keygen(tmp_path, "id_enc", "ed25519", "src pass")
    with pytest.raises(VaultError, match="no source passphrase") as info:
        vault.import_key("web1", src)
    assert "--source-passphrase-file" in info.value.hint
    with pytest.raises(VaultError, match="wrong source passphrase"):
        vault.import_key("web1", src, Secret("nope"))
    line = vault.import_key("web1", src, Secret("src pass"))
    assert _public_blob(line) == _public_blob(Path(str(src) + ".pub").read_text())


def test_import_not_a_key(tmp_path: Path, vault: Vault):
    junk = tmp_path / "junk"
    junk.write_text("hello")
    with pytest.raises(VaultError, match="not a private key"):
        vault.import_key("web1", junk)
    with pytest.raises(VaultError, match="cannot read"):
        vault.import_key("web1", tmp_path / "missing")
    assert vault.list() == []


@needs_keygen
def test_no_plaintext_private_key_material_in_the_vault(tmp_path: Path, vault: Vault):
    src = _keygen(tmp_path, "id_src", "ed25519")
    vault.import_key("imported", src)
    vault.generate("generated")
    vault.generate("rsa", "rsa")
    needles: list[bytes] = [b"PRIVATE KEY", b"openssh-key-v1", base64.b64encode(b"openssh-key-v1")]
    body = "".join(l for l in src.read_text().splitlines() if not l.startswith("-----"))
    needles.append(body[:40].encode())
    for name in ("imported", "generated"):
        raw = vault.load(name).pyca_key.private_bytes_raw()        # the 32-byte ed25519 seed
        needles += [raw, raw.hex().encode(), base64.b64encode(raw)[:40]]
    rsa_d = vault.load("rsa").pyca_key.private_numbers().d
    needles.append(rsa_d.to_bytes((rsa_d.bit_length() + 7) // 8, "big")[:32])
    needles.append(PW.reveal().encode())
    for path in vault.keys_dir.iterdir():
        data = path.read_bytes()
        for needle in needles:
            assert needle not in data, (path.name, needle[:20])
