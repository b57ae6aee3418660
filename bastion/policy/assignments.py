"""Assignments and declarations in a bash line, for the walker of :mod:`bastion.policy.parse`.

``x=1 cmd`` (a prefix assignment: a word of the command), ``x=1`` alone (an assignment
statement: recorded as a binding, a dangerous name such as ``PATH`` or ``LD_PRELOAD`` reported
for the rest of the line) and ``declare``/``local``/``export``/``readonly``/``typeset`` (a
command whose words are the names and values it declares; a name known only at run time makes
it opaque).  The walker provides ``text``, ``word`` and ``walk``; the bindings are recorded by
:class:`bastion.policy.arithwalk.ArithWalk`.

Pure: no IO.
"""

from __future__ import annotations

from typing import Any

from bastion.policy.danger import dangerous_name
from bastion.policy.heredocs import REDIRECT_TYPES, RedirectWalk
from bastion.policy.rawcommand import RawCommand
from bastion.policy.words import Word, WordProblem


class AssignmentWalk(RedirectWalk):
    """Assignments and declarations; the rest of the walk is the walker's."""

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
