"""Stop a run cleanly on SIGINT (Ctrl-C) and SIGTERM (schedulers, `timeout`, `kill`).

A handler only sets a flag; the training loop reads it between steps, so a run always stops
at a step boundary, where its checkpoint is consistent with its random streams.
"""

from __future__ import annotations

import contextlib
import signal
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopOnSignals:
    """While entered, SIGINT and SIGTERM request a stop instead of interrupting.

        with StopOnSignals() as stop:
            while not stop.requested: ...

    Handlers can only be installed from the main thread; elsewhere entering does nothing
    (Python delivers signals to the main thread only). `shared`, a multiprocessing Event,
    requests a stop too once set (by another process: see `distributed.launch`).
    """

    def __init__(self, shared=None):
        self.signal: int | None = None
        self._shared = shared
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signal is not None or (self._shared is not None and self._shared.is_set())

    def request(self, signum: int, _frame=None) -> None:
        """Ask for a stop, as the signal `signum` does (the first request is kept)."""
        if self.signal is None:
            self.signal = signum

    def __enter__(self) -> StopOnSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self.request)
        return self

    def __exit__(self, *_exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()


@contextlib.contextmanager
def signals_ignored():
    """SIGINT and SIGTERM ignored while inside, in this process and in the processes it
    starts (an ignored signal stays ignored across exec, unlike a handler), so that those
    cannot be killed before they install their own handlers."""
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class Interrupted(KeyboardInterrupt):
    """A run stopped by a signal at a step boundary, after writing its checkpoint.

    Attributes: signal (its number, None when unknown, e.g. received by another process),
    step (steps completed), checkpoint (the path written, or None without an output
    directory).
    """

    def __init__(self, signum: int | None, step: int, checkpoint):
        self.signal, self.step, self.checkpoint = signum, step, checkpoint
        super().__init__(f"stopped by {self.signal_name} at step {step}")

    @property
    def signal_name(self) -> str:
        return "a signal" if self.signal is None else signal.Signals(self.signal).name

    @property
    def exit_status(self) -> int:
        """The shell's convention for a process ended by a signal: 128 + its number."""
        return 128 + (signal.SIGINT if self.signal is None else self.signal)
