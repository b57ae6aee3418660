"""Program tables: what the programs operators allow most do with their arguments.

:func:`describe` reads one simple command with its program's :class:`Spec` and
returns an :class:`Analysis` (writes, reads, connects, shell code to decide, the
subcommand, the options present, or why it is opaque); ``None`` for a program
without a table (it keeps the engine's older, argument-only behaviour).

Tables: :mod:`.basic` (coreutils, grep, sed, awk, sort, dd ...), :mod:`.git`,
:mod:`.tools` (find, tar, docker, kubectl, systemctl, journalctl), :mod:`.net` (curl, wget,
less, more, man, vim, interpreters, openssl, rsync), :mod:`.remote` (ssh, scp).  Known limits are in
docs/POLICY.md.  Pure: no IO.
"""

from __future__ import annotations

from bastion.policy.programs.basic import NO_FILES, READERS, WRITERS
from bastion.policy.programs.net import (
    CURL, LESS, MAN, MORE, NODE, OPENSSL, PERL, PYTHON, RSYNC, RUBY, VIM, WGET, url_host,
)
from bastion.policy.programs.git import GIT
from bastion.policy.programs.remote import SCP, SSH
from bastion.policy.programs.spec import Analysis, Spec, analyse
from bastion.policy.programs.tools import (
    DOCKER, JOURNALCTL, KUBECTL, SYSTEMCTL, TAR, find_analyse, tar_words,
)

TABLE: dict = {**READERS, **NO_FILES, **WRITERS, "tar": TAR, "git": GIT, "docker": DOCKER,
               "podman": DOCKER, "kubectl": KUBECTL, "systemctl": SYSTEMCTL,
               "journalctl": JOURNALCTL, "curl": CURL, "wget": WGET, "less": LESS, "more": MORE,
               "man": MAN, "vim": VIM, "vi": VIM, "view": VIM, "vimdiff": VIM, "rvim": VIM,
               "openssl": OPENSSL, "rsync": RSYNC, "perl": PERL, "ruby": RUBY, "node": NODE,
               "nodejs": NODE, "ssh": SSH, "scp": SCP}
for _py in ("python", "python2", "python3") + tuple(f"python3.{n}" for n in range(6, 15)):
    TABLE[_py] = PYTHON
SPECIAL = {"find": find_analyse}


def has_table(program: str) -> bool:
    return program in TABLE or program in SPECIAL


def subcommands(program: str, path: tuple = ()) -> bool:
    """Does this program's table have subcommands (``git log``), or, after the subcommand
    ``path``, subcommands of its own (``docker container logs``)?"""
    spec = TABLE.get(program)
    for name in path:
        if spec is None or spec.subs is None:
            return False
        spec = spec.subs.get(name) or spec.subs.get("*")
        if not isinstance(spec, Spec):
            return False
    return spec is not None and spec.subs is not None


def describe(program: str, words: list, mkarg) -> Analysis | None:
    special = SPECIAL.get(program)
    if special is not None:
        out = Analysis()
        special(words, out, mkarg)
        return out
    spec = TABLE.get(program)
    if spec is None:
        return None
    if program == "tar":
        words = tar_words(words)
    return analyse(spec, program, words, mkarg, url_host)


__all__ = ["Analysis", "Spec", "TABLE", "describe", "has_table", "subcommands"]
