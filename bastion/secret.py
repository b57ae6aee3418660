"""A wrapper for secrets (tokens, passphrases, private keys).

``Secret`` keeps its value out of ``repr``/``str``/logging/f-strings: they all
print ``<secret>``.  Call :meth:`Secret.reveal` at the one place that needs the
value.  It is not a security boundary against code in this process; it is a
guard against accidental logging.
"""

from __future__ import annotations

import hmac
import re
from typing import Generic, TypeVar

# Names (environment variables, settings) that usually hold a secret: their values are
# redacted in recordings and kept from processes that do not need them.
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASS|KEY|CRED|AUTH", re.IGNORECASE)

T = TypeVar("T")


class Secret(Generic[T]):
    __slots__ = ("_value",)

    def __init__(self, value: T) -> None:
        self._value = value

    def reveal(self) -> T:
        return self._value

    def __repr__(self) -> str:
        return "<secret>"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return "<secret>"

    def __eq__(self, other: object) -> bool:
        """Equal values, compared in constant time for text and bytes."""
        if not isinstance(other, Secret):
            return NotImplemented
        a, b = self._value, other._value
        if isinstance(a, str) and isinstance(b, str):
            a, b = a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass")
        if isinstance(a, bytes) and isinstance(b, bytes):
            return hmac.compare_digest(a, b)
        return bool(a == b)

    # Not hashable: a hash agreeing with __eq__ would be the value's own hash, which says
    # something about the secret; none is needed as a key.
    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self):  # never pickled by accident
        raise TypeError("Secret values cannot be pickled")
