"""A plain-text progress bar on stderr (no dependency): redrawn in place on a terminal, a line
per tenth of the work otherwise (logs and CI stay short)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    """``bar.update(info="loss 0.1")`` after each of ``total`` units of work; ``bar.close()`` at the end.

    Args:
        total: units of work (epochs, sweep points).
        label: what is counted, printed before the bar.
        stream: where to draw (stderr by default); ``enabled=False`` draws nothing.
    """

    WIDTH = 30

    def __init__(self, total: int, label: str, stream: TextIO | None = None, enabled: bool = True) -> None:
        self.total, self.label, self.done = max(total, 0), label, 0
        self.stream = sys.stderr if stream is None else stream
        self.enabled = enabled and self.total > 0
        self.interactive = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = time.monotonic()
        self._last_tenth = -1

    def update(self, count: int = 1, info: str = "") -> None:
        """Count ``count`` more units done and redraw; ``info`` is shown after the bar."""
        self.done = min(self.done + count, self.total)
        if not self.enabled:
            return
        tenth = 10 * self.done // self.total
        if not self.interactive and tenth == self._last_tenth and self.done < self.total:
            return
        self._last_tenth = tenth
        filled = self.WIDTH * self.done // self.total
        elapsed = time.monotonic() - self.start
        line = (f"{self.label} [{'#' * filled}{'.' * (self.WIDTH - filled)}] {self.done}/{self.total} "
                f"{elapsed:6.1f} s {info}".rstrip())
        if self.interactive:
            self.stream.write("\r" + line + "\x1b[K")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        """End the bar's line (on a terminal)."""
        if self.enabled and self.interactive:
            self.stream.write("\n")
            self.stream.flush()
