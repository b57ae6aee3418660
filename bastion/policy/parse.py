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
from typing import Any

import tree_sitter
import tree_sitter_bash

from bastion.policy.assignments import AssignmentWalk
from bastion.policy.bindings import BindingWalk
from bastion.policy.cdwalk import _CD_WORD
from bastion.policy.heredocs import REDIRECT_TYPES
from bastion.policy.rawcommand import RawCommand
from bastion.policy.danger import SHADOW_GUARDED, dangerous_name
from bastion.policy.words import DATA_PROGRAMS, Disagreement, Word, WordProblem, decode_word

LANGUAGE = tree_sitter.Language(tree_sitter_bash.language())
MAX_NESTING = 48
SUB_TYPES = frozenset({"command_substitution", "process_substitution", "expansion",
                       "simple_expansion", "arithmetic_expansion"})
_LEAF_CHECK = frozenset({"word", "string_content", "extglob_pattern", "regex", "heredoc_content",
                         "variable_name", "special_variable_name"})
_COMPOUND_START = frozenset({"{", "!", "(", "[[", "((", "if", "for", "while", "until", "case",
                             "select", "function"})
_STRUCTURAL = frozenset({"subshell", "compound_statement", "if_statement", "while_statement",
                         "for_statement", "c_style_for_statement", "case_statement",
                         "function_definition", "pipeline", "list", "negated_command",
                         "test_command", "redirected_statement"})


class _Reparse(Exception):
    def __init__(self, start: int, end: int) -> None:
        self.start, self.end = start, end


class _TooDeep(Exception):
    pass


def parse_raw(text: str, positional: tuple[Word, ...] = ()) -> tuple[list[RawCommand], list[str]]:
    """Parse one line (or ``-c`` string); return (commands, line problems).

    ``positional``: the words ``$0``, ``$1`` ... of a ``sh -c TEXT`` string: a quoted
    ``"$1"`` in TEXT is that word (a literal, a glob, find's ``{}``), checked like a loop
    variable (nothing else on the line may assign it)."""
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
        walker.bind_positional(positional)
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


_FUNCTION = re.compile(rb"\(\s*\)|(?:^|[\s;&|(])function\s")


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


class _Walker(AssignmentWalk, BindingWalk):
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

    def link_pipe(self, node: Any, before: int) -> None:
        """``a | b``: b's standard input is a's output (RawCommand.stdin), for two plain
        commands joined by ``|`` (not ``|&``, which adds a's errors)."""
        kids = node.children
        by_pos = {r.pos: r for r in self.raws[before:]}
        for k in range(len(kids) - 2):
            a, op, b = kids[k], kids[k + 1], kids[k + 2]
            if a.type == "command" and op.type == "|" and b.type == "command" and \
                    a.start_byte in by_pos and b.start_byte in by_pos:
                by_pos[b.start_byte].stdin = by_pos[a.start_byte]

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
            elif t == "pipeline":
                before = len(self.raws)
                self.children(node, inherited)
                self.link_pipe(node, before)
            elif t == "function_definition":
                self.function(node, inherited)
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

    def function(self, node: Any, inherited: tuple[Any, ...]) -> None:
        """A function body runs when the function is called (maybe on a later line of an
        interactive shell, after a ``cd``): its commands' directory is unknown.  A name
        that shadows a builtin the shell or the bastion's loop relies on is a problem."""
        name = self.function_name(node)
        if name in DATA_PROGRAMS:
            self.problems.append(f"a function named {name} would change output the policy "
                                 f"reads as data")
        elif name in SHADOW_GUARDED:
            self.problems.append(f"a function named {name} would shadow the shell's own "
                                 f"{name}")
        before = len(self.raws)
        saved, self.certain = self.certain, None
        try:
            self.children(node, inherited)
        finally:
            self.certain = saved
        for raw in self.raws[before:]:
            raw.in_function = True

    def function_name(self, node: Any) -> str:
        name = node.child_by_field_name("name")
        return self.text(name) if name is not None else ""

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


__all__ = ["LANGUAGE", "REDIRECT_TYPES", "RawCommand", "parse_raw"]
