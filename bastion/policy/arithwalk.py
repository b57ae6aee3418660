"""The parse walker's half that records arithmetic on variables (see :mod:`bastion.policy.arith`).

:class:`ArithWalk` is mixed into the tree walker of :mod:`bastion.policy.parse`: as the
walker meets arithmetic contexts, ``${...}`` expansions, assignments and the builtins
that evaluate or assign names (``let``, ``read``, ``declare`` ...), it records which
variables are *read* in arithmetic and every *assignment* of the text, with the byte
range where that assignment surely ran before.  :meth:`ArithWalk.settle` then decides:
a variable read in arithmetic is safe only if every assignment to it in the text is a
plain number and one of them dominates the read; otherwise the text gets a problem
(it is opaque).

Dominating assignments: a top-level statement of the text (not sent to the background),
the header of the ``for ((..))`` and the number list of the ``for x in`` the read sits in.
Anything conditional (``&&``, ``if``, loops, subshells, functions) only adds assignments
that must be numbers too.  A ``trap`` whose code may assign makes every variable unknown.

Giving a variable the integer (``declare -i``) or read-only attribute makes the command
opaque: the attribute outlives the line, and a later line's ``y=$x`` (evaluated) or
``n=3`` (failing, so the old value stays) would then escape this analysis.

Known limits: attributes, functions and values set on earlier lines of a persistent
shell are invisible (values are treated as unknown, which is safe; functions that
assign are the engine's general limit); the output of a command substitution pasted
into arithmetic is not judged.  Pure: no IO.
"""

from __future__ import annotations

import re
from typing import Any

from bastion.policy import arith
from bastion.policy.words import Word

_MAY_ASSIGN = re.compile(r"=|\(\(|(?:^|[\s;&|({`])(?:read|let|declare|typeset|local|export|"
                         r"readonly|unset|mapfile|readarray|getopts|printf|wait|eval|source|\.|"
                         r"for|select)(?:$|[\s;&|)}`])")
_DATA_REF = re.compile(r'"?\$(?:\{([A-Za-z_]\w*)\}|([A-Za-z_]\w*))"?')
_ARRAY_KEY = re.compile(r"\[([^\]=]*)\]\+?=")
# builtin -> (options taking a value, those whose value is a name, operands are names)
_NAME_BUILTINS = {
    "read": ("adinNptu", "a", True), "mapfile": ("dnOsuCc", "", True),
    "readarray": ("dnOsuCc", "", True), "printf": ("v", "v", False),
    "getopts": ("", "", False), "wait": ("p", "p", False), "unset": ("", "", True),
}


def _value_word(w: Word) -> Word | None:
    """The value part of a decoded ``NAME=value`` word (None when not known)."""
    if w.value is None:
        return None
    return Word.literal(w.value.partition("=")[2])


class ArithWalk:
    """Mixed into ``parse._Walker`` (which provides ``src``, ``text``, ``walk``,
    ``problems``, ``arith``); see the module docstring."""

    src: bytes
    problems: list[str]
    arith: int
    loop_uses: list[tuple[Any, ...]]

    def text(self, node: Any) -> str:                          # provided by the walker
        raise NotImplementedError

    def walk(self, node: Any, inherited: tuple[Any, ...]) -> None:   # provided by the walker
        raise NotImplementedError

    def init_arith(self) -> None:
        self.scanning = 0          # inside an arithmetic text already read as a whole
        self.uses: list[tuple[str, int, str]] = []   # a variable whose value is evaluated
        self.assigned: dict[str, list[tuple[Any, ...]]] = {}   # name -> (pos, kind, refs, dom)
        self.poison = False        # something may assign any variable (a trap)
        self.dom: dict[tuple[int, str], tuple[int, int]] = {}  # top-level statements
        self.data_assigns: dict[str, set[int]] = {}   # NAME=$(date +%F): positions
        self.data_uses: list[tuple[str, int]] = []    # "$NAME" read as data (see settle)

    def top_statements(self, node: Any) -> None:
        kids = node.children
        for k, ch in enumerate(kids):
            if not ch.is_named or ch.type == "comment":
                continue
            if k + 1 < len(kids) and kids[k + 1].type == "&":
                continue
            self.dom[(ch.start_byte, ch.type)] = (ch.end_byte, ch.end_byte)
            if ch.type == "variable_assignments":
                for va in ch.named_children:
                    self.dom[(va.start_byte, va.type)] = (va.end_byte, ch.end_byte)

    def dominates(self, node: Any) -> tuple[int, int] | None:
        """The byte range a top-level statement's assignments surely precede."""
        hit = self.dom.get((node.start_byte, node.type))
        if hit is None or hit[0] != node.end_byte:
            return None
        return hit[1], len(self.src)

    def assign(self, name: str, pos: int, kind: str, refs: tuple[str, ...] = (),
               dominates: tuple[int, int] | None = None) -> None:
        """``kind``: "num" (a number by construction), "text" (a value that is a number
        if ``refs`` are), "unknown"."""
        self.assigned.setdefault(name, []).append((pos, kind, refs, dominates))

    def assign_value(self, name: str, pos: int, word: Word | None, raw: str,
                     dominates: tuple[int, int] | None = None) -> None:
        if word is not None and word.value is not None:
            ok, refs = arith.value_refs(word.value, True)
        else:
            ok, refs = arith.value_refs(raw, False)
        self.assign(name, pos, "text" if ok else "unknown", refs, dominates)

    def assign_name(self, text: str, pos: int) -> None:
        """A name (maybe ``a[SUB]``) a builtin assigns a value we cannot know."""
        base, sub = arith.subscript_of(text)
        if sub is not None:
            self.arith_text(sub, pos, f"the subscript of {text}")
        self.assign(base, pos, "unknown")

    def arith_text(self, text: str, pos: int, what: str,
                   dominates: tuple[int, int] | None = None) -> None:
        scan = arith.scan_arith(text)
        for name in scan.reads:
            self.uses.append((name, pos, what))
        for piece in scan.unsafe:
            self.problems.append(f"{what} evaluates {piece} as arithmetic, and its value is "
                                 f"only known at run time (a value like a[$(cmd)] runs cmd)")
        for name in scan.assigns:
            self.assign(name, pos, "num", (), dominates)
        for name in scan.arrays:
            self.assign(name, pos, "unknown")

    def arith_node(self, node: Any) -> None:
        """``$((..))``, ``$[..]``, ``((..))``: the text between the delimiters."""
        kids = node.children
        if len(kids) < 2:
            return
        text = self.src[kids[0].end_byte:kids[-1].start_byte].decode("utf-8", "surrogateescape")
        shown = self.text(node)
        dom = self.dominates(node) if node.type == "compound_statement" else None
        self.arith_text(text, node.start_byte, shown if len(shown) <= 40 else shown[:39] + "…",
                        dom)

    def c_for(self, node: Any, inherited: tuple[Any, ...]) -> None:
        """``for ((init; cond; step)) body``: init runs first and dominates the rest."""
        kids = node.children
        opens = [c for c in kids if c.type == "(("]
        closes = [c for c in kids if c.type == "))"]
        if opens and closes:
            a, b = opens[0], closes[0]
            semis = [c for c in kids if c.type == ";" and a.end_byte <= c.start_byte < b.start_byte]
            if len(semis) == 2:
                parts = [(a.end_byte, semis[0].start_byte), (semis[0].end_byte, semis[1].start_byte),
                         (semis[1].end_byte, b.start_byte)]
            else:
                parts = [(a.end_byte, b.start_byte)]
            for k, (x, y) in enumerate(parts):
                text = self.src[x:y].decode("utf-8", "surrogateescape")
                dom = (y, node.end_byte) if k == 0 and len(parts) == 3 else None
                self.arith_text(text, x, "for ((...))", dom)
        self.arith += 1
        try:
            for child in node.children:
                if child.type in ("do_group", "compound_statement") and child.start_byte >= (
                        closes[0].end_byte if closes else 0):
                    self.arith -= 1
                    try:
                        self.walk(child, inherited)
                    finally:
                        self.arith += 1
                else:
                    self.scanning += 1
                    try:
                        self.walk(child, inherited)
                    finally:
                        self.scanning -= 1
        finally:
            self.arith -= 1

    def for_variable(self, node: Any, var: Any) -> None:
        """``for NAME in WORDS``: a number list assigns numbers before each body run."""
        name = self.text(var)
        kids = node.children
        if kids and kids[0].type == "select":
            self.assign(name, node.start_byte, "unknown")
            return
        seen_in = False
        values = []
        body = None
        for ch in kids:
            if ch.type == "in":
                seen_in = True
            elif ch.type in ("do_group", "compound_statement"):
                body = ch
            elif seen_in and ch.is_named and ch.type != "comment":
                values.append(self.text(ch))
        if seen_in and values and body is not None and all(
                v.lstrip("+-").isdigit() for v in values):
            self.assign(name, node.start_byte, "num", (), (body.start_byte, node.end_byte))
        else:
            self.assign(name, node.start_byte, "unknown")

    def expansion(self, node: Any) -> None:
        text = self.text(node)
        body = text[2:]
        if "[" not in body and ":" not in body and "!" not in body and "=" not in body:
            return
        info = arith.expansion(text)
        shown = text if len(text) <= 40 else text[:39] + "…"
        for piece in info.arith:
            self.arith_text(piece, node.start_byte, shown)
        if info.indirect is not None:
            self.uses.append((info.indirect, node.start_byte, shown))
        if info.unsafe is not None:
            self.problems.append(f"{shown} uses a value known only at run time as a variable "
                                 f"name (its subscript would be evaluated)")
        if info.assign is not None:
            name, raw = info.assign
            self.assign_value(name, node.start_byte, None, raw)

    def test_arith(self, node: Any) -> None:
        """``[[ A -eq B ]]`` evaluates A and B; ``-v NAME[SUB]`` evaluates SUB."""
        double = bool(node.children) and node.children[0].type == "[["
        stack = [c for c in node.children if c.is_named]
        while stack:
            e = stack.pop()
            op = e.children[0] if e.type == "unary_expression" and e.child_count else None
            if op is not None and op.type == "test_operator" and self.text(op) == "-v":
                for c in e.children[1:]:
                    self.v_operand(self.text(c), c.start_byte)
                continue
            if e.type == "binary_expression":
                ops = [c for c in e.children if c.type == "test_operator"]
                if ops and double and self.text(ops[0]) in arith.ARITH_TEST_OPS:
                    for c in e.children:
                        if c.is_named and c.type != "test_operator":
                            self.arith_text(arith.unquote(self.text(c)), c.start_byte,
                                            f"[[ ... {self.text(ops[0])} ... ]]")
                    continue
            if e.type in ("binary_expression", "unary_expression", "parenthesized_expression"):
                stack.extend(c for c in e.children if c.is_named)

    def v_operand(self, raw: str, pos: int) -> None:
        text = arith.unquote(raw)
        if "$" in text or "`" in text:
            self.problems.append(f"-v {raw}: a variable name known only at run time (its "
                                 f"subscript would be evaluated)")
            return
        base, sub = arith.subscript_of(text)
        if sub is not None:
            self.arith_text(sub, pos, f"-v {text}")

    def array_keys(self, value_node: Any, pos: int) -> None:
        """``([k]=v ...)``: the keys of an indexed array are arithmetic."""
        raw = self.text(value_node)
        for m in _ARRAY_KEY.finditer(raw):
            self.arith_text(m.group(1), pos, f"the array key [{m.group(1)}]")

    def builtin_names(self, words: list[Word], node: Any) -> str | None:
        """Builtins that evaluate arithmetic or assign the variables they name: record
        what they do; return why the command is opaque, if it is."""
        k = 0
        while k < len(words) and words[k].value in ("command", "builtin") and \
                not words[k].quoted:
            k += 1
            while k < len(words) and (words[k].value or "").startswith("-") and \
                    words[k].value != "--":
                k += 1
        if k >= len(words) or words[k].value is None:
            return None
        prog = words[k].value
        args = words[k + 1:]
        pos = node.start_byte
        if prog == "let":
            dom = self.dominates(node) if k == 0 else None
            for w in args:
                if w.value is None and arith.unquoted_glob(w.raw):
                    return (f"let {w.raw}: an unquoted glob becomes the name of a matching "
                            f"file, evaluated as arithmetic (a file named like "
                            f"x+a[$(cmd)] would run cmd); quote it")
                self.arith_text(arith.unquote(w.raw), pos, "let", dom)
            return None
        if prog == "trap":
            code = args[0] if args else None
            if code is not None and (code.value is None or _MAY_ASSIGN.search(code.value)):
                self.poison = True     # a DEBUG trap runs before every command
            return None
        if prog == "eval":      # its string runs in this shell: it may assign anything
            if any(w.value is None or _MAY_ASSIGN.search(w.value) for w in args):
                self.poison = True
            return None
        if prog in ("test", "["):
            for j, w in enumerate(args[:-1]):
                if w.value == "-v":
                    self.v_operand(args[j + 1].raw, pos)
            return None
        spec = _NAME_BUILTINS.get(prog or "")
        if spec is None:
            return None
        takes, name_opts, operands_are_names = spec
        names: list[Word] = []
        operands: list[Word] = []
        j = 0
        only = False
        while j < len(args):
            w = args[j]
            v = w.value
            j += 1
            if not only and v == "--":
                only = True
                continue
            if not only and v is not None and v.startswith("-") and len(v) > 1:
                for c_i, c in enumerate(v[1:], 1):
                    if prog in ("mapfile", "readarray") and c == "C":
                        return f"{prog} -C runs a callback command"
                    if c in takes:
                        value = v[c_i + 1:] if c_i + 1 < len(v) else None
                        if value is None:
                            if j >= len(args):
                                break
                            value_w = args[j]
                            j += 1
                        else:
                            value_w = Word.literal(value)
                        if c in name_opts:
                            names.append(value_w)
                        break
                continue
            if not only and v is None and (w.template[:1] == (None,) or
                                           (w.template and str(w.template[0]).startswith("-"))):
                if j < len(args) and name_opts:   # an option known only at run time (maybe
                    names.append(args[j])         # -v): the next word may be a name too
            only = True                     # builtins stop reading options at an operand
            operands.append(w)
        if prog == "getopts":
            names.extend(operands[1:2])
        elif operands_are_names:
            names.extend(operands)
        for w in names:
            if w.value is None:
                return f"{prog} assigns a variable named at run time ({w.raw})"
            self.assign_name(w.value, pos)
        return None

    def settle(self) -> None:
        """Decide every variable read in arithmetic (one problem is enough); check that
        the loop variables words were read through are assigned by their loop only."""
        for name, _, _, _, for_pos in dict.fromkeys(self.loop_uses):
            others = [a for a in self.assigned.get(name, ()) if a[0] != for_pos]
            if others or self.poison:
                self.problems.append(f"the loop variable {name} is also assigned elsewhere on "
                                     f"the line, so its value is not one of the loop's words")
                break
        for name, pos in self.data_uses:
            found = self.assigned.get(name, ())
            data = self.data_assigns.get(name, set())
            if self.poison or not all(a[0] in data for a in found) or not any(
                    d is not None and d[0] <= pos < d[1] for _, _, _, d in found):
                self.problems.append(f"${name} is read as the output of the substitution "
                                     f"assigned to it, but it may be assigned something else "
                                     f"first")
                break
        for name, pos, what in self.uses:
            if not self.numeric(name, pos, frozenset()):
                self.problems.append(
                    f"{what} evaluates the value of {name} as arithmetic, and that value is not "
                    f"known to be a plain number (a value like a[$(cmd)] would run cmd)")
                return

    def numeric(self, name: str, pos: int, seen: frozenset[tuple[str, int]]) -> bool:
        if name in arith.SAFE_NAMES:
            return True
        if self.poison:
            return False
        found = self.assigned.get(name)
        if not found or (name, pos) in seen:
            return False
        if not any(d is not None and d[0] <= pos < d[1] for _, _, _, d in found):
            return False
        seen = seen | {(name, pos)}
        for apos, kind, refs, _ in found:
            if kind == "unknown":
                return False
            for ref in refs:
                if not self.numeric(ref, apos, seen):
                    return False
        return True

    def record_assignment(self, node: Any, name_node: Any, value: Any, word: Word | None,
                          dominates: tuple[int, int] | None = None,
                          assoc: bool = False) -> None:
        """``NAME=value`` / ``NAME+=value`` / ``a[SUB]=v`` / ``a=([k]=v)`` for settle()."""
        if name_node is None or self.scanning:
            return
        pos = node.start_byte
        if name_node.type == "subscript":
            self.assign_name(self.text(name_node), pos)
            return
        name = self.text(name_node)
        if value is None:
            self.assign(name, pos, "text", (), dominates)
        elif value.type == "array":
            if not assoc:
                self.array_keys(value, pos)
            self.assign(name, pos, "unknown")
        else:
            self.assign_value(name, pos, word, self.text(value), dominates)
            if word is not None and word.data and word.template == (None,):
                self.data_assigns.setdefault(name, set()).add(pos)

    def data_word(self, raw: str, start: int) -> Word | None:
        """``"$NAME"`` after ``NAME=$(date +%F)`` earlier on the line: data (never an
        option), provided settle() finds that assignment surely before and no other."""
        m = _DATA_REF.fullmatch(raw)
        if m is None:
            return None
        name = m.group(1) or m.group(2)
        if not any(p < start for p in self.data_assigns.get(name, ())):
            return None
        self.data_uses.append((name, start))
        return Word(raw=raw, value=None, template=(None,), why="variable",
                    quoted=raw.startswith('"'), data=True)

    def declared(self, keyword: str, flags: set[str], declared: list[Any],
                 node: Any) -> str | None:
        """What declare/typeset/local/export/readonly assign (for settle()); why the
        command is opaque if it gives a variable an attribute that outlives the line."""
        listing = bool(flags & {"p", "f", "F"})
        if not declared or listing:
            return None
        if "i" in flags:
            return (f"{keyword} -i: every later assignment to the variable (on this line or "
                    f"a later one) is evaluated as arithmetic")
        if "r" in flags or keyword == "readonly":
            return (f"{keyword} makes a variable read-only: a later assignment to it fails "
                    f"and the old value, which the policy cannot see, stays")
        dom = self.dominates(node) if keyword in ("declare", "typeset", "export") else None
        for assignment, w in declared:
            if assignment is None:
                if w.value is not None:
                    self.assign_name(w.value.partition("=")[0], node.start_byte)
                continue
            self.record_assignment(assignment, assignment.child_by_field_name("name"),
                                   assignment.child_by_field_name("value"),
                                   _value_word(w), dom, assoc="A" in flags)
        return None
