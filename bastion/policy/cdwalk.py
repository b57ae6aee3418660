"""The directory each command of a line surely runs in (``cd /abs && cmd``).

A mixin of the parse walker (:mod:`bastion.policy.parse`): ``A && B`` where A surely ends
in a successful ``cd /abs`` runs B in ``/abs`` (:attr:`RawCommand.cwd`), so a program
table can resolve B's relative file names.  Anything less certain (``cd`` in a function,
a second ``cd`` in B, ``cd $X``, ``cd -``) leaves the directory unknown.  Pure: no IO.
"""

from __future__ import annotations

import re
from typing import Any

from bastion.policy.words import Disagreement, WordProblem, decode_word, norm_path

_CD_WORD = re.compile(rb"(?:^|[^\w.-])(?:cd|pushd|popd)(?:$|[^\w.-])")
_REDIRECTS = frozenset({"file_redirect", "heredoc_redirect", "herestring_redirect"})


class CwdWalk:
    """Working-directory tracking; the walker provides ``walk``, ``skipped``, ``_on_sub``."""

    src: bytes
    certain: str | None         # the cwd of commands on the right of `cd X &&`
    cd_free: bool               # no cd/pushd/popd in the text
    cd_in_function: bool

    def walk(self, node: Any, inherited: tuple[Any, ...]) -> None:   # provided by the walker
        raise NotImplementedError

    def skipped(self, a: int, b: int) -> None:                       # provided by the walker
        raise NotImplementedError

    def _on_sub(self, node: Any) -> None:                            # provided by the walker
        raise NotImplementedError

    def cwd_now(self) -> str | None:
        """The working directory of a command made now (see RawCommand.cwd)."""
        if self.certain is not None:
            return self.certain
        return "" if self.cd_free else None

    def walk_list(self, node: Any, inherited: tuple[Any, ...]) -> None:
        """``A && B``: when A surely ends in a successful ``cd /abs``, B runs there."""
        named = [c for c in node.children if c.is_named and c.type != "comment"]
        ops = [c.type for c in node.children if not c.is_named]
        target = None
        if len(named) == 2 and ops == ["&&"] and not self.cd_in_function and not \
                _CD_WORD.search(self.src[named[1].start_byte:named[1].end_byte]):
            target = self.cd_after(named[0])
        prev = node.start_byte
        for child in node.children:
            if child.start_byte > prev:
                self.skipped(prev, child.start_byte)
            if target is not None and child is not named[0] and child.start_byte == \
                    named[1].start_byte and child.is_named:
                saved, self.certain = self.certain, target
                try:
                    self.walk(child, inherited)
                finally:
                    self.certain = saved
            else:
                self.walk(child, inherited)
            prev = child.end_byte
        if node.end_byte > prev:
            self.skipped(prev, node.end_byte)

    def cd_after(self, node: Any) -> str | None:
        """The directory ``node`` is surely in when it succeeds, if it ends in ``cd /abs``
        (``cd /x``, ``cd /x && ls``); else None."""
        if node.type == "redirected_statement":
            body = node.child_by_field_name("body")
            return self.cd_after(body) if body is not None and body.type in (
                "command", "list") else None
        if node.type == "command":
            words = []
            for ch in node.named_children:
                if ch.type in _REDIRECTS or ch.type == "comment":
                    continue
                if ch.type == "variable_assignment":
                    return None
                try:
                    w = decode_word(self.src, ch.start_byte, ch.end_byte, {}, self._on_sub)
                except (Disagreement, WordProblem):
                    return None
                if w.value is None:
                    return None
                words.append(w)
            if not words or words[0].quoted or words[0].value != "cd":
                return None
            args = [w.value for w in words[1:] if w.value is not None and
                    w.value not in ("-L", "-P", "-e", "-@", "--")]
            if len(args) != 1 or not args[0].startswith("/"):
                return None
            return norm_path(args[0])
        if node.type == "list":
            named = [c for c in node.children if c.is_named and c.type != "comment"]
            ops = [c.type for c in node.children if not c.is_named]
            if len(named) != 2 or ops != ["&&"]:
                return None
            right = self.cd_after(named[1])
            if right is not None:
                return right
            left = self.cd_after(named[0])
            return left if left is not None and not _CD_WORD.search(
                self.src[named[1].start_byte:named[1].end_byte]) else None
        return None
