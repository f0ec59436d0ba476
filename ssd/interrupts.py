"""Ctrl-C (SIGINT) held back while a checkpoint is being written, and scripts that end on it.

Outside :func:`deferred` blocks Ctrl-C raises ``KeyboardInterrupt`` as usual. Inside one, the
signal is only remembered: the block runs to its end (a checkpoint is never half committed, the
metrics file never half written), then the handler that was in place (Python's raises
``KeyboardInterrupt``) runs where the block ends. An ignored SIGINT stays ignored.
"""
import contextlib
import signal
import sys
import threading

__all__ = ['deferred', 'exit_on_ctrl_c']

_held = {'depth': 0, 'pending': False, 'previous': None}


def _remember(signum, frame):
    _held['pending'] = True


@contextlib.contextmanager
def deferred(then_raise=True):
    """Run the block with Ctrl-C held back; afterwards raise ``KeyboardInterrupt`` if one came.

    ``then_raise=False`` drops a Ctrl-C that came during the block: for the save made because
    of an earlier Ctrl-C, when the program is stopping anyway. Blocks nest; only the outermost
    one raises. Signal handlers belong to the main thread: elsewhere the block runs unchanged.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    outermost = _held['depth'] == 0
    if outermost:
        _held['pending'] = False
        _held['previous'] = signal.signal(signal.SIGINT, _remember)
    _held['depth'] += 1
    try:
        yield
    finally:
        _held['depth'] -= 1
        if outermost:
            signal.signal(signal.SIGINT, _held['previous'])
    # reached only when the block did not raise: an exception in flight is not replaced
    if outermost and _held['pending'] and then_raise and callable(_held['previous']):
        _held['pending'] = False
        _held['previous'](signal.SIGINT, None)  # Python's default handler raises KeyboardInterrupt


def exit_on_ctrl_c(script):
    """From now on Ctrl-C ends the process with ``SCRIPT: interrupted`` on stderr and exit status
    130, no traceback. Call it before importing MXNet (which takes seconds); this module imports
    nothing heavy. An ignored SIGINT (a background job of a non-interactive shell) stays ignored."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        return

    def interrupted(signum, frame):
        sys.stderr.write(f'{script}: interrupted\n')
        sys.exit(130)
    signal.signal(signal.SIGINT, interrupted)
