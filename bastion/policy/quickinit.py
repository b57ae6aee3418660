"""A faster ``__init__`` for the frozen, slotted dataclasses made for every line
(:class:`bastion.policy.words.Word`, :class:`bastion.policy.arguments.Arg`,
:class:`bastion.policy.commands.Command`).

The ``__init__`` :func:`dataclasses.dataclass` writes for a frozen class sets each
field with ``object.__setattr__(self, name, value)``, which looks the name up again
for every field of every instance; :func:`quick_init` writes the same ``__init__``
(the same parameters, defaults and order) that sets each field through its slot's
descriptor instead.  Instances stay frozen, equal, hashable and printable as before.
Pure: no IO.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")


def quick_init(cls: type[T]) -> type[T]:
    """Replace the ``__init__`` of ``cls`` (a frozen dataclass with ``slots=True``, no
    ``__post_init__``, default factories or keyword-only fields)."""
    params = dataclasses.fields(cls)   # type: ignore[arg-type]
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__} has __post_init__")
    names: dict[str, Any] = {}
    signature: list[str] = []
    body: list[str] = []
    for k, f in enumerate(params):
        if not f.init or f.kw_only or f.default_factory is not dataclasses.MISSING:
            raise TypeError(f"{cls.__name__}.{f.name}: not a plain field")
        names[f"_set{k}"] = getattr(cls, f.name).__set__
        if f.default is dataclasses.MISSING:
            signature.append(f.name)
        else:
            names[f"_default{k}"] = f.default
            signature.append(f"{f.name}=_default{k}")
        body.append(f"    _set{k}(self, {f.name})")
    source = f"def __init__(self, {', '.join(signature)}):\n" + "\n".join(body or ["    pass"])
    exec(source, names)   # generated from the field names only, as dataclasses does
    init = names["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__doc__ = cls.__init__.__doc__
    cls.__init__ = init   # type: ignore[method-assign]
    return cls
