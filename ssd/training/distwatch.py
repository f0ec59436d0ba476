"""Bounded waits for MXNet's parameter server (``--kv-store dist_sync`` / ``dist_async``).

PS-lite never gives up on a node: when a worker dies, the other workers block in their next
push or pull, the server and the scheduler in their final barrier, all of them forever, and
Ctrl-C cannot interrupt a main thread blocked inside MXNet (Python runs signal handlers only
between bytecodes of the main thread). Here every node of a run gets a daemon thread:

* Liveness, from PS-lite's own heartbeats (``PS_HEARTBEAT_INTERVAL``, set here when unset):
  the scheduler hears every worker and server, the others hear the scheduler.
  ``MXKVStoreGetNumDeadNode`` counts the nodes silent for longer than half the timeout. The
  scheduler exits when a worker or server goes silent; the others then exit when the scheduler
  goes silent. So every survivor ends, with a message and exit status 1, within about
  ``timeout`` seconds of a loss (two half-timeouts, plus a second of polling each).
* Ctrl-C: a thread reading ``signal.set_wakeup_fd`` sees SIGINT even while the main thread is
  blocked. If the main thread is still running ``GRACE`` seconds later (it may be saving the
  interrupted epoch), or at a second Ctrl-C, the process ends with status 130. A server or
  scheduler, whose main thread never returns from MXNet, ends at the first Ctrl-C.

The timeout is ``MULTIBOX_DIST_TIMEOUT`` seconds (default 120; 0 turns the watch off). It is an
environment variable, not an option, because the server and scheduler roles run inside
``import mxnet`` and never parse arguments. A node that has not started yet is not counted as
lost: PS-lite reports dead nodes only once every node has joined.

This module does not import MXNet: :func:`prepare_role` must run before ``import mxnet``,
which starts the server and scheduler roles and reads ``PS_HEARTBEAT_INTERVAL``.
"""
import ctypes
import logging
import os
import signal
import socket
import sys
import threading
import time
import weakref

__all__ = ['DEFAULT_TIMEOUT', 'GRACE', 'dist_timeout', 'heartbeat_interval', 'prepare_role',
           'watch_kvstore', 'counts_as_lost']

DEFAULT_TIMEOUT = 120.0
GRACE = 10.0         # seconds the main thread has to stop by itself after Ctrl-C
_POLL = 1.0          # seconds between two liveness checks
# PS-lite node groups (ps/base.h): MXKVStoreGetNumDeadNode counts dead nodes in a group
_SCHEDULER, _SERVERS, _WORKERS = 1, 2, 4
_LOST_STATUS, _INTERRUPTED_STATUS = 1, 130
# (group, name) pairs each role watches: the scheduler hears everyone, the others hear it
_WATCHED = {'scheduler': ((_WORKERS, 'worker'), (_SERVERS, 'server')),
            'server': ((_SCHEDULER, 'scheduler'),), 'worker': ((_SCHEDULER, 'scheduler'),)}

log = logging.getLogger(__name__)


def dist_timeout(environ=os.environ):
    """``MULTIBOX_DIST_TIMEOUT`` in seconds (``DEFAULT_TIMEOUT`` when unset); ValueError naming
    the value unless it is a finite number >= 0."""
    text = environ.get('MULTIBOX_DIST_TIMEOUT', '')
    if not text.strip():
        return DEFAULT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = float('nan')
    if not 0 <= value < float('inf'):
        raise ValueError(f"MULTIBOX_DIST_TIMEOUT must be a number of seconds >= 0 (0: wait "
                         f"forever), got {text!r}")
    return value


def heartbeat_interval(timeout):
    """Whole seconds between PS-lite heartbeats: about 6 per half timeout, at least 1."""
    return max(1, int(timeout / 12))


def _dead_after(timeout):
    """Whole seconds of silence after which a node counts as lost: half the timeout."""
    return max(2 * heartbeat_interval(timeout) + 1, int(timeout / 2))


def _heartbeats(environ):
    """PS-lite's heartbeat interval as it reads it (``atoi``), 0 when off or unreadable."""
    try:
        return int(environ.get('PS_HEARTBEAT_INTERVAL', '0'))
    except ValueError:
        return 0


def _check_heartbeats(environ, timeout):
    """ValueError unless a silent node is lost after at least two missed heartbeats."""
    interval = _heartbeats(environ)
    if not 1 <= interval <= (_dead_after(timeout) - 1) // 2:
        raise ValueError(
            f"PS_HEARTBEAT_INTERVAL={environ['PS_HEARTBEAT_INTERVAL']!r} must be a whole number "
            f"of seconds from 1 to {(_dead_after(timeout) - 1) // 2}: a node silent for "
            f"{_dead_after(timeout)} s (MULTIBOX_DIST_TIMEOUT={timeout:g} / 2) counts as lost; "
            f"unset it to get {heartbeat_interval(timeout)}")


def prepare_role(environ=os.environ):
    """Set up the watch of this process's parameter-server role (``DMLC_ROLE``), if any.

    Call before ``import mxnet``. Sets ``PS_HEARTBEAT_INTERVAL`` when unset, starts the Ctrl-C
    watcher and, for the server and scheduler roles, the liveness watch (workers start theirs
    with :func:`watch_kvstore`). Returns the timeout, or None outside a parameter-server run;
    ValueError for a bad ``MULTIBOX_DIST_TIMEOUT``.
    """
    role = environ.get('DMLC_ROLE')
    if not role:
        return None
    timeout = dist_timeout(environ)
    if timeout == 0:
        return timeout
    environ.setdefault('PS_HEARTBEAT_INTERVAL', str(heartbeat_interval(timeout)))
    _check_heartbeats(environ, timeout)
    _watch_interrupts(role)
    if role in ('server', 'scheduler') and not os.path.isfile('/proc/self/net/tcp'):
        log.warning('%s: no liveness watch without Linux /proc (see ssd/training/distwatch.py)', role)
    elif role in ('server', 'scheduler'):
        _start(_watch_liveness, role, _OwnKVStore().get, _WATCHED[role], timeout)
    return timeout


def watch_kvstore(kv, environ=os.environ):
    """Start a worker's liveness watch on its ``dist_*`` KVStore ``kv`` (no-op otherwise)."""
    if 'dist' not in kv.type or not environ.get('DMLC_ROLE'):
        return
    timeout = dist_timeout(environ)
    if timeout > 0 and _heartbeats(environ):  # without heartbeats every node looks dead
        # a weak reference: the KVStore must be freed as usual, its destructor runs PS-lite's
        # final barrier, which the other nodes wait for
        _start(_watch_liveness, f'worker {kv.rank}', weakref.ref(kv), _WATCHED['worker'], timeout)


def _start(target, *args):
    threading.Thread(target=target, args=args, name='distwatch', daemon=True).start()


def _end(status, message):
    """Log ``message`` and end the process at once: the main thread may be blocked in MXNet."""
    log.error('%s', message)
    for handler in logging.getLogger().handlers + log.handlers:
        handler.flush()
    sys.stderr.flush()
    os._exit(status)


def _watch_liveness(role, kvstore, watched, timeout):
    """Poll PS-lite's dead-node count of each ``(group, name)`` in ``watched``.

    ``kvstore()`` returns an object with a KVStore ``handle``, or None once it is gone.
    """
    dead_after = _dead_after(timeout)
    count = ctypes.c_int()
    started = set()  # groups whose dead count has read 0 once: PS-lite's start is complete
    while True:
        time.sleep(_POLL)
        for group, name in watched:
            store = kvstore()
            if store is None:
                return
            _lib().MXKVStoreGetNumDeadNode(store.handle, group, ctypes.byref(count), dead_after)
            del store
            if counts_as_lost(count.value, group, started):
                lost = (f"the {name} of the parameter server (it stops when a worker or server "
                        f"is lost: see its output)" if group == _SCHEDULER else
                        f"{count.value} {name} node(s) of the parameter server")
                _end(_LOST_STATUS, f"{role}: lost {lost}, no heartbeat for {dead_after} s; "
                                   f"stopping (MULTIBOX_DIST_TIMEOUT={timeout:g} s)")


def counts_as_lost(dead, group, started):
    """Whether a dead-node count ``dead`` of ``group`` means a lost node; ``started`` (a set,
    updated here) holds the groups whose count has read 0 once.

    PS-lite marks its node table ready a moment before it records its start time, and in that
    window it counts every node without a heartbeat yet as dead (start time 0). A server or
    scheduler whose watch queried then stopped at once and left the others waiting for it at
    PS-lite's first barrier. Once the count has read 0, the start is complete: from then on a
    non-zero count is a real loss.
    """
    if group not in started:
        if dead == 0:
            started.add(group)
        return False
    return dead > 0


def _lib():
    """libmxnet, as loaded by ``mxnet.base`` (None until then).

    The thread must not ``import mxnet``: in the server and scheduler roles the main thread
    is still inside that import (it runs the role), and a second import would wait for it.
    """
    base = sys.modules.get('mxnet.base')
    return getattr(base, '_LIB', None)


class _OwnKVStore:
    """A KVStore handle for the dead-node query of a server or scheduler process, created by
    ``get()`` once PS-lite has started in it.

    Their own KVStore is a local of MXNet's import-time server module. Any ``dist`` KVStore
    answers the query (it reads PS-lite's process-wide node table), and creating one in a
    non-worker process starts nothing. The query must wait for PS-lite's start, though: before
    it, PS-lite has no transport object and the query crashes the process (seen: SIGSEGV).
    """
    handle = None

    def get(self):
        while self.handle is None:
            if _lib() is not None and _listening_sockets():
                handle = ctypes.c_void_p()
                if _lib().MXKVStoreCreate(b'dist', ctypes.byref(handle)) != 0:
                    _end(_LOST_STATUS, 'could not create a KVStore to watch the parameter server')
                self.handle = handle
            else:
                time.sleep(_POLL)
        return self


def _listening_sockets():
    """Listening TCP sockets of this process (Linux ``/proc``). PS-lite binds its port right
    after creating its transport; nothing else in these processes listens on TCP."""
    own = set()
    for fd in os.listdir('/proc/self/fd'):
        try:
            target = os.readlink(f'/proc/self/fd/{fd}')
        except OSError:  # closed meanwhile
            continue
        if target.startswith('socket:['):
            own.add(target[len('socket:['):-1])
    listening = set()
    for table in ('/proc/self/net/tcp', '/proc/self/net/tcp6'):
        with open(table) as lines:
            next(lines)  # header
            for line in lines:
                fields = line.split()
                if fields[3] == '0A':  # TCP_LISTEN
                    listening.add(fields[9])  # inode
    return own & listening


def _watch_interrupts(role):
    """Turn SIGINT into an exit when the blocked main thread cannot react to it."""
    receiver, sender = socket.socketpair()
    sender.setblocking(False)
    signal.set_wakeup_fd(sender.fileno(), warn_on_full_buffer=False)
    _start(_wait_for_interrupts, role, receiver, sender)


def _wait_for_interrupts(role, receiver, sender):
    interrupted = None
    while True:
        wait = None if interrupted is None else max(0.0, interrupted + GRACE - time.monotonic())
        receiver.settimeout(wait)
        try:
            signals = receiver.recv(64)
        except socket.timeout:
            signals = b''
        now = time.monotonic()
        if signal.SIGINT in signals and interrupted is None and role == 'worker':
            interrupted = now  # give the training loop its chance to save and stop
        elif signal.SIGINT in signals or (interrupted is not None and now >= interrupted + GRACE):
            _end(_INTERRUPTED_STATUS, f"{role}: interrupted; the parameter server does not let "
                                      f"this process stop by itself, so it ends here")
