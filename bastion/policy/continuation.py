"""Would a shell ask for more lines of this text?  ``needs_more(text) -> bool``.

A mediated shell's line editor keeps accumulating physical lines (with a ``> `` prompt) while
this says the command is unfinished: an open quote (``'`` ``"`` `````` ``$'``), an open
``$(``/``${``/``(``, a here-document whose end line has not come, a trailing backslash or
``|`` ``&&`` ``||`` ``|&``, an open ``if``/``case``/``for``/``while``/``until``/``select``/
``{``.  Then the whole text is decided and run as one.

A wrong answer is only an inconvenience, never a hole: the caller runs the text on its own
with ``eval``, so a text sent too early is a syntax error that runs nothing, and one held too
long waits for the next line (or ^C).  So this is a lexer, not a parser: it follows quotes,
escapes, comments, here-documents and reserved words in command position, and when in doubt
says the text is complete.  Pure, no IO.
"""

from __future__ import annotations

_OPEN = {"if": "fi", "case": "esac", "for": "done", "while": "done", "until": "done",
         "select": "done", "{": "}"}
_CLOSE = {"fi", "esac", "done", "}"}
# after these words the next word is again in command position
_LEADERS = {"then", "do", "else", "elif", "if", "while", "until", "!", "{", "time"}
_OPERATOR_TAIL = ("&&", "||", "|&", "|")


def needs_more(text: str, dialect: str = "bash") -> bool:
    try:
        return _Lexer(text, dialect).run()
    except _Unsure:
        return False


class _Unsure(Exception):
    pass


class _Lexer:
    def __init__(self, text: str, dialect: str) -> None:
        self.s = text
        self.i = 0
        self.bash = dialect != "sh"
        self.blocks: list[str] = []          # expected closers
        self.heredocs: list[tuple[str, bool]] = []
        self.command_pos = True
        self.last_op = ""
        self.fn_name = False

    def run(self) -> bool:
        s = self.s
        n = len(s)
        while self.i < n:
            c = s[self.i]
            if c == "\n":
                self.i += 1
                if self.heredocs and not self._bodies():
                    return True
                self.command_pos = True
                if self.last_op not in _OPERATOR_TAIL:    # `a &&` newline `b`: still open
                    self.last_op = ""
            elif c in " \t":
                self.i += 1
            elif c == "#":
                while self.i < n and s[self.i] != "\n":
                    self.i += 1
            elif c == "\\" and self.i + 1 == n:
                return True
            elif c in ";&|()<>":
                if self._operator():
                    return True
            else:
                word, unfinished = self._word()
                if unfinished:
                    return True
                self._reserved(word)
                self.last_op = ""
        if self.heredocs or self.blocks:
            return True
        return self.last_op in _OPERATOR_TAIL

    # -- tokens --------------------------------------------------------------------
    def _operator(self) -> bool:
        s, i = self.s, self.i
        two = s[i:i + 2]
        if s.startswith("<<<", i):
            self.i += 3
            self.command_pos, self.last_op = False, "<<<"
            return False
        if s.startswith("<<", i):
            self.i += 3 if s.startswith("<<-", i) else 2
            strip = s.startswith("<<-", i)
            while self.i < len(s) and s[self.i] in " \t":
                self.i += 1
            word, unfinished = self._word()
            if unfinished:
                return True
            if not word:
                raise _Unsure()
            self.heredocs.append((word.replace("'", "").replace('"', "").replace("\\", ""),
                                  strip))
            self.last_op = ""
            return False
        if two in ("&&", "||", "|&", ";;", "&>", ">>", "<&", ">&", ">|", "<>"):
            self.i += 2
            op = two
        else:
            self.i += 1
            op = s[i]
        if op == "(":
            if s.startswith("(", self.i):              # (( arithmetic ))
                end = s.find("))", self.i)
                if end < 0:
                    return True
                self.i = end + 2
                self.command_pos = False
                return False
            if not self.command_pos:               # f() or a case pattern's (
                return False
            self.blocks.append(")")
        elif op == ")":
            if self.blocks and self.blocks[-1] == ")":
                self.blocks.pop()
            elif self.blocks and self.blocks[-1] == "esac":
                pass                               # a case pattern
        self.command_pos = op in ("&&", "||", "|&", "|", ";", "&", ";;", "(", ")")
        self.last_op = op
        return False

    def _word(self) -> tuple[str, bool]:
        """One word (quotes followed); (text, True) if it runs off the end of the text."""
        s, n = self.s, len(self.s)
        start = self.i
        while self.i < n:
            c = s[self.i]
            if c in " \t\n;&|()<>":
                break
            if c == "\\":
                if self.i + 1 >= n:
                    return s[start:self.i], True
                self.i += 2
            elif c == "'":
                end = s.find("'", self.i + 1)
                if end < 0:
                    return "", True
                self.i = end + 1
            elif c == "$" and s.startswith("$'", self.i) and self.bash:
                if not self._ansi_c():
                    return "", True
            elif c == '"':
                if not self._double():
                    return "", True
            elif c == "`":
                if not self._backtick():
                    return "", True
            elif c == "$" and s.startswith("$(", self.i):
                if not self._paren(self.i + 2):
                    return "", True
            elif c == "$" and s.startswith("${", self.i):
                end = s.find("}", self.i + 2)
                if end < 0:
                    return "", True
                self.i = end + 1
            else:
                self.i += 1
        return s[start:self.i], False

    def _ansi_c(self) -> bool:
        s, j = self.s, self.i + 2
        while j < len(s):
            if s[j] == "\\":
                j += 2
            elif s[j] == "'":
                self.i = j + 1
                return True
            else:
                j += 1
        return False

    def _double(self) -> bool:
        s, j = self.s, self.i + 1
        while j < len(s):
            c = s[j]
            if c == "\\":
                j += 2
            elif c == '"':
                self.i = j + 1
                return True
            elif c == "`":
                self.i = j
                if not self._backtick():
                    return False
                j = self.i
            elif s.startswith("$(", j):
                if not self._paren(j + 2):
                    return False
                j = self.i
            else:
                j += 1
        return False

    def _backtick(self) -> bool:
        s, j = self.s, self.i + 1
        while j < len(s):
            if s[j] == "\\":
                j += 2
            elif s[j] == "`":
                self.i = j + 1
                return True
            else:
                j += 1
        return False

    def _paren(self, j: int) -> bool:
        """``$(...)``: balanced parentheses, quotes followed, from ``j`` (after ``$(``)."""
        depth = 1
        s = self.s
        while j < len(s):
            c = s[j]
            if c == "\\":
                j += 2
                continue
            if c == "'":
                end = s.find("'", j + 1)
                if end < 0:
                    return False
                j = end + 1
                continue
            if c == '"':
                self.i = j
                if not self._double():
                    return False
                j = self.i
                continue
            if c == "(":
                depth += 1
            elif c == ")":
                depth -= 1
                if depth == 0:
                    self.i = j + 1
                    return True
            j += 1
        return False

    def _bodies(self) -> bool:
        """Consume here-document bodies after a newline; False if one runs off the end."""
        s = self.s
        while self.heredocs:
            word, strip = self.heredocs[0]
            while True:
                end = s.find("\n", self.i)
                line = s[self.i:] if end < 0 else s[self.i:end]
                if (line.lstrip("\t") if strip else line) == word:
                    self.i = len(s) if end < 0 else end + 1
                    self.heredocs.pop(0)
                    break
                if end < 0:
                    return False
                self.i = end + 1
        return True

    def _reserved(self, word: str) -> None:
        if self.fn_name:                         # `function NAME`: a body follows
            self.fn_name = False
            self.command_pos = True
            return
        if self.command_pos and word == "function":
            self.fn_name = True
            return
        if not self.command_pos:
            if word == "in" and self.blocks and self.blocks[-1] == "esac":
                self.command_pos = False
            return
        if word in _OPEN:
            self.blocks.append(_OPEN[word])
        elif word in _CLOSE:
            if self.blocks and self.blocks[-1] == word:
                self.blocks.pop()
            elif word in self.blocks:
                while self.blocks and self.blocks.pop() != word:
                    pass
        self.command_pos = word in _LEADERS or word in _CLOSE
