"""The token chunking protocol over keyboard-interactive, both sides, pure.

The real OpenSSH client cuts every keyboard-interactive (or askpass) answer at
1023 bytes (``readpass.c``: ``char buf[1024]``), and Entra access tokens are
1.5-3 KB.  So the bastion takes the token over several prompt rounds:

* round 1: the prompt is exactly ``"OIDC token: "``; the client answers with
  ``token[0:1000]``;
* an answer of exactly :data:`CHUNK` bytes opens another round whose prompt names
  the offset: ``"OIDC token (continued at byte 1000): "``, then 2000, ...;
* an answer shorter than :data:`CHUNK` (possibly empty) ends the token.  A client
  without the 1023-byte cap (asyncssh, paramiko) may answer round 1 with the
  whole token: any length other than :data:`CHUNK` ends it;
* the whole token is capped at :data:`MAX_TOKEN_BYTES` (16 KB) and
  :data:`MAX_ROUNDS` rounds (16 full chunks and a last one).

The client side is :func:`answer_for_prompt` (used by ``bastion-askpass``); the
server side is :class:`TokenAssembler`.  No IO, no clock, no asyncio here, and
nothing that would slow down ``bastion-askpass`` (which is spawned once per
round).  Validating the assembled token is :mod:`bastion.identity.oidc`'s job.
"""

from __future__ import annotations

# Neither ``re`` nor ``typing`` is imported: together they are half of the ~15 ms
# bastion-askpass spends importing, three times per login.
TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from bastion.errors import TokenRejected
    from bastion.secret import Secret


def _rejected(reason: str) -> "TokenRejected":
    # imported here, not at the top: bastion-askpass (spawned once per prompt round)
    # imports this module and must start fast; only the server side ever raises
    from bastion.errors import TokenRejected
    return TokenRejected(reason)

CHUNK = 1000                   # bytes per round; must stay below OpenSSH's 1023
MAX_TOKEN_BYTES = 16384        # the whole token
MAX_ROUNDS = 17                # ceil(16384 / 1000) rounds
FIRST_PROMPT = "OIDC token: "
_CONTINUED = "OIDC token (continued at byte {}): "

# OpenSSH >= 8.4 shows keyboard-interactive prompts as "(user@host) PROMPT"; the
# askpass program receives that decorated text as argv[1].  The prefix is
# optional here and must not contain parentheses.
_STEM = "OIDC token"
_MORE = " (continued at byte "
_DIGITS = frozenset("0123456789")


def prompt_for_offset(offset: int) -> str:
    """The prompt the server sends to ask for the token from byte ``offset`` on."""
    if offset < 0 or offset % CHUNK:
        raise ValueError(f"offset must be a non-negative multiple of {CHUNK}, got {offset}")
    return FIRST_PROMPT if offset == 0 else _CONTINUED.format(offset)


def offset_from_prompt(prompt: str) -> int | None:
    """The byte offset a prompt asks for, or None if it is not one of ours.

    Accepts the exact prompts of :func:`prompt_for_offset`, optionally prefixed
    by OpenSSH's ``"(user@host) "``, with or without the trailing space.  Offsets
    that are not multiples of :data:`CHUNK` or lie beyond :data:`MAX_TOKEN_BYTES`
    are not ours either.
    """
    text = prompt.rstrip("\r\n")
    if text.startswith("("):                       # "(user@host) " from OpenSSH
        end = text.find(") ")
        if end < 0 or any(c in "(\r\n)" for c in text[1:end]):
            return None
        text = text[end + 2:]
    if not text.startswith(_STEM):
        return None
    text = text[len(_STEM):]
    if text in (":", ": "):
        return 0
    if not text.startswith(_MORE):
        return None
    digits, sep, tail = text[len(_MORE):].partition(")")
    if not sep or tail not in (":", ": ") or not 1 <= len(digits) <= 6 \
            or not _DIGITS.issuperset(digits):
        return None
    offset = int(digits)
    if offset == 0 or offset % CHUNK or offset > MAX_TOKEN_BYTES:
        return None
    return offset


def answer_for_prompt(token: str, prompt: str) -> str:
    """The slice of ``token`` that answers ``prompt`` (client side).

    Raises ValueError if the prompt is not one of ours: a caller must then refuse
    to answer rather than send the token to a prompt it does not understand.
    """
    offset = offset_from_prompt(prompt)
    if offset is None:
        raise ValueError("not an OIDC token prompt")
    return token[offset:offset + CHUNK]


class TokenAssembler:
    """Server side: accumulate answers into the token, one round at a time.

    ::

        asm = TokenAssembler()
        prompt = asm.prompt                 # "OIDC token: "
        while prompt is not None:
            prompt = asm.feed(ask(prompt))  # raises TokenRejected("token too large")
        token = asm.token

    The repr never shows the token.
    """

    def __init__(self, *, chunk: int = CHUNK, max_bytes: int = MAX_TOKEN_BYTES,
                 max_rounds: int = MAX_ROUNDS) -> None:
        self._chunk = chunk
        self._max_bytes = max_bytes
        self._max_rounds = max_rounds
        self._parts: list[str] = []
        self._size = 0
        self._done = False
        self._failed: str | None = None
        self._rounds = 0

    @property
    def prompt(self) -> str | None:
        """The prompt of the round to ask now, or None once the token is complete."""
        if self._done or self._failed:
            return None
        return FIRST_PROMPT if self._size == 0 else _CONTINUED.format(self._size)

    @property
    def rounds(self) -> int:
        """Answers taken so far."""
        return self._rounds

    @property
    def done(self) -> bool:
        return self._done

    def feed(self, answer: str) -> str | None:
        """Take one answer; return the next prompt, or None when the token is complete.

        Raises ``TokenRejected("token too large")`` past the byte or round cap and
        ``TokenRejected("malformed")`` for an answer that is not ASCII (a JWT is).
        """
        if self._failed:
            raise _rejected(self._failed)
        if self._done:
            raise ValueError("the token is already complete")
        self._rounds += 1
        if not answer.isascii():
            raise self._fail("malformed")
        size = len(answer)
        self._parts.append(answer)
        self._size += size
        if self._size > self._max_bytes or self._rounds > self._max_rounds:
            raise self._fail("token too large")
        if size != self._chunk:
            self._done = True
            return None
        if self._rounds >= self._max_rounds:
            # Another full chunk would exceed the round cap; no legal token needs it.
            raise self._fail("token too large")
        return self.prompt

    @property
    def token(self) -> "Secret[str]":
        """The assembled token (kept from logs: reveal it only to validate); once :attr:`done`."""
        from bastion.secret import Secret     # (server side only: askpass starts fast)
        if not self._done:
            raise ValueError("the token is not complete yet")
        return Secret("".join(self._parts))

    def _fail(self, reason: str) -> TokenRejected:
        self._parts.clear()          # drop what we hold of a token we will not use
        self._failed = reason
        return _rejected(reason)

    def __repr__(self) -> str:
        state = self._failed or ("done" if self._done else "pending")
        return f"<TokenAssembler rounds={self.rounds} bytes={self._size} {state}>"
