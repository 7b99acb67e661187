#!/usr/bin/env python3
"""How the daemon stops, as an admin and systemd see it: the bound on the exit (the cut's 6 s,
counted from where the cut really starts), a reload just before a stop, and STOPPING=1 with
EXTEND_TIMEOUT_USEC said by the signal thread at once, even while the loop is stuck on a stalled
spool, so that systemd never kills a daemon that is still within its bound."""
import configparser
import os
import re
import signal
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import ROOT, exit_within, held_at_stop, run_tests, wait_for  # noqa: E402
from procstate import ended_but_its_close, loop_in_fuse, sigterm_pending, stall_with_a_call_in_flight  # noqa: E402
from sdnotify import NotifyListener  # noqa: E402

CUT_S = 6   # imgspoold(8) EXIT STATUS: what the cut gets, from its start


def fifo_points(d, points):
    """Starts d held at points, each on a FIFO of its own; returns {point: its FIFO}."""
    fifo = d.start_held_at(",".join(points))
    for point in points:
        os.mkfifo(f"{fifo}.{point}")
    return {point: f"{fifo}.{point}" for point in points}


def test_a_cut_reached_late_gets_its_time(env):
    """The loop is slow to reach the cut (held in a reload as on a slow disk: with a grace period
    of 0 s, the cut is due as the SIGTERM comes, long before the loop hears of it). The bound
    counted from the signal alone, so the later the cut began, the less of its time it had, and
    a cut that needs it all was ended midway. Now the cut arms its 6 s from where it starts:
    held for good after it, the process ends 6 s after the cut began, later than the signal
    alone allowed. The daemon's last line says which bound ended it: the judge, as no window of
    wall-clock time is (the signal's bound is 6 s off, whatever the machine's load)."""
    env.fake.script("a cut reached late", [{"kind": "b64", "delay": 60}, {"kind": "b64"}])
    d = env.daemon(spool__grace_period=0)
    fifos = fifo_points(d, ["main:reload", "dispatch:grace-cut"])
    d.submit("late", {"prompt": "a cut reached late"})
    wait_for(lambda: env.fake.inflight >= 1, 10, "the call")
    writers = []
    try:
        d.send_signal(signal.SIGHUP)
        writers.append(held_at_stop(fifos["main:reload"], d))   # the loop, slow
        d.send_signal(signal.SIGTERM)   # the signal thread arms 0 s + 6 s from now
        wait_for(lambda: not sigterm_pending(d.proc.pid), 10, "the signal thread to take it")
        released = time.monotonic()   # after the signal's bound was armed
        os.close(writers.pop())   # the loop goes on, the grace period over: it cuts
        writers.append(held_at_stop(fifos["dispatch:grace-cut"], d))   # and sticks there
        rc = exit_within(d, 30, "its loop was stuck in a cut it reached late", released,
                         "the loop let go")
        ended = time.monotonic()
    finally:
        for w in writers:
            os.close(w)
    d.logf.close()
    assert rc == 1, (rc, d.log()[-2000:])
    # Armed from the stop signal alone, the line would name the signal, and end it earlier.
    assert f"the exit did not end {CUT_S} s after the cut" in d.log(), d.log()[-2000:]
    assert ended - released > CUT_S - 0.01, (ended - released, d.log()[-2000:])
    d.start()
    assert d.wait_finished("late", 30) == "done", d.log()[-3000:]
    assert d.stop() == 0


def set_grace_period(d, seconds):
    with open(d.config_path) as f:
        text = f.read()
    text, n = re.subn(r"^grace_period = .*$", f"grace_period = {seconds}", text, flags=re.M)
    assert n == 1, text
    with open(d.config_path, "w") as f:
        f.write(text)


def test_a_reload_just_before_the_stop_counts(env):
    """An admin lengthens grace_period (20 s, from 1 s) and reloads; the SIGTERM comes while the
    loop is still applying the reload. The signal thread armed the bound on the old grace
    period (1 s and the cut's), the drain then counted on the new one: the process was ended
    with status 1 in the middle of the drain it had promised, a call of 18 s cut, paid, and
    paid again by the restart. Now the drain arms the bound again for the grace period applied
    and tells systemd: the call ends, the job is done with that one call, exit 0."""
    listener = NotifyListener()
    try:
        env.fake.script("a longer grace period", {"kind": "b64", "delay": 18})
        d = env.daemon(spool__grace_period=1, extra_env=listener.env())
        fifo = d.start_held_at("main:reload")
        d.submit("lengthened", {"prompt": "a longer grace period"})
        wait_for(lambda: env.fake.inflight >= 1, 10, "the call")
        set_grace_period(d, 20)
        writer = None
        try:
            d.send_signal(signal.SIGHUP)
            writer = held_at_stop(fifo, d)   # the reload under way
            signalled = time.monotonic()
            d.send_signal(signal.SIGTERM)
            wait_for(lambda: not sigterm_pending(d.proc.pid), 10, "the signal thread to take it")
            os.close(writer)
            writer = None
            rc = exit_within(d, 40, "the call of 18 s ended", signalled, "SIGTERM")
        finally:
            if writer is not None:
                os.close(writer)
        d.logf.close()
        assert rc == 0, (rc, d.log()[-3000:])
        assert d.state("lengthened") == "done", d.log()[-3000:]
        assert env.fake.calls("a longer grace period") == 1
        assert "the process ends at most 26 s after the signal" in d.log(), d.log()[-3000:]
        # systemd was told first of the old bound (1 + 6 s and the margin), then of the new.
        first = listener.stopping()
        assert first and first[0][1] <= 1 + CUT_S + 5, first
        told_until = max(t + ext for t, ext in listener.stopping())
        assert told_until >= signalled + 20 + CUT_S, listener.stopping()
    finally:
        listener.close()


def test_systemd_hears_the_stop_at_once_while_the_loop_is_stuck(env):
    """The spool's file server stops answering (its sshfs stopped) and the loop sticks in a file
    operation on it. STOPPING=1 and EXTEND_TIMEOUT_USEC were sent by the loop alone, at the end
    of a turn: systemd heard nothing, and with WatchdogSec= it would restart (SIGABRT) or with
    a short TimeoutStopSec kill a daemon still within its bound. Now the signal thread says
    both at once, at each signal, sized to the bound, and the process ends within what it
    said."""
    listener = NotifyListener()
    env.fake.script("stalled, told", [{"kind": "b64", "delay": 60}, {"kind": "b64"}])
    try:
        with env.two_mounts() as mounts:
            d, sshfs = stall_with_a_call_in_flight(env, mounts, "told", "stalled, told",
                                                   spool__grace_period=3,
                                                   spool__lease_timeout=8,
                                                   extra_env=listener.env())
            pid = d.proc.pid
            try:
                first_at = time.monotonic()
                d.send_signal(signal.SIGTERM)
                wait_for(lambda: listener.stopping(), 5, "STOPPING=1 while the loop is stuck")
                assert loop_in_fuse(pid), "the loop was not stuck: the test proves nothing"
                [(t1, ext1)] = listener.stopping()
                print(f"# STOPPING=1 {t1 - first_at:.3f} s after SIGTERM, "
                      f"EXTEND_TIMEOUT_USEC {ext1:.1f} s")
                assert 3 + CUT_S <= ext1 <= 3 + CUT_S + 5, ext1
                wait_for(lambda: not sigterm_pending(pid), 10, "the first SIGTERM taken")
                second_at = time.monotonic()
                d.send_signal(signal.SIGTERM)
                wait_for(lambda: len(listener.stopping()) >= 2, 5, "the second one told")
                t2, ext2 = listener.stopping()[1]
                assert CUT_S <= ext2 <= CUT_S + 5, ext2
                wait_for(lambda: d.exited() or ended_but_its_close(pid), 30,
                         "the daemon to end while its loop was stuck")
                ended = time.monotonic()
            finally:
                os.kill(sshfs.pid, signal.SIGCONT)
            rc = exit_within(d, 20, "its files on the spool were closed", second_at,
                             "the second SIGTERM")
            d.logf.close()
            print(f"# ended {ended - second_at:.2f} s after the second SIGTERM; systemd told "
                  f"to wait till {t2 + ext2 - second_at:.2f} s after it")
            assert rc == 1, (rc, d.log()[-2000:])
            assert f"the exit did not end {CUT_S} s after the cut" in d.log(), d.log()[-2000:]
            # Even with TimeoutStopSec=1 systemd would not have killed it before its end.
            assert ended <= listener.stop_timeout_at(1, first_at), listener.stopping()
            assert ended <= t2 + ext2, (ended - t2, ext2)
    finally:
        listener.close()


def test_the_units_stop_timeout_is_the_bound(env):
    """The unit's TimeoutStopSec is what the daemon says it may take with the default grace
    period (the longest call, 900 s), its cut reached late included, and the margin it gives
    systemd: the first EXTEND_TIMEOUT_USEC, sent at once, covers the same. It said 960."""
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(os.path.join(ROOT, "contrib", "systemd", "imgspoold.service"))
    timeout_stop = int(unit["Service"]["TimeoutStopSec"])
    listener = NotifyListener()
    try:
        d = env.daemon(spool__grace_period=None, extra_env=listener.env()).start()
        d.send_signal(signal.SIGTERM)
        _, ext = wait_for(lambda: listener.stopping(), 10, "STOPPING=1")[0]
        assert d.proc.wait(20) == 0
        m = re.search(r"the process ends at most (\d+) s after the signal, (\d+) s if its loop "
                      r"is slow to reach the cut", d.log())
        assert m, d.log()[-2000:]
        bound, slow_bound = int(m.group(1)), int(m.group(2))
        margin = ext - bound
        print(f"# bound {bound} s, {slow_bound} s with a late cut, margin {margin:.0f} s; "
              f"TimeoutStopSec={timeout_stop}")
        assert bound == 900 + CUT_S and slow_bound == 900 + 2 * CUT_S, (bound, slow_bound)
        assert 0 < margin <= 10, margin
        assert timeout_stop == slow_bound + margin, (timeout_stop, slow_bound, margin)
    finally:
        listener.close()


if __name__ == "__main__":
    run_tests([test_a_cut_reached_late_gets_its_time,
               test_a_reload_just_before_the_stop_counts,
               test_systemd_hears_the_stop_at_once_while_the_loop_is_stuck,
               test_the_units_stop_timeout_is_the_bound])
