"""The token chunking protocol: prompts, client slices, the server-side assembler."""

from __future__ import annotations

import random
import re
import string

import pytest

from bastion.errors import TokenRejected
from bastion.identity.chunking import (
    CHUNK, FIRST_PROMPT, MAX_ROUNDS, MAX_TOKEN_BYTES, TokenAssembler, answer_for_prompt,
    offset_from_prompt, prompt_for_offset,
)


def make_token(n: int) -> str:
    alphabet = string.ascii_letters + string.digits + "-_."
    return "".join(alphabet[i % len(alphabet)] for i in range(n))


def run_protocol(token: str) -> tuple[TokenAssembler, list[str]]:
    """A client answering with answer_for_prompt against a TokenAssembler."""
    asm = TokenAssembler()
    prompts = []
    prompt = asm.prompt
    while prompt is not None:
        prompts.append(prompt)
        prompt = asm.feed(answer_for_prompt(token, prompt))
    return asm, prompts


def test_constants_fit_openssh():
    assert CHUNK + 1 <= 1023                  # answer plus newline fits readpass's buffer
    assert FIRST_PROMPT == "OIDC token: "
    assert MAX_ROUNDS * CHUNK >= MAX_TOKEN_BYTES > (MAX_ROUNDS - 1) * CHUNK


@pytest.mark.parametrize("offset, prompt", [
    (0, "OIDC token: "),
    (1000, "OIDC token (continued at byte 1000): "),
    (16000, "OIDC token (continued at byte 16000): "),
])
def test_prompt_round_trip(offset, prompt):
    assert prompt_for_offset(offset) == prompt
    assert offset_from_prompt(prompt) == offset


@pytest.mark.parametrize("bad", [-1000, 1, 999, 1500])
def test_prompt_for_bad_offset(bad):
    with pytest.raises(ValueError):
        prompt_for_offset(bad)


@pytest.mark.parametrize("prompt, offset", [
    ("OIDC token: ", 0),
    ("OIDC token:", 0),
    ("OIDC token: \n", 0),
    ("(agent@127.0.0.1) OIDC token: ", 0),           # OpenSSH >= 8.4 decorates kbdint prompts
    ("(agent@bastion.example) OIDC token (continued at byte 2000): ", 2000),
    ("OIDC token (continued at byte 1500): ", None),  # not a chunk boundary
    ("OIDC token (continued at byte 0): ", None),
    ("OIDC token (continued at byte 17000): ", None),  # past the cap
    ("oidc token: ", None),
    ("Password: ", None),
    ("agent@host's password: ", None),
    ("Enter passphrase for key '/home/a/.ssh/id_ed25519': ", None),
    ("Are you sure you want to continue connecting (yes/no/[fingerprint])? ", None),
    ("Please type 'yes', 'no' or the fingerprint: ", None),
    ("x OIDC token: ", None),
    ("(a) (b) OIDC token: ", None),
    ("OIDC token: please", None),
    ("", None),
])
def test_offset_from_prompt(prompt, offset):
    assert offset_from_prompt(prompt) == offset


def test_answer_for_foreign_prompt_refuses():
    with pytest.raises(ValueError):
        answer_for_prompt("tok", "Enter passphrase for key 'k': ")


@pytest.mark.parametrize("length, rounds", [
    (0, 1), (999, 1), (1000, 2), (1001, 2), (2500, 3), (3000, 4), (16000, 17), (16384, 17),
])
def test_chunked_round_trip(length, rounds):
    token = make_token(length)
    asm, prompts = run_protocol(token)
    assert asm.done and asm.token.reveal() == token
    assert asm.rounds == rounds == len(prompts)
    assert prompts == [prompt_for_offset(i * CHUNK) for i in range(rounds)]


@pytest.mark.parametrize("length", [16385, 17000, 20000])
def test_chunked_too_large(length):
    token = make_token(length)
    with pytest.raises(TokenRejected) as info:
        run_protocol(token)
    assert info.value.reason == "token too large"


@pytest.mark.parametrize("length, done", [
    (0, True), (999, True), (1000, False), (1001, True), (2500, True), (16384, True),
])
def test_whole_token_in_one_answer(length, done):
    """Clients without OpenSSH's cap may answer round 1 with the whole token."""
    token = make_token(length)
    asm = TokenAssembler()
    nxt = asm.feed(token)
    assert asm.done is done
    if done:
        assert nxt is None and asm.token.reveal() == token
    else:                                      # exactly CHUNK: the server asks for more
        assert nxt == prompt_for_offset(1000)
        assert asm.feed("") is None and asm.token.reveal() == token


def test_whole_token_too_large():
    asm = TokenAssembler()
    with pytest.raises(TokenRejected) as info:
        asm.feed(make_token(MAX_TOKEN_BYTES + 1))
    assert info.value.reason == "token too large"
    assert asm.prompt is None
    with pytest.raises(TokenRejected):          # stays failed
        asm.feed("x")


def test_round_cap_with_small_chunks():
    asm = TokenAssembler(chunk=10, max_bytes=10_000, max_rounds=3)
    assert asm.feed("a" * 10) is not None
    assert asm.feed("b" * 10) is not None
    with pytest.raises(TokenRejected) as info:
        asm.feed("c" * 10)                      # a 4th round would be needed
    assert info.value.reason == "token too large"


def test_non_ascii_answer_is_malformed():
    asm = TokenAssembler()
    with pytest.raises(TokenRejected) as info:
        asm.feed("é" * 10)
    assert info.value.reason == "malformed"


def test_token_not_ready_and_feed_after_done():
    asm = TokenAssembler()
    with pytest.raises(ValueError):
        _ = asm.token
    asm.feed("abc")
    with pytest.raises(ValueError):
        asm.feed("more")


def test_repr_hides_token():
    token = make_token(1500)
    asm, _ = run_protocol(token)
    assert token[:20] not in repr(asm) and "rounds=2" in repr(asm)


# The prompt grammar, as a regular expression: the oracle for the hand-written parser
# (bastion-askpass does not import `re`, to start faster).
_ORACLE = re.compile(r"^(?:\([^()\r\n]*\) )?OIDC token(?: \(continued at byte ([0-9]{1,6})\))?: ?$")


def _oracle(prompt: str):
    m = _ORACLE.match(prompt.rstrip("\r\n"))
    if not m:
        return None
    if m.group(1) is None:
        return 0
    offset = int(m.group(1))
    return None if offset == 0 or offset % CHUNK or offset > MAX_TOKEN_BYTES else offset


def test_offset_from_prompt_agrees_with_the_grammar():
    rng = random.Random(1234)
    pieces = ["(", ")", " ", "(a@b) ", "(a)b) ", "((x)) ", "\r", "\n", "\r\n", "OIDC token", "OIDC",
              " token", ":", ": ", " (continued at byte ", "1000", "2000", "0", "016000", "٣",
              "1500", "1234567", ")", "): ", ") :", "x", "é", "agent@host"]
    prompts = [prompt_for_offset(o) for o in range(0, MAX_TOKEN_BYTES + 1, CHUNK)]
    prompts += ["(u@h) " + p for p in prompts] + [p + "\n" for p in prompts]
    for _ in range(20000):
        prompts.append("".join(rng.choice(pieces) for _ in range(rng.randint(0, 7))))
    for p in prompts:
        assert offset_from_prompt(p) == _oracle(p), repr(p)
    assert sum(_oracle(p) is not None for p in prompts) > 40      # the table reaches both sides


def test_the_assembled_token_is_a_secret():
    asm = TokenAssembler()
    asm.feed("abc.def.ghi")
    assert "abc" not in repr(asm.token) and "abc" not in f"{asm.token}"
    assert asm.token == asm.token                               # compared by value
    with pytest.raises(TypeError):
        hash(asm.token)                                         # never a dict key
