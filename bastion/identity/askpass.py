"""``bastion-askpass``: the SSH_ASKPASS program that answers the bastion's token prompts.

OpenSSH runs ``$SSH_ASKPASS PROMPT`` once per keyboard-interactive prompt and
reads the answer from its stdout (at most 1023 bytes).  For the bastion's
prompts (``OIDC token: ``, ``OIDC token (continued at byte N): ``, possibly
shown as ``(user@host) OIDC token: ``) this prints the right slice of the token
(see :mod:`bastion.identity.chunking`); for any other prompt (a host key
question, a key passphrase, a password) it prints nothing and exits 1.

The token comes from, in order: ``BASTION_TOKEN``, ``BASTION_TOKEN_FILE``, or
an msal acquisition configured by ``BASTION_CLIENT_ID``, ``BASTION_AUTHORITY``,
``BASTION_CLIENT_SECRET_FILE`` / ``BASTION_CERTIFICATE`` /
``BASTION_MANAGED_IDENTITY``, ``BASTION_SCOPE``, ``BASTION_CA_BUNDLE``,
``BASTION_TOKEN_CACHE`` (see :mod:`bastion.identity.acquire`; its cache makes
every round see the same token).

Usage with OpenSSH (no tty needed)::

    SSH_ASKPASS=$(command -v bastion-askpass) SSH_ASKPASS_REQUIRE=force \\
    BASTION_TOKEN_FILE=token ssh -J agent@bastion:2222 deploy@web1 uptime

This module is spawned once per round, so it imports only the stdlib and the
pure chunking module unless it has to acquire a token.  Exit codes: 0 answered,
1 not our prompt, 2 no token available.
"""

from __future__ import annotations

import os
import sys

from bastion.identity.chunking import CHUNK, offset_from_prompt

EXIT_NOT_OURS = 1
EXIT_NO_TOKEN = 2


class NoToken(Exception):
    pass


def token_from_env(env=os.environ) -> str:
    """The token per the module doc.  Raises NoToken with a message saying what to set."""
    token = env.get("BASTION_TOKEN", "").strip()
    if token:
        return token
    path = env.get("BASTION_TOKEN_FILE")
    if path:
        try:
            with open(os.path.expanduser(path), encoding="ascii") as fh:
                token = fh.read().strip()
        except (OSError, ValueError) as exc:
            raise NoToken(f"cannot read BASTION_TOKEN_FILE {path!r}: "
                          f"{getattr(exc, 'strerror', None) or type(exc).__name__}") from None
        if not token:
            raise NoToken(f"BASTION_TOKEN_FILE {path!r} is empty")
        return token
    from bastion.errors import BastionError
    from bastion.identity.acquire import AcquireOptions, acquire_token
    opts = AcquireOptions.from_env(env)
    if not opts.configured:
        raise NoToken("no token: set BASTION_TOKEN, BASTION_TOKEN_FILE, or BASTION_CLIENT_ID + "
                      "BASTION_AUTHORITY + BASTION_CLIENT_SECRET_FILE (or BASTION_CERTIFICATE, "
                      "or BASTION_MANAGED_IDENTITY=1)")
    try:
        return acquire_token(opts).reveal()
    except BastionError as exc:
        raise NoToken(str(exc)) from None


def answer(prompt: str, env=os.environ) -> tuple[int, str]:
    """(exit code, text for stdout) for one askpass call."""
    offset = offset_from_prompt(prompt)
    if offset is None:
        return EXIT_NOT_OURS, ""
    token = token_from_env(env)
    return 0, token[offset:offset + CHUNK]


def run(argv: list[str], env=os.environ) -> int:
    prompt = argv[0] if argv else ""
    try:
        code, text = answer(prompt, env)
    except NoToken as exc:
        sys.stderr.write(f"bastion-askpass: {exc}\n")
        return EXIT_NO_TOKEN
    if code == EXIT_NOT_OURS:
        sys.stderr.write("bastion-askpass: not a bastion OIDC token prompt; not answering\n")
        return code
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
    return 0


def main() -> None:
    sys.exit(run(sys.argv[1:]))


if __name__ == "__main__":  # pragma: no cover
    main()
