"""What a quoted variable stands for, when the line says: loop variables and ``$1``.

A mixin of the parse walker (:mod:`bastion.policy.parse`).  Inside ``for f in WORDS; do
... done``, ``"$f"`` is one of WORDS when each is a literal or a glob (names found on
disk); in ``sh -c TEXT $0 $1 ...`` a ``"$1"`` in TEXT is that word (find's ``{}``, a
literal).  The word then carries those alternatives (``Word.found``); ``settle()``
(:mod:`bastion.policy.arithwalk`) refuses the binding when anything else on the line may
assign the variable.  Pure: no IO.
"""

from __future__ import annotations

from typing import Any

from bastion.policy.words import Disagreement, Word, WordProblem, decode_word


class BindingWalk:
    """Variable bindings; the walker provides ``text`` and ``_on_sub``."""

    src: bytes
    loops: list[tuple[Any, ...]]        # active bindings: (name, alternatives, start, end, pos)
    loop_uses: list[tuple[Any, ...]]    # bindings a word was read through

    def text(self, node: Any) -> str:                   # provided by the walker
        raise NotImplementedError

    def _on_sub(self, node: Any) -> None:               # provided by the walker
        raise NotImplementedError

    def bind_positional(self, positional: tuple[Word, ...]) -> None:
        """``"$1"`` ... over the whole text stand for the words given (see parse_raw)."""
        for k, w in enumerate(positional[1:10], start=1):
            if w.found:
                alternatives = tuple(w.found)
            elif w.value is not None:
                alternatives = ((w.value,),)
            elif w.globbed:
                alternatives = (w.template,)
            else:
                continue
            self.loops.append((str(k), alternatives, 0, len(self.src), -1))

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
