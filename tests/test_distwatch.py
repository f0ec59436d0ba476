"""ssd.training.distwatch's settings: the timeout variable, heartbeat interval and lost-node delay.

The watch itself (a killed worker, Ctrl-C) runs in tests/test_train.py on 127.0.0.1.
"""
import pytest

from ssd.training import distwatch

pytestmark = pytest.mark.unit


@pytest.mark.parametrize('text, expected', [(None, 120.0), ('', 120.0), (' 30 ', 30.0), ('0', 0.0),
                                            ('2.5', 2.5)])
def test_dist_timeout_reads_seconds(text, expected):
    environ = {} if text is None else {'MULTIBOX_DIST_TIMEOUT': text}
    assert distwatch.dist_timeout(environ) == expected


@pytest.mark.parametrize('text', ['soon', '-1', 'nan', 'inf', '1e999'])
def test_dist_timeout_refuses_by_value(text):
    with pytest.raises(ValueError, match=rf"MULTIBOX_DIST_TIMEOUT must be a number of seconds >= 0 "
                                         rf"\(0: wait forever\), got '{text}'"):
        distwatch.dist_timeout({'MULTIBOX_DIST_TIMEOUT': text})


@pytest.mark.parametrize('timeout, interval, lost_after', [(120, 10, 60), (24, 2, 12), (10, 1, 5),
                                                           (2, 1, 3)])
def test_heartbeats_and_lost_node_delay(timeout, interval, lost_after):
    """About 6 heartbeats per half timeout; a node is lost after half the timeout, never before
    two missed heartbeats."""
    assert distwatch.heartbeat_interval(timeout) == interval
    assert distwatch._dead_after(timeout) == lost_after


def test_no_role_no_watch():
    environ = {'MULTIBOX_DIST_TIMEOUT': 'bad'}  # not even read outside a parameter-server run
    assert distwatch.prepare_role(environ) is None and environ == {'MULTIBOX_DIST_TIMEOUT': 'bad'}


def test_zero_timeout_turns_the_watch_off():
    environ = {'DMLC_ROLE': 'worker', 'MULTIBOX_DIST_TIMEOUT': '0'}
    assert distwatch.prepare_role(environ) == 0 and 'PS_HEARTBEAT_INTERVAL' not in environ


@pytest.mark.parametrize('interval', ['0', '31', 'often'])
def test_heartbeats_too_rare_for_the_timeout_are_refused(interval):
    environ = {'DMLC_ROLE': 'server', 'PS_HEARTBEAT_INTERVAL': interval}
    with pytest.raises(ValueError, match=rf"PS_HEARTBEAT_INTERVAL='{interval}' must be a whole number "
                                         rf"of seconds from 1 to 29: a node silent for 60 s"):
        distwatch.prepare_role(environ)


@pytest.mark.parametrize('counts, lost_at', [
    ([1, 1, 0, 0, 2], 4),   # PS-lite's start window (every node "dead"), then running, then a loss
    ([0, 0, 1], 2),         # started at once
    ([2, 1, 1], None),      # never seen started: not a loss (the start is still going on)
    ([0, 0, 0], None),
])
def test_a_dead_count_is_a_loss_only_after_the_count_has_read_zero(counts, lost_at):
    started = set()
    verdicts = [distwatch.counts_as_lost(count, 4, started) for count in counts]
    assert verdicts == [i == lost_at for i in range(len(counts))]


def test_each_watched_group_starts_on_its_own():
    started = set()
    assert not distwatch.counts_as_lost(0, 2, started)  # servers seen started
    assert not distwatch.counts_as_lost(1, 4, started)  # workers not yet
    assert distwatch.counts_as_lost(1, 2, started)
