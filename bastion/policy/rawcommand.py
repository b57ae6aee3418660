"""One simple command as the parser found it (:class:`RawCommand`), before normalisation.

:mod:`bastion.policy.parse` makes them; :mod:`bastion.policy.commands` turns each into a
normalised :class:`bastion.policy.commands.Command`.  Pure: no IO.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class RawCommand:
    """A simple command as written: words, prefix assignments, redirection targets."""

    words: list[Any]                                  # Words
    assigns: list[Any] = field(default_factory=list)  # [(name, Word)]
    redirs: list[Any] = field(default_factory=list)   # [(operator, Word)] (own and inherited)
    problem: str | None = None                        # why it is opaque, if it is
    pos: int = 0                                      # start byte in its source
    cwd: str | None = None                            # its working directory: "" the text's
                                                      # first one, a path (after cd X &&), or
                                                      # None (unknown)
    stdin: Any = None                                 # the RawCommand piped into it with
                                                      # `|` (a plain command), if any
    in_function: bool = False                         # in a function body: it runs when
                                                      # called, in a directory unknown now
