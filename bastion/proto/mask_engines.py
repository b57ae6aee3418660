"""Trigger engines for :mod:`bastion.proto.masker`: where could a secret be?  Pure: no IO.

All detector triggers are compiled once into one pattern set and searched in one
pass.  Three engines, fastest first (see docs/MASKING.md for the measurements):

``hyperscan``  Intel's multi-pattern matcher (pip ``hyperscan``, x86-64 wheels):
               SIMD literal search, one scan for every trigger.
``re2``        Google RE2 (pip ``google-re2``): one DFA for all triggers.
``re``         Python's own ``re``, each trigger searched separately: always there,
               correct, slow (single-digit MB/s).

Each engine yields the same hits as far as the masker is concerned (the tests
check that the masked output is identical).  Custom regexes an engine refuses
(look-arounds, back-references) are searched with Python ``re`` alongside.

Not covered: deciding whether a hit is a secret (the precise patterns in
:mod:`bastion.proto.detectors`, run by the masker).
"""

from __future__ import annotations

import bisect
import functools
import re
from typing import Sequence

from bastion.proto.detectors import Detector, pattern_width

try:  # optional engines
    import hyperscan as _hs
except ImportError:  # pragma: no cover - exercised where hyperscan is absent
    _hs = None
try:
    import re2 as _re2
except ImportError:  # pragma: no cover - exercised where google-re2 is absent
    _re2 = None

__all__ = ["available_engines", "triggers_for", "new_scratch", "Triggers", "Finder", "TRIGGER_SPAN"]

TRIGGER_SPAN = 400            # longest built-in trigger match


def available_engines() -> list[str]:
    """Trigger engines usable here, fastest first: hyperscan, re2 (if installed), re (always)."""
    return (["hyperscan"] if _hs is not None else []) + (["re2"] if _re2 is not None else []) + ["re"]


class Triggers:
    """All triggers compiled once: Hyperscan, RE2 or Python ``re`` (see :func:`available_engines`).

    Custom regexes the engine refuses are searched with their own Python pattern.
    """

    def __init__(self, detectors: Sequence[Detector], engine: str) -> None:
        self.engine = engine
        self.single = []   # per detector: a Python pattern for its trigger (the fallback check)
        self.lower = []    # ... and whether it applies to the lower-cased view
        parts: list[tuple[int, bytes, bool]] = []
        # searched one by one with Python re: (detector, pattern, on lower-cased view)
        self.extra: list[tuple[int, "re.Pattern[bytes]", bool]] = []
        for i, d in enumerate(detectors):
            custom = d.trigger is None
            py = engine == "re" and d.py_trigger is not None
            self.single.append(d.pattern if custom else re.compile(d.py_trigger if py else d.trigger))
            self.lower.append(py and d.py_lower)
            if engine == "re" or (custom and not _engine_accepts(engine, d.pattern.pattern, custom)):
                self.extra.append((i, self.single[-1], self.lower[-1]))
            else:
                parts.append((i, d.pattern.pattern if custom else d.trigger, custom))
        self.any_lower = any(self.lower)
        self.owners: list[tuple[int, int]] = []   # (outer group, detector) for re2
        self.hs_db = self.combined = None
        # Hyperscan reports where a trigger ends; where it starts comes from the trigger's width
        # when fixed, else from the Python trigger searched in the span before that end.
        # (Start-of-match reporting, HS_FLAG_SOM_LEFTMOST, crashes hyperscan 5.4 on some of
        # these patterns, and gives only the leftmost start per end: not used.)
        self.width: list[int | None] = []
        self.span: list[int] = []
        for d in detectors:
            custom = d.trigger is None
            source = d.pattern.pattern if custom else d.trigger
            flags = d.pattern.flags if custom else 0
            lo, hi = pattern_width(source, flags, 1 << 16 if custom else TRIGGER_SPAN)
            self.width.append(lo if lo == hi else None)
            self.span.append(hi)
        self.max_span = max(self.span, default=0)
        # what resolves a variable-width end: the trigger, or its lower-case form on lowered bytes
        self.window = [(re.compile(d.py_trigger), True) if d.py_lower and d.py_trigger
                       else (self.single[i], False) for i, d in enumerate(detectors)]
        if parts and engine == "hyperscan":
            self.hs_db = _hs.Database(mode=_hs.HS_MODE_BLOCK)
            self.hs_db.compile(expressions=[src for _, src, _ in parts], ids=[i for i, _, _ in parts],
                               elements=len(parts), flags=[_hs_flags(c) for _, _, c in parts])
        elif parts:
            group, sources = 1, []
            for i, source, custom in parts:
                source = b"(?m:" + source + b")" if custom else source
                self.owners.append((group, i))
                group += 1 + _compile(source, engine).groups
                sources.append(b"(" + source + b")")
            self.combined = _compile(b"|".join(sources), engine)

    def finder(self, view: bytes, scratch) -> "Finder":
        return Finder(self, view, scratch)


def _re2_options():
    opts = _re2.Options()
    opts.encoding = _re2.Options.Encoding.LATIN1     # bytes are bytes, not UTF-8
    opts.log_errors = False
    return opts


def _hs_flags(custom: bool) -> int:
    return _hs.HS_FLAG_MULTILINE if custom else 0


def _compile(source: bytes, engine: str):
    if engine == "re2":
        return _re2.compile(source, _re2_options())
    return re.compile(source)


def _engine_accepts(engine: str, source: bytes, custom: bool) -> bool:
    try:
        if engine == "hyperscan":
            _hs.Database(mode=_hs.HS_MODE_BLOCK).compile(expressions=[source], ids=[0], elements=1,
                                                         flags=[_hs_flags(custom)])
        else:
            _compile(b"(?m:" + source + b")", engine)
        return True
    except Exception:   # the engine's own error types; the Python pattern is used instead
        return False


class Finder:
    """Next trigger hit ``(start, end, detector)`` at or after a position, over one view.

    With Hyperscan, the trigger ends are found in one scan and turned into hits lazily,
    block by block, so a scan that stops early (at a key block) pays only for what it used.
    """

    __slots__ = ("t", "view", "low", "cache", "hs_hits", "hs_starts", "ends", "k", "limit", "shared")

    _BLOCK = 16384

    def __init__(self, triggers: Triggers, view: bytes, scratch) -> None:
        self.t, self.view = triggers, view
        self.low = view.lower() if triggers.any_lower else view
        self.cache: list = [None] * (1 + len(triggers.extra))
        self.hs_hits = self.hs_starts = None
        if triggers.hs_db is not None:
            ends: list = []
            triggers.hs_db.scan(view, match_event_handler=lambda i, s, e, f, c: ends.append((e, i)),
                                scratch=scratch)
            ends.sort()
            self.ends, self.k, self.limit = ends, 0, -1
            self.hs_hits, self.hs_starts, self.shared = [], [], {}

    def _resolve_until(self, limit: int) -> None:
        """Turn every trigger end <= ``limit`` into hits (start, end, detector)."""
        t, ends, view = self.t, self.ends, self.view
        hits = set(self.hs_hits)
        windows: dict[int, list[list[int]]] = {}      # variable-width triggers: merged search windows
        k = self.k
        while k < len(ends) and ends[k][0] <= limit:
            e, i = ends[k]
            k += 1
            w = t.width[i]
            if w is not None:
                hits.add((e - w, e, i))
                continue
            spans = windows.setdefault(i, [])
            lo = max(0, e - t.span[i])
            if spans and lo <= spans[-1][1]:
                spans[-1][1] = e
            else:
                spans.append([lo, e])
        for i, spans in windows.items():
            pattern, lower = t.window[i]
            for p, e in spans:
                if lower:                              # (?i) is slow in Python re: lower the window
                    seg, q = view[p:e].lower(), 0
                    while (m := pattern.search(seg, q)) is not None:
                        hits.add((p + m.start(), p + m.end(), i))
                        q = m.start() + 1
                    continue
                while (m := pattern.search(view, p, e)) is not None:
                    hits.add((m.start(), m.end(), i))
                    p = m.start() + 1
        self.k, self.limit = k, limit
        self.hs_hits = sorted(hits)
        self.hs_starts = [h[0] for h in self.hs_hits]
        shared: dict[int, set[int]] = {}           # starts where several triggers match
        for a, b in zip(self.hs_hits, self.hs_hits[1:], strict=False):
            if a[0] == b[0] and a[2] != b[2]:
                shared.setdefault(a[0], set()).update((a[2], b[2]))
        self.shared = shared

    def _hs_next(self, p: int):
        reach = self.t.max_span
        while True:
            j = bisect.bisect_left(self.hs_starts, p)
            hit = self.hs_hits[j] if j < len(self.hs_hits) else None
            if self.k >= len(self.ends) or (hit is not None and hit[0] < self.limit - reach):
                return hit if hit is not None else False
            self._resolve_until(max(self.limit, p) + reach + self._BLOCK)

    def next(self, p: int):
        best = None
        for k in range(len(self.cache)):
            c = self.cache[k]
            if c is False:
                continue
            if c is None or c[0] < p:
                c = self.cache[k] = self._search(k, p)
                if c is False:
                    continue
            if best is None or c[0] < best[0]:
                best = c
        return best

    def others_at(self, hs: int, di: int) -> list[int]:
        """Detectors other than ``di`` whose trigger also matches at ``hs``, in precedence order."""
        t = self.t
        if self.hs_hits is not None:
            if self.k < len(self.ends) and self.limit < hs + t.max_span:
                self._resolve_until(hs + t.max_span)
            found = self.shared.get(hs, set())
            if t.extra:
                found = found | {i for i, _, _ in t.extra if t.single[i].match(self.view, hs)}
            return sorted(found - {di}) if found else []
        return [j for j in range(len(t.single))
                if j != di and t.single[j].match(self.low if t.lower[j] else self.view, hs)]

    def _search(self, k: int, p: int):
        if k == 0:
            if self.hs_hits is not None:
                return self._hs_next(p)
            if self.t.combined is None:
                return False
            m = self.t.combined.search(self.view, p)
            if m is None:
                return False
            for group, det in self.t.owners:
                if m.start(group) >= 0:
                    return (m.start(), m.end(), det)
            return False  # pragma: no cover - one alternative always matched
        det, pattern, lower = self.t.extra[k - 1]
        m = pattern.search(self.low if lower else self.view, p)
        return False if m is None else (m.start(), m.end(), det)


@functools.lru_cache(maxsize=32)
def triggers_for(detectors: tuple[Detector, ...], engine: str) -> Triggers:
    return Triggers(detectors, engine)


def new_scratch(triggers: Triggers):
    """Per-masker Hyperscan scratch space (a compiled database is shared; scratch is not)."""
    return _hs.Scratch(triggers.hs_db) if triggers.hs_db is not None else None
