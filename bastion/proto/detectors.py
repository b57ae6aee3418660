"""The secret detectors used by :mod:`bastion.proto.masker`.  Pure: no IO.

A :class:`Detector` is a precise Python ``re`` pattern over *bytes* plus a short
*trigger*: a plain pattern (no look-arounds, no back-references) that every true
match contains near its start.  The masker finds all triggers in one pass
(:mod:`bastion.proto.mask_engines`) and runs the precise pattern only where a
trigger is (see docs/MASKING.md).

Built in (:data:`BUILTIN`, in precedence order): PEM/OpenSSH/PGP private key
blocks, base64-encoded PEM private keys, AWS access key ids and secret keys,
GitHub, GitLab and Slack tokens, Slack webhooks, JWTs (and any base64 JSON
blob), Azure storage keys, connection strings, SAS signatures and client
secrets, ``Authorization:`` headers, ``Bearer`` tokens, cookies, URLs with a
password, payment card numbers (issuer prefix, length and Luhn checked),
``.netrc`` lines, ``mysql -pSECRET`` style command lines, and
``password=`` / ``passwd:`` / ``secret=`` / ``token=`` / ``api_key:`` style
assignments.  Custom ones come from ``[[masks]]`` via :func:`detectors_from_config`.

Not covered: secrets with no recognisable shape or key name (a bare password
typed at a prompt, a ``.pgpass`` line), secrets split by terminal cursor
movement, base64-wrapped keys spread over several lines, YAML block scalars.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from bastion.errors import ConfigError, Problem

__all__ = ["Detector", "BUILTIN", "detectors_from_config", "pattern_width", "luhn_ok", "card_ok"]

Validator = Callable[[bytes, "re.Match[bytes]"], bool]   # (view, match) -> is it a secret?


@dataclass(frozen=True, eq=False)
class Detector:
    """One kind of secret.

    ``pattern`` is the precise pattern; its groups named in ``groups`` (first one
    that matched) delimit what is replaced, else the whole match is.  ``trigger``
    (bytes, in the syntax Hyperscan, RE2 and Python share: no look-arounds or
    back-references) must match inside every true match, starting at most
    ``back`` bytes after its start, or ``ahead`` (0 or 1) bytes before it when
    the trigger includes the boundary character; ``None`` means the pattern is
    its own trigger (custom masks).  ``run`` is a byte class (or any pattern for
    one unit) for secrets of unbounded length: when the secret reaches the end of
    what has arrived, the masker keeps dropping repeats of it; ``group_runs``
    overrides it for the secret group that matched.  ``block`` marks the
    private-key header: everything up to the ``-----END`` line is dropped.
    ``max_len`` bounds a match (None: unknown/unbounded).
    """

    name: str
    pattern: "re.Pattern[bytes]"
    trigger: bytes | None = None
    back: int = 0
    ahead: int = 0
    groups: tuple[str, ...] = ()
    run: bytes | None = None
    group_runs: dict[str, bytes] = field(default_factory=dict)
    validate: Validator | None = None
    labels: dict[str, str] = field(default_factory=dict)   # keyword group -> mask name
    block: bool = False
    replace: bytes | None = None
    max_len: int | None = None
    py_trigger: bytes | None = None   # a trigger cheaper for the pure-Python engine, its ``back``,
    py_back: int | None = None        # and whether it is matched against the lower-cased bytes
    py_lower: bool = False

    def replacement(self, label: str | None = None) -> bytes:
        if self.replace is not None:
            return self.replace
        return b"[MASKED:" + (label or self.name).encode() + b"]"

    def __repr__(self) -> str:  # never print the pattern of a custom mask by accident in logs
        return f"<Detector {self.name}>"


def _c(pattern: bytes, flags: int = 0) -> "re.Pattern[bytes]":
    return re.compile(pattern, flags)


# ----------------------------------------------------------------------------- validators

def luhn_ok(digits: bytes) -> bool:
    """True when ``digits`` (ASCII digits only) passes the Luhn checksum."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ch - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _card_brand_ok(d: bytes) -> bool:
    n = len(d)
    two, four, six = int(d[:2]), int(d[:4]), int(d[:6])
    if d[:1] == b"4":
        return n in (13, 16)                                  # Visa (19-digit ones: too like ids)
    if 51 <= two <= 55 or 2221 <= four <= 2720:
        return n == 16                                        # Mastercard
    if two in (34, 37):
        return n == 15                                        # Amex
    if d[:4] == b"6011" or 644 <= int(d[:3]) <= 649 or two == 65 or 622126 <= six <= 622925:
        return 16 <= n <= 19                                  # Discover
    if 3528 <= four <= 3589:
        return 16 <= n <= 19                                  # JCB
    if 300 <= int(d[:3]) <= 305 or two in (36, 38, 39):
        return 14 <= n <= 19                                  # Diners
    if two == 62:
        return 16 <= n <= 19                                  # UnionPay
    return False


def card_ok(text: bytes) -> bool:
    """True for a plausible payment card number (separators allowed)."""
    digits = bytes(ch for ch in text if 48 <= ch <= 57)
    return 13 <= len(digits) <= 19 and _card_brand_ok(digits) and luhn_ok(digits)


def _v_card(view: bytes, m: "re.Match[bytes]") -> bool:
    return card_ok(m.group(0))


def _v_b64_private_key(view: bytes, m: "re.Match[bytes]") -> bool:
    try:
        head = base64.b64decode(m.group(0)[:60])
    except (binascii.Error, ValueError):
        return False
    return b"PRIVATE KEY" in head


_PLACEHOLDER = _c(rb"""(?ix)
    \$\{[^}]*\}?$ | \$[A-Z_][A-Z0-9_]*$ | \$\(.*\)?$ |     # shell/env references
    \*+$ | x{3,}$ | <[^>]*>?$ | \{\{.*$ | %[sd]$ | \[MASKED:.*$ | [{\[]$ |
    \((?:sensitive|known|none|redacted|hidden|not|unset|null|empty) |   # terraform & co
    (?:null|none|nil|true|false|undefined|redacted|hidden)$ |
    (?:/|~/|\./)(?:[\w.\-]+/)+[\w.\-]+$                      # a file path (two segments or more)
    """)
_SECRETISH = _c(rb"[0-9!#$%*+/=?@^_~.\-]")
_IDENT = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-"
_LINE_PREFIXES = (b"- ", b"export ", b"set ", b"< ", b"> ", b"+ ")


def _at_line_start(view: bytes, i: int) -> bool:
    """Is the identifier ending at keyword position ``i`` the first thing on its line?"""
    j, limit = i, max(0, i - 64)
    while j > limit and view[j - 1] in _IDENT:
        j -= 1
    while j > limit and view[j - 1] in b" \t":
        j -= 1
    for prefix in _LINE_PREFIXES:
        if view[max(0, j - len(prefix)):j] == prefix:
            j -= len(prefix)
            while j > limit and view[j - 1] in b" \t":
                j -= 1
            break
    return j == 0 or view[j - 1] in b"\r\n"


def _v_assignment(view: bytes, m: "re.Match[bytes]") -> bool:
    value = m.group("sq") or m.group("ss") or m.group("su") or b""
    if _PLACEHOLDER.match(value):
        return False
    sep = m.group("sep")
    quoted_key = sep[:1] in (b'"', b"'")
    if m.group("kauth") is not None and not quoted_key:
        return False                       # bare "auth:" is prose; "auth": "…" is a docker config
    if b"=" in sep or quoted_key or m.group("su") is None:
        return True                        # key=value, "key": …, or a quoted value
    # "key: value" unquoted: YAML / header style at the start of a line, and the value ends
    # the line; anywhere else the value must look like a secret (digit or symbol, 6+ bytes).
    if _at_line_start(view, m.start()):
        k, n = m.end(), len(view)
        stop = min(n, k + 8)
        while k < stop and view[k] in b" \t":
            k += 1
        if k >= n or view[k] in b"\r\n":     # the value ends the line (or the data so far)
            return True
    return len(value) >= 6 and _SECRETISH.search(value) is not None


# ----------------------------------------------------------------------------- patterns

_SEP = rb"""(?P<sep>["']?[ \t]{0,16}(?:=>|:=|=(?!=)|:(?![:/\\])))[ \t]{0,16}"""
_VALUE = (rb"""(?:"(?P<sq>(?=[^"\r\n])[^"\\\r\n]*(?:\\.[^"\\\r\n]*)*)|'(?P<ss>[^'\r\n]+)"""
          rb"""|(?P<su>[^\s"'`,;&<>]+))""")
_KEYWORDS = (
    rb"(?P<kpk>private[_-]?key|client-key-data)"
    rb"|(?P<kkey>(?:api|access|secret|client|master|shared[_-]?access|signing|encryption|app"
    rb"|service|subscription|license|storage)[_-]?key(?:[_-]?base)?)"
    rb"|(?P<kpw>passw(?:or)?d|passphrase|[_.\-](?:pass|pwd))"
    rb"|(?P<ksec>secret)|(?P<ktok>token)|(?P<kcred>credentials?)|(?P<kauth>(?<![A-Za-z])auth)"
)
_ASSIGN_TRIGGER = (   # lower case; wrapped in (?i:...) for the fast engines
    rb"""(?:private[_-]?key|client-key-data|(?:api|access|secret|client|master|shared[_-]?access"""
    rb"""|signing|encryption|app|service|subscription|license|storage)[_-]?key(?:[_-]?base)?"""
    rb"""|passw(?:or)?d|passphrase|[_.\-](?:pass|pwd)|secret|token|credentials?|auth)"""
    rb"""["']?[ \t]{0,16}[=:]"""
)

_PEM_HEADER = rb"-----BEGIN[ A-Z0-9]{0,40}PRIVATE KEY(?: BLOCK)?-----"
_B64_CLASS = rb"[A-Za-z0-9+/=]"
_B64URL_CLASS = rb"[A-Za-z0-9_\-+/=.]"
_CLI_CMD = (rb"(?:mysql(?:dump|admin|import|check|show|pump|sh)?|mariadb(?:-dump|-admin|-import"
            rb"|-check|-show)?)")

BUILTIN: tuple[Detector, ...] = (
    Detector("private-key", _c(_PEM_HEADER), trigger=rb"-----BEGIN[ A-Z0-9]{0,40}PRIVATE",
             block=True, max_len=80),
    Detector("private-key", _c(rb"(?<![A-Za-z0-9+/])LS0tLS1CRUdJTi[A-Za-z0-9+/]{46}[A-Za-z0-9+/=]*"),
             trigger=rb"LS0tLS1CRUdJTi", run=_B64_CLASS, validate=_v_b64_private_key),
    Detector("aws-access-key-id", _c(rb"(?<![A-Za-z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])"),
             trigger=rb"(?:AKIA|ASIA)[A-Z0-9]{16}", max_len=20),
    Detector("aws-secret-key",
             _c(rb"(?i:aws_?secret_?(?:access_?)?key|secret_?access_?key)" + _SEP
                + rb"""["']?(?P<s>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])"""),
             trigger=rb"(?i:aws_?secret|secret_?access_?key)", groups=("s",), max_len=120,
             py_trigger=rb"aws_?secret|secret_?access_?key", py_lower=True),
    Detector("github-token",
             _c(rb"(?<![A-Za-z0-9_])(?:gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9_]{22,244})"
                rb"(?![A-Za-z0-9_])"),
             trigger=rb"gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{22}", max_len=255),
    Detector("gitlab-token",
             _c(rb"(?<![A-Za-z0-9_\-])(?:(?:glpat|gldt|glrt|glcbt|glptt|glft|glimt|glagent|gloas|glsoat"
                rb"|glffct)-|GR1348941)[A-Za-z0-9_.\-]{20,}"),
             trigger=rb"(?:glpat|gldt|glrt|glcbt|glptt|glft|glimt|glagent|gloas|glsoat|glffct)-"
                     rb"[A-Za-z0-9_.\-]{20}|GR1348941[A-Za-z0-9_.\-]{20}",
             run=rb"[A-Za-z0-9_.\-]"),
    Detector("slack-token",
             _c(rb"(?<![A-Za-z0-9_\-])(?:xox[abposr]|xapp)-[A-Za-z0-9\-]{10,}"),
             trigger=rb"(?:xox[abposr]|xapp)-[A-Za-z0-9\-]{10}", run=rb"[A-Za-z0-9\-]"),
    Detector("slack-webhook",
             _c(rb"hooks\.slack\.com/(?:services|workflows|triggers)/(?P<s>[A-Za-z0-9/_\-]{20,})"),
             trigger=rb"hooks\.slack\.com/", groups=("s",), run=rb"[A-Za-z0-9/_\-]"),
    Detector("jwt", _c(rb"(?<![A-Za-z0-9_\-+/=.])eyJ[A-Za-z0-9_\-+/]{10}" + _B64URL_CLASS + rb"*"),
             trigger=rb"eyJ[A-Za-z0-9_\-+/]{10}", run=_B64URL_CLASS),
    Detector("azure-storage-key",
             _c(rb"(?i:AccountKey|SharedAccessKey|SharedSecretValue|SharedAccessSignature)"
                rb"[ \t]*=[ \t]*(?P<s>[^;\"'\s]+)"),
             trigger=rb"(?i:accountkey|sharedaccesskey|sharedsecretvalue|sharedaccesssignature)[ \t]*=",
             groups=("s",), run=rb"[^;\"'\s]", py_lower=True,
             py_trigger=rb"(?:accountkey|sharedaccesskey|sharedsecretvalue|sharedaccesssignature)[ \t]*="),
    Detector("azure-storage-key",
             _c(rb"(?<![A-Za-z0-9+/=\-])(?<!sha512-)[A-Za-z0-9+/]{86}==(?![A-Za-z0-9+/=])"),
             trigger=rb"(?:^|[^A-Za-z0-9+/=\-])[A-Za-z0-9+/]{86}==", ahead=1,
             py_trigger=rb"==", py_back=86, max_len=88),
    Detector("azure-sas", _c(rb"[?&]sig=(?P<s>[A-Za-z0-9%+/=]{16,})"),
             trigger=rb"[?&]sig=[A-Za-z0-9%+/=]{16}", groups=("s",), run=rb"[A-Za-z0-9%+/=]"),
    Detector("azure-client-secret",
             _c(rb"(?<![A-Za-z0-9_~.\-])[A-Za-z0-9_~.\-]{3}[0-9]Q~[A-Za-z0-9_~.\-]{31,34}"
                rb"(?![A-Za-z0-9_~.\-])"),
             trigger=rb"[A-Za-z0-9_~.\-]{3}[0-9]Q~[A-Za-z0-9_~.\-]{31}", py_trigger=rb"Q~", py_back=4,
             max_len=40),
    Detector("authorization",
             _c(rb"""(?i:(?:proxy-)?authorization)["']?[ \t]*[:=][ \t]*["']?"""
                rb"""(?i:(?:basic|bearer|token|digest|negotiate|ntlm|sso-key|apikey|aws4-hmac-sha256)"""
                rb"""[ \t]+)?(?P<s>[^\s"']+)"""),
             trigger=rb"(?i:authorization)[\"']?[ \t]*[:=]", groups=("s",), run=rb"[^\s\"']",
             py_trigger=rb"authorization[\"']?[ \t]*[:=]", py_lower=True),
    Detector("bearer-token",
             _c(rb"(?<![A-Za-z0-9])(?:[Bb]earer|BEARER)[ \t]+(?P<s>[A-Za-z0-9\-._~+/]{16,}=*)"),
             trigger=rb"(?:[Bb]earer|BEARER)[ \t]+[A-Za-z0-9\-._~+/]{16}", groups=("s",),
             run=rb"[A-Za-z0-9\-._~+/=]"),
    Detector("cookie", _c(rb"(?im:^[<>]?[ \t]*(?:set-)?cookie[ \t]*:[ \t]*(?P<s>[^\s][^\r\n]*))"),
             trigger=rb"(?i:cookie)[ \t]*:", back=16, groups=("s",), run=rb"[^\r\n]",
             py_trigger=rb"cookie[ \t]*:", py_lower=True),
    Detector("url-credentials",
             _c(rb"(?<![A-Za-z0-9+.\-])[A-Za-z][A-Za-z0-9+.\-]{0,31}://[^\s/?#@:\"'<>]{0,128}:"
                rb"(?P<s>[^\s/?#\"'<>]{1,256})@"),
             trigger=rb"://[^\s/?#@:\"'<>]{0,128}:[^\s/?#\"'<>]{1,256}@", back=33, groups=("s",),
             max_len=430),
    Detector("card-number",
             _c(rb"(?<![0-9A-Za-z_.\-])(?:[0-9]{13,19}|[0-9]{4}([ \-])[0-9]{4}\1[0-9]{4}\1[0-9]{4}"
                rb"(?:\1[0-9]{3})?|[0-9]{4}([ \-])[0-9]{6}\2[0-9]{4,5})(?![0-9A-Za-z_]|[.,\-][0-9])"),
             trigger=rb"(?:^|[^0-9A-Za-z_.\-])[2-6][0-9]{3}(?:[0-9]{9}|[ \-][0-9]{4,6}[ \-][0-9]{4})",
             ahead=1, validate=_v_card, max_len=24,
             py_trigger=rb"[2-6][0-9]{3}(?:[0-9]{9}|[ \-][0-9]{4,6}[ \-][0-9]{4})"),
    Detector("password",
             _c(rb"(?<![A-Za-z0-9_])machine[ \t]+\S+[ \t]+login[ \t]+\S+[ \t]+password[ \t]+(?P<s>\S+)"),
             trigger=rb"machine[ \t]+", groups=("s",), run=rb"\S"),
    Detector("cli-password",
             _c(rb"(?<![A-Za-z0-9_.\-])(?:" + _CLI_CMD
                + rb"""[ \t"'](?:[^\n;|&]{0,256}?[ \t])?-p(?P<s>[^\s\-]\S*)"""
                rb"""|sshpass[ \t](?:[^\n;|&]{0,128}?[ \t])?-p[ \t]*(?P<s2>[^\s\-]\S*)"""
                rb"""|redis-cli[ \t](?:[^\n;|&]{0,256}?[ \t])?(?:-a|--pass)[ \t]+(?P<s3>[^\s\-]\S*)"""
                rb"""|curl[ \t](?:[^\n;|&]{0,256}?[ \t])?(?:-u|--user)[ \t]*["']?[^\s:"']+:(?P<s4>[^\s"']+)"""
                rb"""|docker[ \t]+login[ \t](?:[^\n;|&]{0,256}?[ \t])?(?:-p|--password)[ \t]+(?P<s5>\S+))"""),
             trigger=_CLI_CMD + rb"""[ \t"'](?:[^\n]*[ \t])?-p[^\s\-]|sshpass[ \t](?:[^\n]*[ \t])?-p"""
                     rb"""|redis-cli[ \t][^\n]*(?:-a|--pass)[ \t]|curl[ \t](?:[^\n]*[ \t])?(?:-u|--user)"""
                     rb"""|docker[ \t]+login[ \t][^\n]*(?:-p|--password)[ \t]""",
             groups=("s", "s2", "s3", "s4", "s5"), run=rb"\S"),
    Detector("password",
             _c(rb"(?i)(?<![/\\])(?:" + _KEYWORDS + rb")" + _SEP + _VALUE),
             trigger=b"(?i:" + _ASSIGN_TRIGGER + b")", py_trigger=_ASSIGN_TRIGGER, py_lower=True,
             groups=("sq", "ss", "su"), run=rb"[^\s\"'`,;&<>]",
             group_runs={"sq": rb'[^"\\\r\n]|\\.', "ss": rb"[^'\r\n]"},
             validate=_v_assignment,
             labels={"kpk": "private-key", "kkey": "api-key", "kpw": "password", "ksec": "secret",
                     "ktok": "token", "kcred": "credentials", "kauth": "credentials"}),
    Detector("password",
             _c(rb"(?<![A-Za-z0-9_\-])--(?:[a-z0-9]{1,32}-){0,6}(?:(?P<kpw>password|passwd)|(?P<ktok>token)"
                rb"|(?P<ksec>secret)|(?P<kkey>api-key))[ \t]+(?P<s>[^\s\-]\S*)"),
             trigger=rb"--(?:[a-z0-9]{1,32}-){0,6}(?:password|passwd|token|secret|api-key)[ \t]+[^\s\-]",
             groups=("s",), run=rb"\S",
             labels={"kpw": "password", "ktok": "token", "ksec": "secret", "kkey": "api-key"}),
)


# ----------------------------------------------------------------------------- custom masks

def pattern_width(source: bytes, flags: int = 0, cap: int = 1 << 16) -> tuple[int, int]:
    """(min, max) bytes ``source`` can match, max capped at ``cap`` (unbounded -> ``cap``)."""
    try:
        from re import _parser  # type: ignore[attr-defined]  # CPython's own regex parser
        lo, hi = _parser.parse(source, flags).getwidth()
    except Exception:  # pragma: no cover - private API moved: assume the worst
        return 0, cap
    return int(min(lo, cap)), int(min(hi, cap))


def _bounded(pattern: "re.Pattern[bytes]") -> int | None:
    hi = pattern_width(pattern.pattern, pattern.flags)[1]
    return None if hi >= 1 << 16 else hi


def _compile_custom(name: str, regex: str) -> "re.Pattern[bytes]":
    try:
        return re.compile(regex.encode("utf-8"), re.MULTILINE)
    except (re.error, UnicodeEncodeError) as exc:
        raise ConfigError("invalid [[masks]] regex", [Problem(f"mask {name!r}: {exc}")],
                          hint="fix the regex and run `bastion policy check`") from exc


def detectors_from_config(masks: Sequence[Any]) -> list[Detector]:
    """Detectors for the ``[[masks]]`` of policy.toml (objects with name, regex, replace).

    The regex is applied to bytes (UTF-8), with ``^``/``$`` matching at line
    boundaries; the whole match is replaced by ``replace``.
    """
    out = []
    for mask in masks:
        pattern = _compile_custom(mask.name, mask.regex)
        if pattern.match(b""):
            raise ConfigError("invalid [[masks]] regex",
                              [Problem(f"mask {mask.name!r}: the regex matches the empty string")],
                              hint="make the regex require at least one character")
        replace = (mask.replace or f"[MASKED:{mask.name}]").encode("utf-8")
        out.append(Detector(mask.name, pattern, trigger=None, replace=replace,
                            max_len=_bounded(pattern)))
    return out

