"""Find every simple command a bash line would run (tree-sitter-bash).

:func:`parse_raw` turns a line into :class:`RawCommand` objects, in the order
bash would start them, plus a list of line-level problems (each one makes the
line opaque).  It looks into lists, pipelines, subshells, groups, ``if`` / ``for``
/ ``while`` / ``until`` / ``case`` / ``select`` bodies, function bodies, ``!``,
``time`` and ``coproc``, command and process substitutions wherever they appear
(inside double quotes, parameter defaults, arithmetic, assignments, array
subscripts, here-strings and unquoted here-documents).  A here-document whose
delimiter is quoted is data and is not looked into.

Redirection targets become extra words of the command they apply to (for a
compound command with a redirection, of every simple command inside it); a line
made of redirections only (``> /etc/x``) is reported as the command ``:``.

What this does *not* do: decide anything, know wrappers (``sudo``, ``bash -c``:
see :mod:`bastion.policy.wrappers`), or expand variables.

Known limits (each fails closed, as an opaque line, unless noted):

* tree-sitter-bash rejects some valid bash: a here-string after another
  redirection (``cat 2>&1 <<<x``), ``<>``, two here-documents on one line,
  ``\\$(`` outside quotes, ``ls#x``.  These lines are opaque.
* it accepts some invalid bash (``ls ;; rm``); we then report commands bash
  would never run, which can only make a decision stricter.
* ``time`` and ``coproc`` before a compound command are misread by the grammar;
  they are blanked out and the line is parsed again.
* Words are decoded by our own lexer (:mod:`bastion.policy.words`); wherever its
  reading and the tree disagree (a word split by a line continuation, an
  expansion the grammar missed, stray text between words) the line is opaque.
* Code hidden in *data* that bash evaluates at run time: a variable read in
  arithmetic (``$((x))``, ``let``, ``[[ x -eq 1 ]]``, ``${a[x]}``, ``${s:x}``,
  ``${!x}`` ...) makes the text opaque unless it surely holds a plain number
  (:mod:`bastion.policy.arithwalk`); ``${x@P}`` is opaque; literal code in ``[[ ]]``
  and ``(( ))`` makes the line opaque.

Pure: no IO.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import tree_sitter
import tree_sitter_bash

from bastion.policy.arithwalk import ArithWalk
from bastion.policy.danger import dangerous_name
from bastion.policy.words import DATA_PROGRAMS, Disagreement, Word, WordProblem, decode_word, norm_path

LANGUAGE = tree_sitter.Language(tree_sitter_bash.language())
MAX_NESTING = 48
SUB_TYPES = frozenset({"command_substitution", "process_substitution", "expansion",
                       "simple_expansion", "arithmetic_expansion"})
REDIRECT_TYPES = frozenset({"file_redirect", "heredoc_redirect", "herestring_redirect"})
_LEAF_CHECK = frozenset({"word", "string_content", "extglob_pattern", "regex", "heredoc_content",
                         "variable_name", "special_variable_name"})
_COMPOUND_START = frozenset({"{", "!", "(", "[[", "((", "if", "for", "while", "until", "case",
                             "select", "function"})
_STRUCTURAL = frozenset({"subshell", "compound_statement", "if_statement", "while_statement",
                         "for_statement", "c_style_for_statement", "case_statement",
                         "function_definition", "pipeline", "list", "negated_command",
                         "test_command", "redirected_statement"})


@dataclass(slots=True)
class RawCommand:
    """A simple command as written: words, prefix assignments, redirection targets."""

    words: list
    assigns: list = field(default_factory=list)       # [(name, Word)]
    redirs: list = field(default_factory=list)        # [(operator, Word)] (own and inherited)
    problem: str | None = None                        # why it is opaque, if it is
    pos: int = 0                                      # start byte in its source
    cwd: str | None = None                            # its working directory: "" the text's
                                                      # first one, a path (after cd X &&), or
                                                      # None (unknown)


class _Reparse(Exception):
    def __init__(self, start: int, end: int) -> None:
        self.start, self.end = start, end


class _TooDeep(Exception):
    pass


def parse_raw(text: str) -> tuple[list[RawCommand], list[str]]:
    """Parse one line (or ``-c`` string); return (commands, line problems)."""
    try:
        src = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return [], ["line holds text that is not valid Unicode"]
    if b"\x00" in src:
        return [], ["line holds a NUL byte"]
    parser = tree_sitter.Parser(LANGUAGE)
    for _ in range(8):
        tree = parser.parse(src)
        walker = _Walker(src)
        if tree.root_node.has_error:
            walker.problems.append(_describe_error(tree.root_node, src))
        try:
            walker.walk(tree.root_node, ())
        except _Reparse as rp:
            src = src[:rp.start] + b" " * (rp.end - rp.start) + src[rp.end:]
            continue
        except _TooDeep:
            return walker.raws, walker.problems + [f"line nested deeper than {MAX_NESTING} levels"]
        walker.settle()
        return walker.raws, walker.problems
    return [], ["time/coproc prefixes could not be resolved"]


_CD_WORD = re.compile(rb"(?:^|[^\w.-])(?:cd|pushd|popd)(?:$|[^\w.-])")
_FUNCTION = re.compile(rb"\(\s*\)|(?:^|[\s;&|(])function\s")


def _rightmost_command(node: Any) -> Any:
    """The simple command a redirection after a list or pipeline belongs to, or None."""
    while node is not None and node.type in ("list", "pipeline"):
        named = [c for c in node.named_children if c.type != "comment"]
        node = named[-1] if named else None
    return node if node is not None and node.type == "command" else None


def _describe_error(root, src: bytes) -> str:
    stack = [root]
    while stack:
        node = stack.pop()
        if node.is_missing:
            return f"line is incomplete (missing {node.type!r} at byte {node.start_byte})"
        if node.type == "ERROR":
            snippet = src[node.start_byte:node.start_byte + 20].decode("utf-8", "replace")
            return f"line does not parse as bash near byte {node.start_byte}: {snippet!r}"
        stack.extend(reversed(node.children))
    return "line does not parse as bash"


class _Walker(ArithWalk):
    def __init__(self, src: bytes) -> None:
        self.src = src
        self.raws: list[RawCommand] = []
        self.problems: list[str] = []
        self.depth = 0
        self.arith = 0
        self.init_arith()          # arithmetic on variables (bastion.policy.arithwalk)
        self.certain: str | None = None     # the cwd of commands on the right of `cd X &&`
        self.cd_free = _CD_WORD.search(src) is None     # no cd/pushd/popd in the text
        self.cd_in_function = not self.cd_free and _FUNCTION.search(src) is not None
        self.extra_redirs: dict[int, list[Any]] = {}      # misparsed `a && b > f` (see redirected)
        self.loops: list[tuple[Any, ...]] = []      # active `for f in WORDS` bodies (loop_binding)
        self.loop_uses: list[tuple[Any, ...]] = []  # bindings a word was read through

    # -- structure -----------------------------------------------------------------
    def walk(self, node, inherited: tuple) -> None:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise _TooDeep()
        try:
            t = node.type
            if t == "program":
                self.top_statements(node)
                self.children(node, inherited)
            elif t == "command":
                self.command(node, inherited)
            elif t == "list":
                self.walk_list(node, inherited)
            elif t == "redirected_statement":
                self.redirected(node, inherited)
            elif t in ("declaration_command", "unset_command"):
                self.declaration(node, inherited)
            elif t == "variable_assignment":
                self.assignment_statement(node)
            elif t == "comment":
                pass
            elif t == "function_definition" and self.function_name(node) in DATA_PROGRAMS:
                self.problems.append(f"a function named {self.function_name(node)} would "
                                     f"change output the policy reads as data")
                self.children(node, inherited)
            elif t == "for_statement":
                var = node.child_by_field_name("variable")
                if var is not None and dangerous_name(self.text(var)):
                    self.raws.append(RawCommand([Word.literal("for"), Word.literal(self.text(var))],
                                                problem=f"for loop assigns {self.text(var)}",
                                                pos=node.start_byte))
                if var is not None:
                    self.for_variable(node, var)
                bound = self.loop_binding(node, var) if var is not None else None
                if bound is not None:
                    self.loops.append(bound)
                try:
                    self.children(node, inherited)
                finally:
                    if bound is not None:
                        self.loops.remove(bound)
            elif t == "expansion":
                self.expansion(node)
                self.children(node, inherited)
            elif t == "c_style_for_statement":
                self.c_for(node, inherited)
            elif t in ("test_command", "arithmetic_expansion") or (
                    t == "compound_statement" and node.child_count and node.children[0].type == "(("):
                scanned = t != "test_command"
                if scanned and not self.scanning:
                    self.arith_node(node)
                elif not scanned:
                    self.test_arith(node)
                self.arith += 1
                self.scanning += scanned
                try:
                    self.children(node, inherited)
                finally:
                    self.arith -= 1
                    self.scanning -= scanned
            elif t in ("command_substitution", "process_substitution"):
                self.children(node, ())
                if node.child_count and node.children[0].type == "`":
                    self.backticks(node)
                self.read_substitution(node)
            elif t == "raw_string":
                if self.arith and self._has_code(self.src[node.start_byte:node.end_byte]):
                    self.problems.append("literal code inside [[ ]] or (( )) may be evaluated")
            elif t == "heredoc_content":
                self.heredoc_text(node.start_byte, node.end_byte)
            elif node.child_count == 0:
                if t in _LEAF_CHECK and self._has_code(self.src[node.start_byte:node.end_byte]):
                    self.problems.append(f"substitution the parser did not see in {self.text(node)!r}")
            else:
                self.children(node, inherited)
        finally:
            self.depth -= 1

    # -- the working directory -----------------------------------------------------
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
                if ch.type in REDIRECT_TYPES or ch.type == "comment":
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
            args = [w.value for w in words[1:] if w.value not in ("-L", "-P", "-e", "-@", "--")]
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

    def check_heredoc_end(self, body, delimiter: bytes | None, strip_tabs: bool) -> None:
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

    def function_name(self, node: Any) -> str:
        name = node.child_by_field_name("name")
        return self.text(name) if name is not None else ""

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

    def backtick_text(self, inner: bytes) -> None:
        out = bytearray()
        i = 0
        while i < len(inner):
            if inner[i] == 92 and i + 1 < len(inner) and inner[i + 1] in b"$`\\":
                out.append(inner[i + 1])
                i += 2
            else:
                out.append(inner[i])
                i += 1
        raws, problems = parse_raw(bytes(out).decode("utf-8", "surrogateescape"))
        self.raws.extend(raws)
        self.problems.extend(problems)

    def backticks(self, node) -> None:
        """Inside `...`, bash removes the backslash before $ ` \\ and parses again,
        so `echo \\`rm x\\`` runs rm.  Parse that text too (on top of the tree)."""
        inner = self.src[node.start_byte + 1:node.end_byte - 1]
        if b"\\" in inner:
            self.backtick_text(inner)

    def children(self, node, inherited: tuple) -> None:
        prev = node.start_byte
        for child in node.children:
            if child.start_byte > prev:
                self.skipped(prev, child.start_byte)
            self.walk(child, inherited)
            prev = child.end_byte
        if node.end_byte > prev:
            self.skipped(prev, node.end_byte)

    def skipped(self, a: int, b: int) -> None:
        """Text inside a node that no child covers: the grammar dropped it."""
        if self._has_code(self.src[a:b]):
            self.problems.append(f"substitution the parser skipped: "
                                 f"{self.src[a:b].decode('utf-8', 'replace')!r}")

    @staticmethod
    def _has_code(text: bytes) -> bool:
        return b"$(" in text or b"`" in text or b"<(" in text or b">(" in text

    def text(self, node) -> str:
        return self.src[node.start_byte:node.end_byte].decode("utf-8", "surrogateescape")

    # -- words -----------------------------------------------------------------
    def word(self, node, *, assignment: bool = False) -> Word:
        return self.word_span(node, node.start_byte, node.end_byte, assignment=assignment)

    def loop_binding(self, node: Any, var: Any) -> tuple[Any, ...] | None:
        """``for f in WORDS``: while its body runs, ``"$f"`` is one of WORDS, when each of
        them is a literal or a glob (names found on disk); else None."""
        name = self.text(var)
        values: list[Any] = []
        body = None
        seen_in = False
        for ch in node.children:
            if ch.type == "in":
                seen_in = True
            elif ch.type in ("do_group", "compound_statement"):
                body = ch
            elif seen_in and ch.is_named and ch.type != "comment":
                values.append(ch)
        if not values or body is None or node.children[0].type != "for":
            return None
        alternatives = []
        for ch in values:
            try:
                w = decode_word(self.src, ch.start_byte, ch.end_byte, {}, self._on_sub)
            except (Disagreement, WordProblem):
                return None
            if w.value is not None:
                alternatives.append((w.value,))
            elif w.globbed:
                alternatives.append(w.template)
            else:
                return None
        return (name, tuple(alternatives), body.start_byte, body.end_byte, node.start_byte)

    def loop_word(self, raw: str, start: int) -> Word | None:
        """``"$f"`` / ``"${f}"`` inside the body of a ``for f in`` over known words."""
        if not raw.startswith('"$') or not raw.endswith('"'):
            return None
        name = raw[2:-1]
        if name.startswith("{") and name.endswith("}"):
            name = name[1:-1]
        for bound in reversed(self.loops):
            if bound[0] == name and bound[2] <= start < bound[3]:
                self.loop_uses.append(bound)
                return Word(raw=raw, value=None, template=(None,), why="loop variable",
                            found=bound[1], quoted=True)
        return None

    def word_span(self, node, start: int, end: int, *, assignment: bool = False) -> Word:
        if self.data_assigns and not assignment:
            raw = self.src[start:end].decode("utf-8", "surrogateescape")
            if raw.count('"') in (0, 2) and raw.startswith('"') == raw.endswith('"'):
                hit = self.data_word(raw, start)
                if hit is not None:
                    return hit
        if self.loops and not assignment:
            hit = self.loop_word(self.src[start:end].decode("utf-8", "surrogateescape"), start)
            if hit is not None:
                return hit
        if node.type in SUB_TYPES:
            subs = {node.start_byte: node}
        elif node.child_count:
            subs = {}
            stack = [node]
            while stack:
                n = stack.pop()
                for c in n.children:
                    if c.type in SUB_TYPES:
                        subs[c.start_byte] = c
                    elif c.child_count:
                        stack.append(c)
        else:
            subs = {}
        try:
            return decode_word(self.src, start, end, subs, self._on_sub, assignment=assignment)
        except Disagreement as exc:
            self.problems.append(f"{exc}: {self.src[start:end].decode('utf-8', 'replace')!r}")
            for sub in subs.values():
                self._on_sub(sub)
            return Word.unknown(self.src[start:end].decode("utf-8", "surrogateescape"), "unparsed")

    def _on_sub(self, node) -> None:
        self.walk(node, ())

    def gap(self, a: int, b: int) -> None:
        if a >= b:
            return
        src = self.src
        g = src[a:b]
        if g.replace(b"\\\n", b"").strip(b" \t"):
            self.problems.append(f"text the parser skipped: {g.decode('utf-8', 'replace')!r}")
            return
        k = g.find(b"\\\n")
        while k >= 0:   # a continuation glued to words on both sides joins them in bash
            at = a + k
            if at > 0 and src[at - 1] not in b" \t\n" and at + 2 < len(src) and \
                    src[at + 2] not in b" \t\n":
                self.problems.append("line continuation inside a word")
                return
            k = g.find(b"\\\n", k + 2)

    # -- commands -----------------------------------------------------------------
    def command(self, node, inherited: tuple) -> None:
        if node.start_byte == node.end_byte:     # a MISSING command the parser made up
            return
        words: list[Word] = []
        assigns: list = []
        redirs: list = list(inherited) + self.extra_redirs.pop(node.start_byte, [])
        problem = None
        prev = node.start_byte
        named = False
        glued = False       # the previous child was a word ending right here
        dollar = None       # start of a lone "$" the grammar split from its "..." ($"...")
        for child in node.children:
            t = child.type
            if t == "$" and not child.is_named:
                self.gap(prev, child.start_byte)
                dollar, prev = child.start_byte, child.end_byte
                continue
            if dollar is not None:
                if t == "string" and child.start_byte == prev:
                    try:
                        words.append(self.word_span(child, dollar, child.end_byte))
                    except WordProblem as exc:
                        problem = problem or str(exc)
                    dollar, prev, glued = None, child.end_byte, True
                    continue
                self.problems.append("a lone $ the parser did not place")
                dollar = None
            self.gap(prev, child.start_byte)
            is_word = t not in REDIRECT_TYPES and t != "comment" and t not in _STRUCTURAL
            if glued and is_word and child.start_byte == prev:
                self.problems.append("the parser split one word in two: "
                                     f"{self.src[node.start_byte:child.end_byte].decode('utf-8', 'replace')!r}")
            glued = is_word
            prev = child.end_byte
            try:
                if t == "variable_assignment" and not named:
                    assigns.append(self.prefix_assignment(child))
                elif t in REDIRECT_TYPES:
                    self.redirect(child, redirs)
                elif t == "comment":
                    pass
                elif t in _STRUCTURAL:
                    self._maybe_reparse(node, words, child.start_byte)
                    self.walk(child, ())
                else:
                    named = named or t == "command_name"
                    try:
                        words.append(self.word(child))
                    except WordProblem:
                        words.append(Word.unknown(self.text(child), "unparsed"))
                        raise
                    if len(words) in (2, 3):
                        self._check_time_coproc(node, words, child)
            except WordProblem as exc:
                problem = problem or str(exc)
        if dollar is not None:
            self.problems.append("a lone $ the parser did not place")
        self.gap(prev, node.end_byte)
        if words:
            problem = problem or self.builtin_names(words, node)
        self.raws.append(RawCommand(words, assigns, redirs, problem, node.start_byte,
                                    self.cwd_now()))

    def _check_time_coproc(self, node, words: list, child) -> None:
        first = words[0]
        if first.quoted or first.value not in ("time", "coproc"):
            return
        if len(words) == 3 and first.value == "time" and words[1].value != "-p":
            return
        last = words[-1]
        if last.quoted or last.value is None:
            return
        if last.value in _COMPOUND_START:
            raise _Reparse(node.start_byte, child.start_byte)

    def _maybe_reparse(self, node, words: list, at: int) -> None:
        if words and not words[0].quoted and words[0].value in ("time", "coproc"):
            raise _Reparse(node.start_byte, at)

    def prefix_assignment(self, node) -> tuple[str, Word]:
        name_node = node.child_by_field_name("name")
        name = self.text(name_node) if name_node is not None else self.text(node).split("=")[0]
        value = node.child_by_field_name("value")
        self.record_assignment(node, name_node, value, None)
        if value is None:
            return name, Word.literal("")
        if value.type == "array":
            self.walk(value, ())
            return name, Word.unknown(self.text(value), "array")
        return name, self.word(value, assignment=True)

    def redirect(self, node, redirs: list, later: list | None = None) -> None:
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

    def redirected(self, node, inherited: tuple) -> None:
        body = node.child_by_field_name("body")
        redirs: list = []
        later: list = []
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

    def declaration(self, node, inherited: tuple) -> None:
        words: list[Word] = []
        problem = None
        flags: set[str] = set()
        declared: list[Any] = []          # (assignment node or None, name node or word)
        for ch in node.children:
            try:
                if not words:
                    words.append(Word.literal(self.text(ch)))
                elif ch.type == "variable_assignment":
                    name_node = ch.child_by_field_name("name")
                    name = self.text(name_node) if name_node is not None else ""
                    if dangerous_name(name):
                        problem = problem or f"{words[0].value} assigns {name}"
                    value = ch.child_by_field_name("value")
                    if value is not None and value.type == "array":
                        self.walk(value, ())
                        words.append(Word.unknown(self.text(ch), "array"))
                    else:
                        words.append(self.word(ch, assignment=True))
                    declared.append((ch, words[-1]))
                elif ch.type in REDIRECT_TYPES:
                    pass
                elif ch.is_named and ch.type != "comment":
                    w = self.word(ch)
                    words.append(w)
                    if w.value is not None and w.value[:1] in ("-", "+") and len(w.value) > 1:
                        if w.value[0] == "-":
                            flags.update(w.value[1:])
                    elif w.value is None and (w.template[:1] == (None,) or
                                              str(w.template[0]).startswith(("-", "+"))):
                        problem = problem or (f"{words[0].value} declares a variable named at "
                                              f"run time ({w.raw})")
                    else:
                        declared.append((None, w))
            except WordProblem as exc:
                problem = problem or str(exc)
        problem = problem or self.declared((words[0].value or "") if words else "", flags, declared,
                                               node)
        self.raws.append(RawCommand(words, [], list(inherited), problem, node.start_byte,
                                    self.cwd_now()))

    def assignment_statement(self, node) -> None:
        name_node = node.child_by_field_name("name")
        name = self.text(name_node) if name_node is not None else ""
        if name_node is not None and name_node.type == "variable_name" and dangerous_name(name):
            self.raws.append(RawCommand([Word.literal(self.text(node))],
                                        problem=f"assigns {name} for the rest of the line",
                                        pos=node.start_byte))
        value = node.child_by_field_name("value")
        word = None
        if value is not None and value.type not in ("array",):
            try:
                word = self.word(value, assignment=True)
            except WordProblem as exc:
                self.problems.append(str(exc))
        elif value is not None:
            self.walk(value, ())
        self.record_assignment(node, name_node, value, word, self.dominates(node))
        if name_node is not None and name_node.child_count:
            self.walk(name_node, ())


__all__ = ["RawCommand", "parse_raw", "LANGUAGE"]
