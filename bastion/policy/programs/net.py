"""Tables for network clients, pagers, editors, interpreters, openssl and rsync.

curl/wget: every URL operand is a connection (``file://`` is a read of its path),
output options are writes, ``@file`` values are reads, ``--resolve``/``--connect-to``/
``--proxy`` hosts are connections too.  Pagers and editors that take commands on
their command line (``less +cmd``, ``vim -c``) are opaque; their interactive
escapes (``!sh`` in less, ``:!sh`` in vim) are what ``interactive`` rules are for.
"""

from __future__ import annotations

import re

from bastion.policy.programs.spec import NONE, READS, Spec, Word_

GNU = ("help", "version")
CODE = "runs code we do not read"


def url_host(url: str | None) -> str | None:
    """The host a URL (or ``host[:port]``) names, lowercased; ``None`` if unknown."""
    if url is None:
        return None
    rest = url.split("://", 1)[1] if "://" in url else url
    rest = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    rest = rest.rsplit("@", 1)[-1]
    if rest.startswith("["):
        return rest[1:].split("]", 1)[0].lower()
    host = rest.split(":", 1)[0].lower()
    return host or None


def _curl_hook(out, opts, operands, mkarg):
    urls = list(operands) + [v for name, v in opts if name == "url"]
    for u in urls:
        val = u.value
        if val is not None and val.lower().startswith("file:"):
            path = val[5:]
            path = path[2:] if path.startswith("//") else path
            path = path.split("/", 1)[1] if not path.startswith("/") and "/" in path else path
            out.reads.append(mkarg(Word_("/" + path.lstrip("/"))))
            continue
        if val is not None and "://" in val and not val.lower().startswith(("http", "ftp")):
            out.opaque(f"curl: scheme of {val[:40]!r} is not http(s)/ftp(s)")
        out.connects.append(url_host(val))
    for name, v in opts:
        if v is None:
            continue
        val = v.value
        if name == "variable":           # --variable NAME@FILE reads FILE (NAME=TEXT, %ENV)
            if val is None:
                out.opaque(f"curl: a value known only at run time ({v.raw})")
            elif "@" in val.partition("=")[0]:
                f = val.partition("@")[2]
                if f and f != "-":
                    out.reads.append(mkarg(Word_(f)))
            continue
        if name in ("d", "data", "data-binary", "data-ascii", "data-urlencode", "json", "H",
                    "header", "F", "form", "b", "cookie", "K", "config"):
            if val is None:
                out.opaque(f"curl: a value known only at run time ({v.raw})")
                continue
            at = val.find("@") if name in ("F", "form", "data-urlencode") else (
                0 if val.startswith("@") else -1)
            if name in ("F", "form") and "=<" in val:
                at = val.index("=<") + 1
            if at >= 0 and (name not in ("F", "form", "data-urlencode") or at > 0 or
                            name == "data-urlencode"):
                f = val[at + 1:].split(";", 1)[0]
                if f and f != "-":
                    out.reads.append(mkarg(Word_(f)))
            if name in ("b", "cookie") and "=" not in val:
                out.reads.append(mkarg(v))
        elif name in ("resolve", "connect-to"):
            parts = (val or "").split(":")
            out.connects.append(parts[-1].strip("[]").lower() if val and parts[-1] else None)
        elif name in ("x", "proxy", "preproxy", "socks5", "socks4", "socks5-hostname",
                      "socks4a"):
            out.connects.append(url_host(val))
    _curl_method(out, opts)
    for name, v in opts:
        if name in ("w", "write-out") and v is not None:
            _curl_write_out(out, v, mkarg)
    if any(name in ("O", "remote-name", "remote-name-all") for name, _ in opts):
        dirs = [v for name, v in opts if name == "output-dir"]
        base = dirs[-1].value if dirs and dirs[-1].value else None
        from bastion.policy.programs.tools import _Tpl
        out.writes.append(_Tpl(((base.rstrip("/") + "/", None),) if base else ((None,),)))


_CURL_SENDS = frozenset({"d", "data", "data-binary", "data-ascii", "data-urlencode",
                         "data-raw", "json", "F", "form", "form-string", "T", "upload-file"})
_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_OUTPUT_VAR = re.compile(r"%output\{(?:>>)?([^}]*)\}")


def _curl_method(out, opts) -> None:
    """A request other than GET/HEAD/OPTIONS may change data on the server: opaque
    (``-X DELETE``, ``-XPOST``, ``--request=PUT``; ``-d``/``-F``/``--json`` POST and
    ``-T`` PUT unless ``-G`` turns data into a query string)."""
    names = {name for name, _ in opts}
    for name, v in opts:
        if name in ("X", "request") and v is not None:
            if v.value is None:
                out.opaque(f"curl: a request method known only at run time ({v.raw})")
            elif v.value.upper() not in _READ_METHODS:
                out.opaque(f"curl -X {v.value}: a {v.value} request may change data on the "
                           f"server")
    sends = names & _CURL_SENDS
    if sends and (names & {"F", "form", "form-string", "T", "upload-file"} or
                  not names & {"G", "get"}):
        opt = sorted(sends)[0]
        out.opaque(f"curl {'-' if len(opt) == 1 else '--'}{opt} sends data (a POST or PUT "
                   f"request may change data on the server)")


def _curl_write_out(out, v, mkarg) -> None:
    """``-w`` format: ``%output{FILE}`` writes FILE; ``@FILE`` reads the format from FILE."""
    val = v.value
    if val is None:
        if "%" in v.raw or "@" in v.raw or "$" in v.raw:
            out.opaque(f"curl -w: a format known only at run time ({v.raw}) may write a file")
        return
    if val.startswith("@"):
        if val[1:] not in ("", "-"):
            out.reads.append(mkarg(Word_(val[1:])))
        return
    for m in _OUTPUT_VAR.finditer(val):
        out.writes.append(mkarg(Word_(m.group(1))))


CURL = Spec(any_flags=False, flags="fsSLkIivgG#qZ0123456jlnNRh", values="AeEmrutwXYyzCQP",
            long_flags=GNU + (
                "silent", "show-error", "location", "insecure", "head", "include", "verbose",
                "fail", "fail-with-body", "compressed", "globoff", "get", "http1.0", "http1.1",
                "http2", "ipv4", "ipv6", "no-buffer", "no-keepalive", "progress-bar",
                "location-trusted", "raw", "remote-time", "remote-name-all", "tlsv1.2",
                "tlsv1.3", "ssl-reqd", "create-dirs", "no-progress-meter", "path-as-is",
                "retry-all-errors", "http2-prior-knowledge", "tcp-nodelay", "disable",
                "list-only", "netrc", "netrc-optional", "basic", "digest", "ntlm", "negotiate",
                "anyauth", "ssl", "proxytunnel", "no-sessionid", "fail-early", "styled-output"),
            long_values=("request", "user-agent", "referer", "max-time", "connect-timeout",
                         "retry", "retry-delay", "retry-max-time", "user", "write-out",
                         "range", "limit-rate", "max-redirs", "max-filesize", "proxy-user",
                         "oauth2-bearer", "url-query", "expect100-timeout", "interface",
                         "local-port", "keepalive-time", "time-cond", "tls-max", "ciphers",
                         "pinnedpubkey", "continue-at", "speed-limit", "speed-time", "quote",
                         "aws-sigv4", "noproxy", "request-target", "happy-eyeballs-timeout-ms",
                         "variable", "json", "data", "data-binary", "data-ascii",
                         "data-urlencode", "data-raw", "header", "form", "form-string",
                         "cookie", "resolve", "connect-to", "proxy", "preproxy", "socks5",
                         "socks4", "socks5-hostname", "socks4a", "url", "output-dir"),
            optional=(),
            writes=("o", "output", "D", "dump-header", "c", "cookie-jar", "trace",
                    "trace-ascii", "libcurl", "stderr", "etag-save", "hsts", "alt-svc"),
            reads=("T", "upload-file", "cacert", "capath", "cert", "key", "E", "netrc-file",
                   "etag-compare", "crlfile", "proxy-cacert", "proxy-cert", "proxy-key"),
            urls=(),
            refuse={"K": "reads options from a file", "config": "reads options from a file",
                    "unix-socket": "talks to a local socket", "abstract-unix-socket":
                    "talks to a local socket", "engine": "loads a crypto engine",
                    "ssl-sessions": "reads and writes a file",
                    "J": "names the file from the server", "remote-header-name":
                    "names the file from the server"},
            hook=_curl_hook)
CURL_VALUES = {"d": "data", "H": "header", "F": "form", "b": "cookie", "x": "proxy", "O": None}
CURL = Spec(**{**CURL.__dict__, "values": CURL.values + "dHFbx", "flags": CURL.flags + "O",
               "long_flags": CURL.long_flags + ("remote-name",)})


def _wget_hook(out, opts, operands, mkarg):
    names = {name for name, _ in opts}
    for u in operands:
        out.connects.append(url_host(u.value))
    if not names & {"O", "output-document", "spider"}:
        prefix = [v for name, v in opts if name in ("P", "directory-prefix")]
        base = prefix[-1].value if prefix and prefix[-1].value else None
        from bastion.policy.programs.tools import _Tpl
        out.writes.append(_Tpl(((base.rstrip("/") + "/", None),) if base else ((None,),)))


WGET = Spec(flags="qvnNcrkKpmSbhdFx46", values="tTlwAR", long_flags=GNU + (
    "quiet", "verbose", "no-verbose", "continue", "timestamping", "recursive", "spider",
    "convert-links", "page-requisites", "mirror", "server-response", "no-check-certificate",
    "no-clobber", "background", "debug", "force-html", "force-directories", "no-directories",
    "inet4-only", "inet6-only", "no-parent", "show-progress", "content-disposition",
    "no-cache", "no-cookies", "https-only", "ignore-case", "trust-server-names"),
            long_values=("tries", "timeout", "level", "wait", "accept", "reject", "user-agent",
                         "header", "user", "password", "limit-rate", "method", "body-data",
                         "post-data", "referer", "max-redirect", "domains", "quota", "cut-dirs",
                         "progress", "waitretry", "dns-timeout", "connect-timeout",
                         "read-timeout", "restrict-file-names", "bind-address", "proxy-user",
                         "proxy-password", "ca-certificate", "certificate", "private-key",
                         "secure-protocol"),
            writes=("O", "output-document", "o", "output-file", "a", "append-output",
                    "save-cookies", "warc-file", "save-headers", "rejected-log"),
            reads=("i", "input-file", "post-file", "body-file", "load-cookies", "ca-directory"),
            refuse={"e": "runs a wgetrc command", "execute": "runs a wgetrc command",
                    "config": "reads a configuration file", "use-askpass": "runs a program"},
            hook=_wget_hook)
WGET = Spec(**{**WGET.__dict__, "values": WGET.values + "P",
               "long_values": WGET.long_values + ("directory-prefix",)})

LESS = Spec(flags="aABcCdeEfFgGiIJKLmMnNqQrRsSuUVwWXz~", values="bhjkptTxyPzD#",
            long_flags=GNU + ("quit-at-eof", "QUIT-AT-EOF", "quit-if-one-screen", "ignore-case",
                              "IGNORE-CASE", "LINE-NUMBERS", "line-numbers", "RAW-CONTROL-CHARS",
                              "raw-control-chars", "chop-long-lines", "no-init",
                              "squeeze-blank-lines", "quiet", "silent", "follow-name",
                              "mouse", "no-keypad", "status-column"),
            long_values=("tabs", "shift", "window", "prompt", "pattern", "tag"),
            writes=("o", "O", "log-file", "LOG-FILE"), reads=("T", "tag-file"),
            refuse={"k": "loads key bindings", "lesskey-file": "loads key bindings",
                    "lesskey-src": "loads key bindings", "lesskey-content": "loads key bindings"},
            plus="less +COMMAND runs a less command at start",
            plus_safe=re.compile(r"\+\+?(?:F|G|g|[0-9]+[gG%p]?|/[^\x00-\x1f\x7f]*)"),
            interactive="less runs !command, |command and v (an editor) typed at its prompt; "
                        "the LESSSECURE=1 the bastion sets in terminal sessions does not "
                        "survive sudo or env -i")
MORE = Spec(flags="dlfpcsu", values="n", numeric=True, long_flags=GNU + (
    "silent", "logical", "no-pause", "print-over", "clean-print", "squeeze", "plain"),
            long_values=("lines",), plus="ok",
            interactive="more runs !command and :!command typed at its prompt (it has no "
                        "secure mode)")
def _man_files(out, opts, operands, mkarg):
    """``man -l FILE`` reads FILE; so does any operand with a ``/`` (man's own rule)."""
    local = any(name in ("l", "local-file") for name, _ in opts)
    for o in operands:
        if local or o.value is None or "/" in o.value:
            if o.value != "-":
                out.reads.append(mkarg(o))


MAN = Spec(flags="aDfhiIkKlLuwWZ", values="CEILMmpRSsT", long_flags=GNU + (
    "all", "default", "whatis", "apropos", "ignore-case", "match-case", "local-file",
    "where", "path", "location", "where-cat", "location-cat", "regex", "wildcard",
    "names-only", "no-subpages", "no-hyphenation", "no-justification", "ascii", "update",
    "no-pager"),
           long_values=("manpath", "sections", "systems", "extension", "locale", "encoding",
                        "recode", "preprocessor"),
           code={"P": "sh", "pager": "sh"},
           hook=lambda out, opts, operands, mkarg: _man_files(out, opts, operands, mkarg),
           refuse={"H": "runs a web browser", "html": "runs a web browser",
                   "X": "runs gxditview", "gxditview": "runs gxditview",
                   "C": "reads a configuration file", "config-file": "reads a configuration "
                   "file", "t": "runs troff", "troff": "runs troff", "T": "runs a device",
                   "troff-device": "runs a device"},
           operands=NONE)

_VIM_REFUSE = {"c": CODE, "S": CODE, "cmd": CODE, "u": CODE, "U": CODE, "i": "writes viminfo",
               "w": "writes typed keys", "W": "writes typed keys", "s": "replays keys from a file",
               "V": "writes a verbose log"}
VIM = Spec(flags="ReEnbdlmMACNLrHFgfpoOyZh", values="tqT", long_flags=GNU + (
    "noplugin", "clean", "not-a-term", "ttyfail", "nofork", "literal", "remote-silent"),
           refuse=_VIM_REFUSE | {
               "remote-send": "sends keys to a server", "remote-expr": CODE,
               "servername": "talks to a server", "startuptime": "writes a file",
               "remote": "talks to a server", "remote-tab": "talks to a server"},
           plus="vim +COMMAND runs an Ex command", operands=READS,
           plus_safe=re.compile(r"\+(?:[0-9]*|/[^|\x00-\x1f\x7f]*)"),
           interactive="vim runs :!command and :terminal typed at its prompt, and Ex "
                       "commands from standard input with -e/-es")


def _interp(code: str, script_flags: str = "") -> Spec:
    return Spec(any_flags=True, posix=True, refuse={c: CODE for c in code},
                hook=lambda out, opts, operands, mkarg: out.opaque(
                    "runs a script" if operands else "reads code from standard input")
                if not any(n in ("V", "version", "help", "h") for n, _ in opts) else None)


PYTHON = _interp("cm")
PERL = _interp("eEMmIx")
RUBY = _interp("eIr")
NODE = Spec(any_flags=True, posix=True, refuse={c: CODE for c in (
    "e", "eval", "p", "print", "r", "require", "import", "loader", "i", "interactive")},
            hook=PYTHON.hook)


def _openssl_files(out, opts, operands, mkarg):
    """Operands are read; so is ``file:PATH`` in a pass phrase source (``-passin``)."""
    out.reads.extend(mkarg(o) for o in operands if o.value != "-")
    for name, v in opts:
        if name in ("passin", "passout", "pass", "kfile") and v is not None:
            if v.value is None:
                out.reads.append(mkarg(v))
            elif v.value.startswith("file:"):
                out.reads.append(mkarg(Word_(v.value[5:])))


_OSSL_SUB = Spec(any_flags=True, hook=_openssl_files, single=True, operands=READS, long_values=(
    "inform", "outform", "passin", "passout", "subj", "days", "newkey", "keyform",
    "certform", "CAform", "name", "servername", "verify", "cipher", "md", "sigopt",
    "pkeyopt", "nameopt", "certopt", "set_serial", "extensions", "reqexts", "addext",
    "CAserial", "digest", "macopt", "kdfopt", "iter", "iv", "K", "S", "pass", "aes256"),
                 writes=("out", "keyout", "CAcreateserial", "sess_out", "msgfile", "keylogfile",
                         "certout", "reqout", "signature"),
                 reads=("in", "key", "CAkey", "CA", "cert", "CAfile", "CApath", "config",
                        "sess_in", "inkey", "pubin", "sigfile", "peerkey", "kfile",
                        "cert_chain", "chainCAfile"),
                 urls=("connect", "proxy", "host"),
                 refuse={"engine": "loads a crypto engine", "provider-path": "loads modules",
                         "provider": "loads a provider", "keylogfile": "writes TLS secrets",
                         "rand": "reads/writes a seed file", "writerand": "writes a file",
                         "config": "reads a configuration that may load modules"})
OPENSSL = Spec(subs={name: _OSSL_SUB for name in (
    "x509", "req", "s_client", "verify", "version", "dgst", "rsa", "ec", "pkey", "genrsa",
    "genpkey", "enc", "base64", "rand", "ciphers", "crl", "pkcs12", "pkcs7", "asn1parse",
    "sha256", "sha1", "md5", "list", "speed", "prime", "passwd", "errstr", "x509v3",
    "storeutl", "ocsp", "cms", "smime", "ca", "dhparam", "ecparam", "pkeyutl",
    "rsautl")}, long_flags=GNU)


def _rsync_hook(out, opts, operands, mkarg):
    files = list(operands)
    for k, o in enumerate(files):
        v = o.value
        remote = v is not None and ("::" in v or "://" in v or (
            ":" in v.split("/")[0] and not v.startswith("/")))
        if remote:
            out.connects.append(url_host(v.split("::")[0] if "::" in v else v.split(":")[0]
                                         if "://" not in v else v))
            continue
        if k == len(files) - 1 and len(files) > 1:
            out.writes.append(mkarg(o))
        else:
            out.reads.append(mkarg(o))
    out.recursive = True


RSYNC = Spec(any_flags=True, long_values=(
    "exclude", "include", "filter", "chmod", "chown", "bwlimit", "timeout", "contimeout",
    "port", "max-size", "min-size", "max-delete", "compare-dest", "copy-dest", "link-dest",
    "partial-dir", "temp-dir", "backup-dir", "suffix", "log-file-format", "out-format",
    "usermap", "groupmap", "iconv", "block-size", "modify-window", "info", "debug",
    "compress-level", "checksum-choice", "skip-compress"),
             values="fBT", writes=("log-file", "write-batch", "only-write-batch"),
             reads=("exclude-from", "include-from", "files-from", "password-file",
                    "read-batch"),
             refuse={"e": "runs a remote shell", "rsh": "runs a remote shell",
                     "rsync-path": "runs a program on the remote side",
                     "config": "reads a daemon configuration", "daemon": "starts a daemon"},
             hook=_rsync_hook)
