"""Each built-in detector, table-driven; custom [[masks]]; hold-back bounds; escapes; flush."""

from __future__ import annotations

import base64
import json

import pytest

from bastion.config.targets import Mask
from bastion.errors import ConfigError
from bastion.proto.detectors import BUILTIN, card_ok, luhn_ok
from bastion.proto.masker import (
    MIN_HOLDBACK, Masker, available_engines, check_masks, detectors_from_config, mask_bytes, mask_text,
)

AKIA = "AKIAQX7R2PLM4NS6TZVB"
GHP = "ghp_" + "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5"
JWT = (base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=").decode() + "."
       + base64.urlsafe_b64encode(b'{"sub":"svc","exp":1767225600}').rstrip(b"=").decode()
       + ".dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U")

MASKED = [  # (input, expected output)
    (f"id={AKIA}", "id=[MASKED:aws-access-key-id]"),
    ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
     "aws_secret_access_key = [MASKED:aws-secret-key]"),
    (f"token {GHP} used", "token [MASKED:github-token] used"),
    ("glpat-Zq8xW2vB4nM6kL0pR3tY", "[MASKED:gitlab-token]"),
    ("xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx", "[MASKED:slack-token]"),
    ("https://hooks.slack.com/services/T0ABCDEF1/B0ABCDEF12/AbCdEfGhIjKlMnOpQrStUvWx",
     "https://hooks.slack.com/services/[MASKED:slack-webhook]"),
    (f"jwt: {JWT}", "jwt: [MASKED:jwt]"),
    ("DefaultEndpointsProtocol=https;AccountName=a;AccountKey=" + "A" * 86 + "==;EndpointSuffix=x",
     "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=[MASKED:azure-storage-key];EndpointSuffix=x"),
    ("key1 " + "Ab+/" * 21 + "Ab==", "key1 [MASKED:azure-storage-key]"),
    ("https://a.blob.core.windows.net/c/f?sv=2022-11-02&sp=r&sig=AbCdEfGh12345678%2B%3D",
     "https://a.blob.core.windows.net/c/f?sv=2022-11-02&sp=r&sig=[MASKED:azure-sas]"),
    ("app Xy18Q~abcdefghijklmnopqrstuvwxyz0123456", "app [MASKED:azure-client-secret]"),
    ("Authorization: Bearer abc.def.ghi", "Authorization: Bearer [MASKED:authorization]"),
    ("Authorization: Basic YWRtaW46c2VjcmV0", "Authorization: Basic [MASKED:authorization]"),
    ("retry with Bearer 0123456789abcdefABCD", "retry with Bearer [MASKED:bearer-token]"),
    ("< Set-Cookie: sid=abc123; Path=/", "< Set-Cookie: [MASKED:cookie]"),
    ("postgres://app:s3cr3t@db:5432/x", "postgres://app:[MASKED:url-credentials]@db:5432/x"),
    ("redis://:pw@cache:6379", "redis://:[MASKED:url-credentials]@cache:6379"),
    ("card 4111 1111 1111 1111.", "card [MASKED:card-number]."),
    ("amex 378282246310005", "amex [MASKED:card-number]"),
    ("machine h login u password p4ss", "machine h login u password [MASKED:password]"),
    ("mysql -u root -pS3cret db", "mysql -u root -p[MASKED:cli-password] db"),
    ("mariadb -p'x y'", "mariadb -p[MASKED:cli-password] y'"),
    ("sshpass -p hunter2 ssh h", "sshpass -p [MASKED:cli-password] ssh h"),
    ("curl -u admin:pw https://x", "curl -u admin:[MASKED:cli-password] https://x"),
    ("deploy --db-password hunter2 --env prod", "deploy --db-password [MASKED:password] --env prod"),
    ("DB_PASSWORD=hunter2", "DB_PASSWORD=[MASKED:password]"),
    ("db.pass = 'x y z'", "db.pass = '[MASKED:password]'"),
    ('{"client_secret":"abc","n":1}', '{"client_secret":"[MASKED:secret]","n":1}'),
    ("  api_key: abc123", "  api_key: [MASKED:api-key]"),
    ("GITHUB_TOKEN=abc", "GITHUB_TOKEN=[MASKED:token]"),
    ("password: hunter2", "password: [MASKED:password]"),
    ("log: user=bob password: hunter2 ok", "log: user=bob password: [MASKED:password] ok"),
    ("$password = 'pw';", "$password = '[MASKED:password]';"),
    ('"auth": "ZGVwbG95OnB3"', '"auth": "[MASKED:credentials]"'),
    ("private_key: abc", "private_key: [MASKED:private-key]"),
]

UNCHANGED = [
    "-----BEGIN CERTIFICATE-----\nMIIBFzCBv6ADAgECAgMS1ocw\n-----END CERTIFICATE-----\n",
    "/etc/passwd:root:x:0:0:root:/root:/bin/bash",
    "PWD=/root OLDPWD=/tmp",
    "passwd: password updated successfully",
    "Invalid token: expired",
    "[sudo] password for deploy: ",
    "PasswordAuthentication no",
    "token == expected",
    "password=${DB_PASSWORD}", "password=$DB_PASSWORD", "password=***", "password=<redacted>",
    "administrator_password = (sensitive value)",
    "--tls-private-key-file=/etc/kubernetes/pki/apiserver.key",
    "card 4111 1111 1111 1112",          # Luhn fails
    "id 1234567890123456",               # no issuer
    "ts=1764324905123",
    "git clone ssh://git@github.com:22/x.git",
    "http://[::1]:8080/health",
    "integrity sha512-" + "Ab+/" * 21 + "Ab==",
    "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUJGekNCdjZBREFnRUNBZ01TMW9jd0NnWUlLb1pJemowRUF3",
    "the Bearer authentication scheme",
    "mkdir -p /srv/app && ssh -p 22 host",
    "DB_PASSWORD=[MASKED:password]",
]


@pytest.mark.parametrize("engine", available_engines())
@pytest.mark.parametrize("text,expected", MASKED)
def test_builtin_detectors(text, expected, engine):
    m = Masker(engine=engine)
    assert (m.feed(text.encode()) + m.flush()).decode() == expected


@pytest.mark.parametrize("engine", available_engines())
@pytest.mark.parametrize("text", UNCHANGED)
def test_not_secrets(text, engine):
    m = Masker(engine=engine)
    assert m.feed(text.encode()) + m.flush() == text.encode()


def test_every_builtin_detector_is_exercised():
    names = {d.name for d in BUILTIN}
    seen = {part.split("]")[0] for _, out in MASKED for part in out.split("[MASKED:")[1:]}
    assert names - {"private-key"} <= seen


@pytest.mark.parametrize("digits,ok", [(b"4111111111111111", True), (b"4111111111111112", False),
                                       (b"79927398713", True), (b"0", True), (b"18", True)])
def test_luhn(digits, ok):
    assert luhn_ok(digits) is ok


@pytest.mark.parametrize("text,ok", [(b"5555-5555-5555-4444", True), (b"3530 1113 3330 0000", True),
                                     (b"1234567812345670", False), (b"4111111111111", False)])
def test_card_ok(text, ok):
    assert card_ok(text) is ok


def test_mask_text_for_command_lines():
    assert mask_text("mysql -uroot -pS3cret -e 'select 1'") == "mysql -uroot -p[MASKED:cli-password] -e 'select 1'"
    assert mask_text("echo héllo DB_PASSWORD=pä55") == "echo héllo DB_PASSWORD=[MASKED:password]"


def test_private_key_block_is_masked_whole_and_what_follows_kept():
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\n" + "b3BlbnNzaC1rZXktdjEAAAAABG5vbmU\n" * 40 + \
          "-----END OPENSSH PRIVATE KEY-----\n"
    out = mask_bytes(("$ cat id\n" + key + "$ ls\n").encode())
    assert out == b"$ cat id\n[MASKED:private-key]\n$ ls\n"


def test_truncated_key_does_not_swallow_the_prompt():
    data = b"-----BEGIN EC PRIVATE KEY-----\r\nMHcCAQEEIBkKd1\r\nAwEHoUQDQgAE\r\nroot@h:~# \r\n"
    m = Masker()
    out = m.feed(data)
    out += m.flush()
    assert out == b"[MASKED:private-key]\r\nroot@h:~# \r\n"
    assert not m.suppressing


def test_key_block_survives_a_quiet_flush():
    m = Masker()
    out = m.feed(b"-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA1\nAbCd")
    out += m.flush()                                  # the stream paused mid-key
    assert m.suppressing
    out += m.feed(b"Ef0123456789\nZZZZ\n-----END RSA PRIVATE KEY-----\nafter\n") + m.flush()
    assert out == b"[MASKED:private-key]\nafter\n"


def test_long_jwt_byte_by_byte_bounded_holdback():
    token = "eyJhbGciOiJSUzI1NiJ9." + "eyJ" + "QUJDRA" * 3000 + ".c2ln"   # ~18 kB
    data = f"Authorization: {token}\r\nnext line\r\n".encode()
    m, out, most = Masker(), b"", 0
    for i in range(len(data)):
        out += m.feed(data[i:i + 1])
        most = max(most, m.pending)
    out += m.flush()
    assert out == b"Authorization: [MASKED:authorization]\r\nnext line\r\n"
    assert most <= 1024


@pytest.mark.parametrize("max_holdback", [MIN_HOLDBACK, 1024, 4096])
def test_pending_never_exceeds_max_holdback(max_holdback):
    data = (b"x" * 3000 + b" password=" + b"v" * 5000 + b" done " + b"ghp_" + b"a" * 30) * 3
    m, most = Masker(max_holdback=max_holdback), 0
    out = b""
    for i in range(0, len(data), 3):
        out += m.feed(data[i:i + 3])
        most = max(most, m.pending)
    out += m.flush()
    assert most <= max_holdback
    assert out == mask_bytes(data)
    assert out.count(b"[MASKED:password]") == 3 and b"vvvv" not in out


def test_ordinary_output_is_not_held_back_much():
    m = Masker()
    m.feed(b"total 12\n" * 1000)
    assert m.pending <= 512


def test_prompt_is_released_by_flush():
    m = Masker()
    shown = m.feed(b"Enter password: ")
    assert shown == b""                              # may be the start of "password: secret"
    assert m.flush() == b"Enter password: "
    assert m.feed(b"\r\n") + m.flush() == b"\r\n"


def test_secret_with_colour_codes_inside():
    data = b"key=\x1b[1mAKIA\x1b[0m\x1b[31mQX7R2PLM4NS6TZVB\x1b[0m end"
    out = mask_bytes(data)
    assert out == b"key=\x1b[1m[MASKED:aws-access-key-id]\x1b[0m\x1b[31m\x1b[0m end"
    for k in range(len(data) + 1):
        m = Masker()
        assert m.feed(data[:k]) + m.feed(data[k:]) + m.flush() == out, k


def test_utf8_and_binary_pass_through():
    data = "naïve café 日本語 ✓\n".encode() + bytes(range(256)) + b"\nDB_PASSWORD=p\xc3\xa4ss\n"
    out = mask_bytes(data)
    assert out == data.replace(b"p\xc3\xa4ss", b"[MASKED:password]")


def test_osc_title_and_partial_escape_at_chunk_end():
    m = Masker()
    out = m.feed(b"\x1b]0;deploy@web1: ~\x07token=abc \x1b[3")
    out += m.feed(b"1mred\x1b[0m\n") + m.flush()
    assert out == b"\x1b]0;deploy@web1: ~\x07token=[MASKED:token] \x1b[31mred\x1b[0m\n"


# ----------------------------------------------------------------------------- custom masks

def test_custom_mask_from_config_split_everywhere():
    dets = BUILTIN + tuple(detectors_from_config([Mask("employee-id", r"EMP-[0-9]{6}", "[MASKED:employee-id]")]))
    data = b"owner EMP-123456, backup EMP-654321.\n"
    expected = b"owner [MASKED:employee-id], backup [MASKED:employee-id].\n"
    for engine in available_engines():
        for k in range(len(data) + 1):
            m = Masker(dets, engine=engine)
            assert m.feed(data[:k]) + m.feed(data[k:]) + m.flush() == expected, (engine, k)


def test_custom_mask_the_fast_engines_refuse_still_works():
    # a look-behind and a back-reference: Python re only
    mask = Mask("ticket", r"(?<=ticket )(T)(\d{4})\2", "[T]")
    dets = tuple(detectors_from_config([mask]))
    for engine in available_engines():
        m = Masker(dets, engine=engine)
        assert m.feed(b"ticket T12341234 and ticket T1234") + m.flush() == b"ticket [T] and ticket T1234"


def test_custom_replacement_and_line_anchors():
    dets = tuple(detectors_from_config([Mask("host", r"^internal-[a-z]+$", "<host>")]))
    assert mask_bytes(b"x\ninternal-db\ninternal-db ok\n", dets) == b"x\n<host>\ninternal-db ok\n"


@pytest.mark.parametrize("regex", ["EMP-[", "(?u)x", "a*"])
def test_invalid_custom_masks_are_config_errors(regex):
    with pytest.raises(ConfigError) as err:
        detectors_from_config([Mask("bad", regex, "[MASKED:bad]")])
    assert "bad" in str(err.value)


def test_check_masks_warns_about_unbounded_regexes():
    warnings = check_masks([Mask("ok", r"EMP-[0-9]{6}", "x"), Mask("long", r"EMP-[0-9]+", "x")])
    assert len(warnings) == 1 and "'long'" in warnings[0]


def test_bad_arguments():
    with pytest.raises(ValueError):
        Masker(max_holdback=MIN_HOLDBACK - 1)
    with pytest.raises(ValueError):
        Masker(engine="pcre")


def test_detector_repr_shows_no_pattern():
    det = detectors_from_config([Mask("acme", r"ACME-[0-9]{4}", "x")])[0]
    assert repr(det) == "<Detector acme>"


def test_gcp_service_account_json_in_one_line():
    key = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n"
    line = json.dumps({"private_key": key, "client_email": "a@b.iam.gserviceaccount.com"}).encode()
    assert mask_bytes(line) == b'{"private_key": "[MASKED:private-key]", "client_email": "a@b.iam.gserviceaccount.com"}'


def test_pgp_private_key_block():
    block = ("-----BEGIN PGP PRIVATE KEY BLOCK-----\nComment: https://example.org/keys\n\n"
             "lQOYBGVhbGsBCADFakeFakeFakeFakeFakeFakeFakeFakeFakeFakeFakeFake\n=Ab12\n"
             "-----END PGP PRIVATE KEY BLOCK-----\ngpg> ")
    assert mask_bytes(block.encode()) == b"[MASKED:private-key]\ngpg> "
