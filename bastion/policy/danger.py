"""Tables of names that change what a line runs: variables, keywords, builtins.

* :func:`dangerous_name`: an environment or shell variable whose value decides
  which program runs or injects code into one (``PATH``, ``LD_PRELOAD``,
  ``BASH_ENV``, ``IFS``, ``PAGER``, ``GIT_SSH_COMMAND`` ...).  Assigning one in
  front of a command, on its own, with ``export``/``declare``, ``env``, ``sudo
  VAR=``, ``read``, ``printf -v``, ``for NAME in`` or ``${NAME:=...}`` makes the
  command (or the line) opaque.
* :data:`RESERVED`: bash reserved words; an unquoted one in program position
  means the parser and bash disagree, so the command is opaque.
* :data:`BASH_LIKE`: shells whose ``-c`` string we parse with the bash grammar.

The lists are conservative on purpose and meant to be read; extend them here.
Pure data: no IO.
"""

from __future__ import annotations

DANGEROUS_EXACT = frozenset({
    # program lookup and shell start-up / parsing
    "PATH", "BASH_ENV", "ENV", "IFS", "SHELLOPTS", "BASHOPTS", "CDPATH", "GLOBIGNORE",
    "EXECIGNORE", "BASH_LOADABLES_PATH", "BASH_XTRACEFD", "PROMPT_COMMAND", "PS0", "PS1",
    "PS2", "PS4", "SHELL", "FCEDIT", "POSIXLY_CORRECT",
    # dynamic linker / libc / crypto modules
    "GCONV_PATH", "LOCPATH", "NLSPATH", "HOSTALIASES", "RESOLV_HOST_CONF", "OPENSSL_CONF",
    "OPENSSL_ENGINES", "OPENSSL_MODULES",
    # interpreters
    "PYTHONPATH", "PYTHONSTARTUP", "PYTHONHOME", "PYTHONINSPECT", "PYTHONUSERBASE",
    "PERL5LIB", "PERL5OPT", "PERLLIB", "PERL5DB", "RUBYOPT", "RUBYLIB", "NODE_OPTIONS",
    "NODE_PATH", "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "JDK_JAVA_OPTIONS", "CLASSPATH",
    "LUA_INIT", "LUA_PATH", "LUA_CPATH", "PHPRC", "PHP_INI_SCAN_DIR", "TCLLIBPATH",
    # programs started by other programs
    "PAGER", "MANPAGER", "SYSTEMD_PAGER", "SYSTEMD_EDITOR", "EDITOR", "VISUAL", "SUDO_EDITOR",
    "LESSOPEN", "LESSCLOSE", "BROWSER", "SSH_ASKPASS", "SUDO_ASKPASS", "GIT_SSH",
    "GIT_SSH_COMMAND", "GIT_EXTERNAL_DIFF", "GIT_PAGER", "GIT_EDITOR", "GIT_ASKPASS",
    "GIT_EXEC_PATH", "GIT_PROXY_COMMAND", "GIT_SEQUENCE_EDITOR", "GIT_TEMPLATE_DIR",
    "GIT_DIR", "GIT_WORK_TREE", "MANOPT", "MANPATH",
    # configuration and output files programs read or write (issue 15)
    "HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "TAR_OPTIONS", "KUBECONFIG",
    "CURL_HOME", "SSLKEYLOGFILE", "LESSSECURE", "LESSKEY", "LESSKEYIN", "LESSHISTFILE",
    "WGETRC", "SYSTEMD_LESS", "SYSTEMD_PAGERSECURE", "DOCKER_CONFIG", "GNUPGHOME", "VIMINIT",
    "EXINIT", "MYVIMRC", "GAWK_READ_TIMEOUT", "AWKPATH", "AWKLIBPATH", "TMPDIR", "GREP_OPTIONS",
    "SUDO_PROMPT", "DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_CERT_PATH", "http_proxy",
    "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy", "ftp_proxy",
    "LESS", "MORE", "SYSTEMD_EDITOR", "KUBE_EDITOR",
})
DANGEROUS_PREFIXES = ("LD_", "DYLD_", "BASH_FUNC_", "GIT_", "PYTHON", "PERL5", "PERL_",
                      "RUBY", "NODE_")
# Pager variables whose literal value names a program we can decide instead
# (GIT_PAGER=cat is judged as also running cat).
PAGER_VARS = frozenset({"PAGER", "GIT_PAGER", "MANPAGER", "SYSTEMD_PAGER"})


def dangerous_name(name: str) -> bool:
    """True if assigning ``name`` can change which program runs or what it executes."""
    return name in DANGEROUS_EXACT or name.startswith(DANGEROUS_PREFIXES)


RESERVED = frozenset({
    "!", "[[", "]]", "{", "}", "case", "coproc", "do", "done", "elif", "else", "esac", "fi",
    "for", "function", "if", "in", "select", "then", "time", "until", "while", "((", "))",
    "(", ")", ";;", "&&", "||", "|", "&", ";",
})

BASH_LIKE = frozenset({"sh", "bash", "dash", "zsh", "ksh", "ash", "mksh", "ksh93", "rbash",
                       "pdksh", "lksh", "posh", "yash"})
OTHER_SHELLS = frozenset({"csh", "tcsh", "fish", "nu", "xonsh", "elvish", "rc", "es", "pwsh"})

# Builtins that may evaluate their (string) arguments as arithmetic or names, where
# an array subscript like 'a[$(cmd)]' runs cmd at run time.
# (printf only counts with -v; checked by the caller.)
ARITH_EVAL = frozenset({"test", "[", "let", "declare", "typeset", "local", "export", "readonly",
                        "unset", "read", "mapfile", "readarray", "wait", "printf", "getopts"})
# Builtins that assign to the variable names given as arguments.
ASSIGNING = frozenset({"read", "mapfile", "readarray", "getopts", "printf", "declare",
                       "typeset", "local", "export", "readonly"})
DECLARING = frozenset({"declare", "typeset", "local", "export", "readonly"})

# Programs whose whole purpose is to run code we cannot see.
OPAQUE_PROGRAMS = {
    "eval": "eval runs a string built at run time",
    "source": "source runs a script file",
    ".": ". runs a script file",
    "fc": "fc re-runs commands from history",
}
# Builtin options that change what a name runs: hash -p FILE NAME, enable -f LIB NAME.
OPAQUE_OPTIONS = {"hash": ("p", "hash -p sets the file a command name runs"),
                  "enable": ("f", "enable -f loads a builtin from a shared library"),
                  "read": ("e", "read -e edits the answer with readline, whose keys can run "
                                "commands (shell-expand-line, edit-and-execute)")}

# Names a function must not take: POSIX special builtins (bash outside POSIX mode lets a
# function shadow them) and the builtins the interactive loop calls (proto/shellstart.py).
SHADOW_GUARDED = frozenset({
    "break", ":", ".", "continue", "eval", "exec", "exit", "export", "readonly", "return",
    "set", "shift", "times", "trap", "unset", "source", "read", "printf", "command",
    "builtin", "enable", "declare", "typeset", "local", "unalias", "alias", "hash", "type",
    "shopt", "wait", "cd",
})

# Standard directories a program may be named by (``/usr/bin/ls``) and still be
# matched by allow rules; any other path (``./ls``, ``/tmp/ls``) is matched by
# deny/review rules on its basename but never by allow rules.
TRUSTED_DIRS = frozenset({"/bin", "/usr/bin", "/sbin", "/usr/sbin", "/usr/local/bin",
                          "/usr/local/sbin"})
