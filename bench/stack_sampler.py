"""The driver's main thread sampled from inside the process, for bench.profile's running-application column.

py-spy (bench.profile) samples a whole process from outside. The increment of a running
application (the watch mode's case, bench.measure's chain_warm) is the last of several chain runs
in one process: only that run must be sampled, so it is sampled from inside. A thread reads the
main thread's stack (`sys._current_frames`) SAMPLE_RATE times a second while the sampler is on,
idle waits on py4j included (as `py-spy record --idle`: a driver waiting on Spark is the run's
time), and `raw_lines` gives the stacks in py-spy's raw format (`frame;frame;... count`, outermost
first, frames as `function (file:line)`), so bench.profile.tally reads both the same way.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from pipelines.config import PROJECT_ROOT

SAMPLE_RATE = 20  # samples per second, py-spy's and this sampler's: a sample is 1 / SAMPLE_RATE s
_PROJECT = str(PROJECT_ROOT) + "/"


def frame_name(frame: FrameType) -> str:
    """`function (file:line)`, a project file relative to the project, as py-spy names a module on
    sys.path (bench.profile's PARTS match on those names)."""
    file = frame.f_code.co_filename
    return f"{frame.f_code.co_name} ({file.removeprefix(_PROJECT)}:{frame.f_lineno})"


def stack_of(frame: FrameType | None) -> str:
    """The frames from the outermost to `frame`, joined by ';' (py-spy's order)."""
    names = []
    while frame is not None:
        names.append(frame_name(frame))
        frame = frame.f_back
    return ";".join(reversed(names))


class StackSampler:
    """Samples the thread that creates it while on (`with sampler.on():`); the counts add up over
    every period it was on. Samples are due on a fixed schedule, so a late one does not push the
    next ones back (a sampler that slept a whole interval after each sample would fall behind the
    clock and under-count the run's seconds)."""

    def __init__(self, rate: int = SAMPLE_RATE):
        self.interval = 1 / rate
        self.target = threading.get_ident()
        self.stacks: Counter[str] = Counter()
        self._on = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="stack-sampler", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        due = time.monotonic()
        while True:
            due += self.interval
            if self._stop.wait(max(0.0, due - time.monotonic())):
                return
            late = time.monotonic() - due
            # Held up (the main thread kept the GIL): the samples it missed are counted now.
            missed = int(late / self.interval) if late > self.interval else 0
            due += missed * self.interval
            if self._on.is_set():
                self.stacks[stack_of(sys._current_frames().get(self.target))] += 1 + missed

    @contextmanager
    def on(self) -> Iterator[None]:
        """Sample while the block runs."""
        self._on.set()
        try:
            yield
        finally:
            self._on.clear()

    def close(self) -> None:
        """Stop the sampling thread (the counts stay)."""
        self._stop.set()
        self._thread.join()

    def raw_lines(self) -> list[str]:
        """One `stack count` line per distinct stack, as `py-spy record --format raw` writes them."""
        return [f"{stack} {count}" for stack, count in self.stacks.items()]

    def write_raw(self, path: Path) -> None:
        path.write_text("".join(line + "\n" for line in self.raw_lines()), encoding="utf-8")
