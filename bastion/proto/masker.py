"""Streaming secret masker: bytes in, masked bytes out.  Pure and sans-IO (like h11).

    m = Masker(BUILTIN + detectors_from_config(config.masks))
    out = m.feed(chunk)       # bytes safe to emit now (may be b"")
    out = m.flush()           # on EOF, or when the stream has been quiet for ~50 ms
    m2.restore(m.snapshot())  # m2 (same detectors) goes on exactly as m would

How it works (details and numbers in docs/MASKING.md):

* **Triggers.**  Every detector has a short trigger pattern; all triggers are
  searched in one pass by the fastest engine installed (Hyperscan, RE2, else
  Python ``re``: :mod:`bastion.proto.mask_engines`).  Only where a trigger is
  do the precise Python ``re`` patterns run, so ordinary output costs one scan.
* **Hold-back.**  A secret split across chunks at any byte offset is still
  masked: the masker holds back the bytes that could still be the start of a
  secret -- normally the last ~460 bytes (a trigger not yet complete), and from
  a pending candidate until it is decided.  ``pending`` never exceeds
  ``max_holdback`` visible bytes (terminal escape sequences are not counted).
* **Unbounded secrets** (private key blocks, JWTs, long tokens and values) do
  not need to fit in the hold-back: once recognised, the mask is emitted and
  the rest of the secret is dropped as it arrives (until the ``-----END``
  line, or the first byte that cannot belong to the secret).
* **Terminal escapes.**  Detection runs on a view with escape sequences (CSI,
  OSC, DCS, two-byte ESC) removed, so ``DB_\\e[31mPASSWORD\\e[0m=x`` (grep
  --color) is masked; escape sequences inside a masked span are kept after
  the mask so the terminal state is unchanged.  UTF-8 passes through as bytes.

Output is the same whatever the chunking (whole, one byte at a time, any split),
as long as :meth:`flush` is only called at the end.  A quiet-stream
:meth:`flush` decides early: a secret whose two halves arrive on each side of
it is masked only if the first half is recognisable on its own.

Not covered: what to mask (that is :mod:`bastion.proto.detectors`), timers,
where the masker is wired (recordings, index, live stream).
"""

from __future__ import annotations

import bisect
import re
from itertools import accumulate, compress
from typing import Iterable, Sequence

from bastion.proto.detectors import BUILTIN, Detector, detectors_from_config
from bastion.proto.mask_engines import (
    TRIGGER_SPAN, Finder, available_engines, new_scratch, triggers_for,
)

__all__ = ["Masker", "BUILTIN", "Detector", "detectors_from_config", "mask_bytes", "mask_text",
           "check_masks", "DEFAULT_MAX_HOLDBACK", "MIN_HOLDBACK", "QUIET_FLUSH_SECONDS",
           "available_engines"]

DEFAULT_MAX_HOLDBACK = 1024   # bytes; bounds pending output and the largest bounded match
MIN_HOLDBACK = 512
QUIET_FLUSH_SECONDS = 0.05    # recommended: flush() after this long without new data
_BACK = 40                    # a match starts at most this far before its trigger
_MARGIN = 16                  # bytes after a match that must be visible (look-aheads, validators)
_CTX = 256                    # input bytes kept before the undecided region (look-behinds)

_ESC = re.compile(rb"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]{0,512}(?:\x07|\x1b\\)"
                  rb"|[PX^_][^\x1b]{0,512}\x1b\\|[ -/]{0,4}[0-~])")
_ESC_SPLIT = re.compile(b"(" + _ESC.pattern + b")")     # split() keeps the escapes
_ESC_OPEN = re.compile(rb"\x1b(?:\[[0-?]*[ -/]*|\][^\x07\x1b]{0,512}\x1b?|[PX^_][^\x1b]{0,512}\x1b?"
                       rb"|[ -/]{0,4})\Z")


# ----------------------------------------------------------------------------- escape view

class _View:
    """``buf`` with terminal escape sequences removed, and the way back to raw offsets."""

    __slots__ = ("raw", "v", "limit", "seg_v", "seg_r", "_escapes", "_starts")
    _escapes: list[tuple[int, int]] | tuple[()] | None
    _starts: list[int]

    def __init__(self, raw: bytes, final: bool) -> None:
        self.raw = raw
        self.limit = len(raw)
        if b"\x1b" not in raw:
            self.v, self.seg_v, self.seg_r, self._escapes = raw, None, None, ()
            return
        if not final:
            last = raw.rfind(b"\x1b")
            if _ESC_OPEN.match(raw, last):        # a sequence still arriving: not part of the view yet
                self.limit = last
        # text, escape, text, ..., text; then where each part starts, in C loops (coloured
        # output has an escape every few bytes: a Python loop over them cost ~18 ms/MB)
        parts = _ESC_SPLIT.split(raw if self.limit == len(raw) else raw[:self.limit])
        lens = list(map(len, parts))
        starts = list(accumulate(lens, initial=0))           # raw offset of each part
        text_lens = lens[0::2]
        self.v = b"".join(parts[0::2])
        self.seg_v = list(compress(accumulate(text_lens, initial=0), text_lens))  # non-empty
        self.seg_r = list(compress(starts[0::2], text_lens))                      # text parts
        self._escapes, self._starts = None, starts        # spans made when first asked for

    @property
    def escapes(self) -> list[tuple[int, int]] | tuple[()]:
        """(start, end) of each escape sequence in the view's raw part, in order."""
        if self._escapes is None:
            starts = self._starts
            self._escapes = list(zip(starts[1::2], starts[2::2], strict=False))  # (one more start)
        return self._escapes

    def to_raw(self, v: int) -> int:
        """Raw offset of view byte ``v`` (``len(view)`` maps to the end of the view's raw part)."""
        if self.seg_v is None:
            return v
        if v >= len(self.v):
            return self.limit
        k = bisect.bisect_right(self.seg_v, v) - 1
        return self.seg_r[k] + v - self.seg_v[k]

    def to_raw_end(self, v: int) -> int:
        """Raw offset just after view byte ``v - 1`` (the end of a span)."""
        return v if self.seg_v is None or v == 0 else self.to_raw(v - 1) + 1

    def to_view(self, r: int) -> int:
        if self.seg_v is None:
            return r
        k = bisect.bisect_right(self.seg_r, r) - 1
        if k < 0:
            return 0
        seg_len = (self.seg_v[k + 1] if k + 1 < len(self.seg_v) else len(self.v)) - self.seg_v[k]
        return self.seg_v[k] + min(r - self.seg_r[k], seg_len)

    def escapes_in(self, rs: int, re_: int) -> bytes:
        """The escape sequences inside raw span [rs, re_), concatenated."""
        if not self.escapes:
            return b""
        k = bisect.bisect_left(self.escapes, (rs, rs))
        found = []
        while k < len(self.escapes) and self.escapes[k][1] <= re_:
            found.append(self.raw[self.escapes[k][0]:self.escapes[k][1]])
            k += 1
        return b"".join(found)


# ----------------------------------------------------------------------------- suppressors

class _Run:
    """Drop the rest of an unbounded secret: repeats of one unit (escape sequences are kept)."""

    def __init__(self, unit: bytes) -> None:
        self.unit = unit
        self.re = re.compile(b"(?:" + unit + b")+")

    def consume(self, buf: bytes, i: int, final: bool) -> tuple[int, bytes, bool]:
        """Drop from ``buf[i:]``: (where the secret ends or data runs out, escapes kept, ended?)."""
        kept, n = [], len(buf)
        while True:
            m = self.re.match(buf, i)
            if m:
                i = m.end()
            if i >= n or (i == n - 1 and not final):   # (the last byte may start a longer unit)
                return i, b"".join(kept), False
            if buf[i] == 0x1b:
                esc = _ESC.match(buf, i)
                if esc:
                    kept.append(esc.group())
                    i = esc.end()
                    continue
                if not final and _ESC_OPEN.match(buf, i):
                    return i, b"".join(kept), False
            return i, b"".join(kept), True


_PEM_LINE = re.compile(rb"[A-Za-z0-9+/=:,.() \t\\\-]*")     # one body line: base64 or "Name: value"
_PEM_END = re.compile(rb"-----END[ A-Z0-9]{0,40}-----")
_PEM_LONG_LINE = 128


class _PemBlock:
    """Drop a private key block up to and including its ``-----END … -----`` marker.

    Works line by line (a literal ``\n`` as in JSON counts as part of a line):
    a line that cannot be part of a PEM body (a shell prompt after a truncated
    key, say) ends the block and is emitted with the newline before it.  A
    partial line is held until it can be told apart.
    """

    def consume(self, buf: bytes, i: int, final: bool) -> tuple[int, bytes, bool]:
        kept, n = [], len(buf)
        while True:
            c = i
            while c < n and buf[c] in b"\r\n":
                c += 1
            j = _PEM_LINE.match(buf, c).end()
            end = _PEM_END.search(buf, c, j)
            if end:
                return end.end(), b"".join(kept), True
            if j >= n:                                   # the line is still arriving
                if final:
                    return n, b"".join(kept), False
                if j - c > _PEM_LONG_LINE:               # too long for a prompt: drop all but a
                    return max(i, j - 64), b"".join(kept), False   # possible END marker
                return i, b"".join(kept), False
            if buf[j] in b"\r\n":
                i = j
                continue
            if buf[j] == 0x1b:
                esc = _ESC.match(buf, j)
                if esc:                                  # a coloured key: keep the colours
                    kept.append(esc.group())
                    i = esc.end()
                    continue
                if not final and _ESC_OPEN.match(buf, j):
                    return i, b"".join(kept), False
            return i, b"".join(kept), True               # not key material: resume at its line


# ----------------------------------------------------------------------------- the masker

#: :meth:`Masker.snapshot`: (context bytes, undecided bytes, the suppressor or None); picklable
MaskerState = tuple[bytes, bytes, _Run | _PemBlock | None]


def suppressor_spec(sup: _Run | _PemBlock | None) -> bytes | None:
    """A snapshot's suppressor as plain bytes (None: none; b"": a key block; else the unit of
    the run), for stores that must not hold pickles (bastion.recording.tailjournal)."""
    if sup is None:
        return None
    return b"" if isinstance(sup, _PemBlock) else sup.unit


def suppressor_from_spec(spec: bytes | None) -> _Run | _PemBlock | None:
    """The suppressor :func:`suppressor_spec` described."""
    if spec is None:
        return None
    return _PemBlock() if spec == b"" else _Run(spec)


class _Event:
    __slots__ = ("start", "end", "s", "e", "replacement", "sup")

    def __init__(self, start, end, s, e, replacement, sup) -> None:
        self.start, self.end, self.s, self.e = start, end, s, e
        self.replacement, self.sup = replacement, sup


class Masker:
    """Masks secrets in a byte stream.  Not thread-safe; one per stream direction.

    ``detectors``: what to mask (default :data:`BUILTIN`).  ``max_holdback``:
    most visible bytes ever held back (>= :data:`MIN_HOLDBACK`); a bounded match
    (everything but the unbounded kinds above) must fit in ``max_holdback - 56``.
    ``engine``: ``"hyperscan"``, ``"re2"``, ``"re"`` or None for the fastest available.
    """

    def __init__(self, detectors: Sequence[Detector] = BUILTIN, *,
                 max_holdback: int = DEFAULT_MAX_HOLDBACK, engine: str | None = None) -> None:
        if max_holdback < MIN_HOLDBACK:
            raise ValueError(f"max_holdback must be at least {MIN_HOLDBACK} bytes")
        engine = engine or available_engines()[0]
        if engine not in available_engines():
            raise ValueError(f"engine {engine!r} is not available here (have {available_engines()})")
        self.engine = engine
        self._dets = tuple(detectors)
        self._triggers = triggers_for(self._dets, engine)
        self._scratch = new_scratch(self._triggers)
        self._backs = tuple(d.py_back if engine == "re" and d.py_back is not None else d.back
                            for d in self._dets)
        self._back = max((_BACK,) + self._backs)
        self._reach = max_holdback - self._back      # a hit at hs is decided once hs + reach <= len
        span = TRIGGER_SPAN
        for d in self._dets:
            if d.trigger is None:
                span = max(span, d.max_len if d.max_len is not None else self._reach)
        self._tail = min(self._reach, span + self._back + _MARGIN)
        self._ctx = b""
        self._held = b""
        self._sup: _Run | _PemBlock | None = None

    @property
    def pending(self) -> int:
        """Bytes received but not yet emitted (held back, or being examined)."""
        return len(self._held)

    def snapshot(self) -> MaskerState:
        """The whole state of the stream so far: (the input bytes kept before the undecided
        ones for look-behinds, the undecided bytes, the secret being dropped or None).

        A new Masker with the same detectors given it by :meth:`restore` goes on exactly as
        this one would (the recording worker hands undecided bytes to its successor so).
        """
        return self._ctx, self._held, self._sup

    def restore(self, state: MaskerState) -> None:
        """Take over a :meth:`snapshot` (of a masker with the same detectors)."""
        self._ctx, self._held, self._sup = state

    def skip(self, n: int) -> None:
        """The first ``n`` undecided bytes were emitted as they are (by the masker this one
        took over from, which decided them so with data that never reached this one)."""
        self._advance(min(n, len(self._held)))

    @property
    def suppressing(self) -> bool:
        """True while the rest of an unbounded secret (key block, long token) is being dropped."""
        return self._sup is not None

    def feed(self, data: bytes) -> bytes:
        """Take the next chunk; return the bytes that are safe to emit now."""
        if data:      # one copy (``data`` may be a view of the worker's receive buffer)
            self._held = self._held + data if self._held else bytes(data)
        return self._process(final=False)

    def flush(self) -> bytes:
        """Decide everything held as if the stream ended here and return it.

        Call it at EOF and when the stream has been quiet for
        :data:`QUIET_FLUSH_SECONDS` (so a prompt is never held back).  A key block
        or long secret being dropped stays dropped: its state survives a flush.
        """
        return self._process(final=True)

    # -- internals ------------------------------------------------------------------------

    def _process(self, final: bool) -> bytes:
        out: list[bytes] = []         # joined once at the end (one piece: no copy at all)
        if self._sup is not None:
            end, kept, done = self._sup.consume(self._held, 0, final)
            out.append(bytes(kept))
            self._advance(end)
            if not done:
                return b"".join(out)
            self._sup = None
        if not self._held:
            return b"".join(out)
        buf = self._ctx + self._held
        pos = rpos = len(self._ctx)
        view = _View(buf, final)
        finder = self._triggers.finder(view.v, self._scratch)
        vpos = view.to_view(pos)
        while True:
            events, vcut = self._scan(view.v, vpos, final, finder)
            for ev in events:
                rs, re_ = view.to_raw(ev.s), view.to_raw_end(ev.e)
                out.append(buf[rpos:rs])
                out.append(bytes(ev.replacement))
                out.append(bytes(view.escapes_in(rs, re_)))
                rpos = re_
            sup = events[-1].sup if events else None
            if sup is None:
                rcut = max(rpos, view.to_raw(vcut))
                out.append(buf[rpos:rcut])
                rpos = rcut
                break
            rpos, kept, done = sup.consume(buf, rpos, final)   # drop the rest of the secret
            out.append(bytes(kept))
            if not done:
                self._sup = sup
                break
            vpos = view.to_view(rpos)                           # and go on in the same view
        self._advance(rpos - pos)
        return b"".join(out)

    def _advance(self, n: int) -> None:
        if n:
            held = self._held
            self._ctx = held[n - _CTX:n] if n >= _CTX else (self._ctx + held[:n])[-_CTX:]
            self._held = held[n:]

    def _scan(self, v: bytes, pos: int, final: bool, finder: "Finder") -> tuple[list[_Event], int]:
        """Decide what can be decided in ``v[pos:]``: the matches, and where output may stop."""
        n = len(v)
        events: list[_Event] = []
        hold = n if final else max(pos, n - self._tail)
        lo, p = pos, max(0, pos - 1)        # lowest match start; next trigger start (one may lead by 1)
        while p < n:
            hit = finder.next(p)
            if hit is None:
                break
            hs, he, di = hit
            if not final and hs + self._reach > n:
                hold = min(hold, max(lo, hs - self._back))
                break
            ev = self._match_at(v, lo, hs, di, final, finder)
            if ev is None:
                p = hs + 1
                continue
            events.append(ev)
            lo, p = ev.end, max(hs + 1, ev.end - 1)
            if ev.sup is not None:
                return events, lo
        return events, max(hold, lo)

    def _match_at(self, v: bytes, lo: int, hs: int, di: int, final: bool,
                  finder: "Finder") -> _Event | None:
        n = len(v)
        endpos = n if final else min(n, hs + self._reach)
        ev = self._try(self._dets[di], self._backs[di], v, lo, hs, endpos, final)
        if ev is not None:
            return ev
        for j in finder.others_at(hs, di):        # another detector whose trigger is also here
            ev = self._try(self._dets[j], self._backs[j], v, lo, hs, endpos, final)
            if ev is not None:
                return ev
        return None

    def _try(self, d: Detector, back: int, v: bytes, lo: int, hs: int, endpos: int,
             final: bool) -> _Event | None:
        n = len(v)
        for q in range(max(lo, hs - back), hs + 1 + d.ahead):
            m = d.pattern.match(v, q, endpos)
            if m is None:
                continue
            if m.end() == endpos < n and (d.run or d.group_runs):
                m = d.pattern.match(v, q) or m       # an unbounded secret: look at all that arrived
            if d.validate is not None and not d.validate(v, m):
                continue
            s, e, run = m.start(), m.end(), d.run
            for g in d.groups:
                if m.start(g) >= 0:
                    s, e = m.span(g)
                    run = d.group_runs.get(g, d.run)
                    break
            label = next((lab for g, lab in d.labels.items() if m.start(g) >= 0), None)
            sup = None
            if d.block:
                sup = _PemBlock()
                s, e = m.start(), m.end()
            elif run is not None and not final and e > n - _MARGIN:
                sup = _Run(run)                      # may go on in the next chunk: keep dropping
            return _Event(m.start(), max(m.end(), e), s, e, d.replacement(label), sup)
        return None


# ----------------------------------------------------------------------------- one-shot helpers

def mask_bytes(data: bytes, detectors: Sequence[Detector] = BUILTIN) -> bytes:
    """Mask ``data`` in one go (same result as streaming it and flushing at the end)."""
    masker = Masker(detectors)
    return masker.feed(data) + masker.flush()


def mask_text(text: str, detectors: Sequence[Detector] = BUILTIN) -> str:
    """Mask a str, e.g. a command line before it is stored in the index (``mysql -pS3cret``)."""
    data = text.encode("utf-8", "surrogateescape")
    return mask_bytes(data, detectors).decode("utf-8", "surrogateescape")


def check_masks(masks: Iterable, max_holdback: int = DEFAULT_MAX_HOLDBACK) -> list[str]:
    """Warnings for ``bastion policy check`` about ``[[masks]]`` (invalid ones raise ConfigError).

    A custom regex that can match more than ``max_holdback - 56`` bytes is masked
    only in part when such a long match arrives in a stream.
    """
    limit = max_holdback - _BACK - _MARGIN
    warnings = []
    for det in detectors_from_config(list(masks)):
        if det.max_len is None or det.max_len > limit:
            warnings.append(f"mask {det.name!r}: a match longer than {limit} bytes is masked only in part"
                            f" when streamed; bound the repetitions (e.g. {{1,64}} instead of + or *)")
    return warnings
