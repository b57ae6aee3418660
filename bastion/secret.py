"""A wrapper for secrets (tokens, passphrases, private keys).

``Secret`` keeps its value out of ``repr``/``str``/logging/f-strings: they all
print ``<secret>``.  Call :meth:`Secret.reveal` at the one place that needs the
value.  It is not a security boundary against code in this process; it is a
guard against accidental logging.
"""

from __future__ import annotations

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
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("secret", id(self)))

    def __reduce__(self):  # never pickled by accident
        raise TypeError("Secret values cannot be pickled")
