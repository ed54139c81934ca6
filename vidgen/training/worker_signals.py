"""Ctrl-C and SIGTERM belong to the training loop's main process, which saves a checkpoint and
exits (vidgen.training.loop.StopSignals); DataLoader workers must outlive them."""

from __future__ import annotations

import signal

_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def leave_stop_signals_to_the_main_process(worker_id: int) -> None:
    """DataLoader workers ignore Ctrl-C and SIGTERM: a terminal's Ctrl-C (sent to the whole process
    group) or `pkill` would otherwise kill a worker, and the main process would die of the broken
    loader instead of saving a checkpoint. Workers still end with the main process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)  # held while it was forked (batches_with_signals_held)


def batches_with_signals_held(batches):
    """The batches of `batches`, each fetched with Ctrl-C and SIGTERM held back: a worker the loader
    forks meanwhile (a new epoch's) starts with them blocked until it ignores them, so a signal to
    the whole group cannot kill it half-started; the main process receives them once the batch is
    in hand and stops at its next step."""
    batches = iter(batches)
    while True:
        before = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            batch = next(batches)
        except StopIteration:
            return
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, before)
        yield batch
