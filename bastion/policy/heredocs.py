"""Redirections and here-documents, as the parse walker reads them.

A mixin of the walker (:mod:`bastion.policy.parse`): redirection targets become the
command's redirections (``2>&1`` and ``>&-`` are none); a here-document with an
unquoted delimiter is read for substitutions (the grammar misses backticks there and
reads ``$((4*4))`` as ``$( (4*4) )``: both are handled here), one with a quoted
delimiter is data; a body that runs past its delimiter line makes the line opaque;
``$(< FILE)`` is bash reading FILE; ``a && b > f`` redirects b only.  Pure: no IO.
"""

from __future__ import annotations

from typing import Any

from bastion.policy.arithwalk import ArithWalk
from bastion.policy.cdwalk import CwdWalk
from bastion.policy.rawcommand import RawCommand
from bastion.policy.words import Word, WordProblem

REDIRECT_TYPES = frozenset({"file_redirect", "heredoc_redirect", "herestring_redirect"})


def _rightmost_command(node: Any) -> Any:
    """The simple command a redirection after a list or pipeline belongs to, or None."""
    while node is not None and node.type in ("list", "pipeline"):
        named = [c for c in node.named_children if c.type != "comment"]
        node = named[-1] if named else None
    return node if node is not None and node.type == "command" else None


class RedirectWalk(ArithWalk, CwdWalk):
    """Redirections; the walker provides ``word``, ``command`` and ``backtick_text``."""

    raws: list[RawCommand]
    extra_redirs: dict[int, list[Any]]

    def word(self, node: Any, *, assignment: bool = False) -> Word:     # provided by the walker
        raise NotImplementedError

    def command(self, node: Any, inherited: tuple[Any, ...]) -> None:   # provided by the walker
        raise NotImplementedError

    def backtick_text(self, inner: bytes) -> None:                      # provided by the walker
        raise NotImplementedError

    def read_substitution(self, node: Any) -> None:
        """``$(< FILE)`` is bash reading FILE itself: the command ``:`` with ``< FILE``."""
        named = [c for c in node.named_children if c.type != "comment"]
        if not named or any(c.type != "file_redirect" for c in named):
            return
        redirs: list[tuple[str, Word]] = []
        for c in named:
            try:
                self.redirect(c, redirs)
            except WordProblem as exc:
                self.problems.append(str(exc))
        if redirs:
            self.raws.append(RawCommand([Word.literal(":")], [], redirs, None, node.start_byte,
                                        self.cwd_now()))

    def check_heredoc_end(self, body: Any, delimiter: bytes | None, strip_tabs: bool) -> None:
        """bash ends a here-document at the first line equal to its delimiter; if the
        grammar's body runs past such a line, code would hide in 'data'."""
        if not delimiter:
            return
        for line in self.src[body.start_byte:body.end_byte].split(b"\n"):
            if (line.lstrip(b"\t") if strip_tabs else line) == delimiter:
                self.problems.append("here-document body runs past its delimiter")
                return

    def heredoc_text(self, start: int, end: int) -> None:
        """Text of an unquoted here-document the grammar left unparsed: it misses
        `...` there (and sometimes $(...) inside ${...}).  Backticks are parsed
        here; an unparsed $( or $[ makes the line opaque."""
        text = self.src[start:end]
        i = 0
        while i < len(text):
            c = text[i]
            if c == 92:                      # backslash escapes the next byte
                i += 2
                continue
            if c == 96:                      # `...`
                j = i + 1
                while j < len(text) and text[j] != 96:
                    j += 2 if text[j] == 92 else 1
                if j >= len(text):
                    self.problems.append("unterminated ` in a here-document")
                    return
                self.backtick_text(text[i + 1:j])
                i = j + 1
                continue
            if c == 36 and i + 1 < len(text) and text[i + 1] in b"([":
                self.problems.append("here-document holds a substitution the parser did not see")
                return
            i += 1

    def heredoc_arith(self, node: Any) -> bool:
        """``$((4*4))`` in a here-document body, which the grammar reads as ``$( (4*4) )``
        (a command ``4*4``): bash expands it as arithmetic when its parentheses balance.
        Judged as arithmetic; one holding a substitution makes the line opaque."""
        raw = self.src[node.start_byte:node.end_byte]
        if node.type != "command_substitution" or not raw.startswith(b"$((") or \
                not raw.endswith(b"))"):
            return False
        inner, depth = raw[3:-2], 0
        for c in inner:
            depth += (c == 40) - (c == 41)
            if depth < 0:
                return False
        if depth:
            return False
        if b"$(" in inner or b"`" in inner or b"$[" in inner:
            self.problems.append("arithmetic in a here-document holds a substitution")
            return True
        shown = raw.decode("utf-8", "surrogateescape")
        self.arith_text(inner.decode("utf-8", "surrogateescape"), node.start_byte,
                        shown if len(shown) <= 40 else shown[:39] + "…")
        return True

    def redirect(self, node: Any, redirs: list[tuple[str, Word]],
                 later: list[Any] | None = None) -> None:
        t = node.type
        if t == "file_redirect":
            op = None
            for ch in node.children:
                ct = ch.type
                if ct == "file_descriptor":
                    continue
                if not ch.is_named:
                    op = ct
                    continue
                w = self.word(ch)
                if op in (">&", "<&") and (w.value == "-" or (w.value or "x").isdigit()):
                    continue
                if op in (">&-", "<&-"):
                    continue
                redirs.append((op or ">", w))
        elif t == "herestring_redirect":
            for ch in node.named_children:
                self.word(ch)
        else:  # heredoc_redirect
            quoted = False
            delimiter = None
            strip_tabs = any(c.type == "<<-" for c in node.children)
            for ch in node.children:
                ct = ch.type
                if ct == "heredoc_start":
                    raw = self.src[ch.start_byte:ch.end_byte]
                    quoted = any(q in raw for q in (b"'", b'"', b"\\"))
                    delimiter = raw.replace(b"'", b"").replace(b'"', b"").replace(b"\\", b"")
                elif ct == "heredoc_body":
                    self.check_heredoc_end(ch, delimiter, strip_tabs)
                    if quoted:
                        continue
                    prev = ch.start_byte      # the grammar may skip text: read the gaps
                    for part in ch.children:
                        self.heredoc_text(prev, part.start_byte)
                        if not self.heredoc_arith(part):
                            self.walk(part, ())
                        prev = part.end_byte
                    self.heredoc_text(prev, ch.end_byte)
                elif ct in REDIRECT_TYPES:
                    self.redirect(ch, redirs, later)
                elif ch.is_named and ct != "heredoc_end":
                    if later is None:
                        self.walk(ch, ())
                    else:          # `cat <<EOF | sh`: sh runs after cat starts
                        later.append(ch)

    def redirected(self, node: Any, inherited: tuple[Any, ...]) -> None:
        body = node.child_by_field_name("body")
        redirs: list[tuple[str, Word]] = []
        later: list[Any] = []
        for ch in node.children:
            if body is not None and ch.start_byte == body.start_byte and ch.type == body.type:
                continue
            if ch.type in REDIRECT_TYPES:
                try:
                    self.redirect(ch, redirs, later)
                except WordProblem as exc:
                    self.problems.append(str(exc))
            elif ch.is_named:
                later.append(ch)
        scope = tuple(inherited) + tuple(redirs)
        before = len(self.raws)
        tail = _rightmost_command(body) if body is not None and body.type in (
            "list", "pipeline") else None
        if body is not None:
            if body.type == "command":
                self.command(body, scope)
            elif tail is not None:       # `a && b > f`: bash redirects b only (the grammar
                self.extra_redirs[tail.start_byte] = list(redirs)    # reads (a && b) > f)
                self.walk(body, tuple(inherited))
            else:
                self.walk(body, scope)
        if len(self.raws) == before and scope:
            self.raws.append(RawCommand([Word.literal(":")], [], list(scope), None, node.start_byte,
                                        self.cwd_now()))
        for ch in later:
            self.walk(ch, ())
