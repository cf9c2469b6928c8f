"""Token ids to printable text, one token at a time: incremental UTF-8 and stop strings.

A token may end inside a multi-byte character, so text is released only when its bytes are
complete; bytes that can never be valid UTF-8 become U+FFFD and decoding goes on after them (the
standard library's incremental decoder does both). Text that may be the start of a stop string
is held back until it is clear either way. `flush()` releases what is held at the end.
"""
from __future__ import annotations

import codecs
from typing import Callable


class StopFilter:
    """Holds back text that may be the start of a stop string; cuts the text at a stop string."""

    def __init__(self, stops: tuple[str, ...] = ()):
        self.stops = tuple(x for x in stops if x)
        self.held = ""

    def push(self, text: str) -> tuple[str, bool]:
        """(text to print now, whether a stop string was reached)"""
        if not self.stops:
            return text, False
        buf = self.held + text
        hits = [buf.find(x) for x in self.stops if x in buf]
        if hits:
            self.held = ""
            return buf[:min(hits)], True
        keep = 0
        for x in self.stops:
            for n in range(min(len(x) - 1, len(buf)), 0, -1):
                if buf.endswith(x[:n]):
                    keep = max(keep, n)
                    break
        self.held = buf[len(buf) - keep:]
        return buf[:len(buf) - keep], False

    def flush(self) -> str:
        out, self.held = self.held, ""
        return out


class TextStream:
    """piece(token) -> bytes, pushed token by token; yields (text, stopped)."""

    def __init__(self, piece: Callable[[int], bytes], stops: tuple[str, ...] = ()):
        self.piece = piece
        self.utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.stops = StopFilter(stops)
        self.stopped = False

    def push(self, token: int) -> tuple[str, bool]:
        text, self.stopped = self.stops.push(self.utf8.decode(self.piece(token)))
        return text, self.stopped

    def flush(self) -> str:
        """The text still held at the end of an answer (an incomplete character becomes U+FFFD)."""
        if self.stopped:
            return ""
        text, self.stopped = self.stops.push(self.utf8.decode(b"", final=True))
        return text if self.stopped else text + self.stops.flush()
