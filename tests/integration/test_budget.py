#!/usr/bin/env python3
"""Budgets across a restart and a failing ledger (spool-layout §17): at every moment each call
is counted, reserved or spent, so no budget is passed by more than the overshoot bound.

The windows are made deterministic with the daemon's test hooks: IMGSPOOLD_CRASH_AT kills it at
a point, IMGSPOOLD_STOP_AT with IMGSPOOLD_STOP_FIFO holds the one thread that reaches a point
until the test has opened the FIFO and closed it again (the loop goes on meanwhile)."""
import contextlib
import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import fill, held_at_stop, ledger_files, ledger_spent, run_tests, wait_for  # noqa: E402

PRICE = {"prices__gpt-image-2": "0.01"}


def test_no_call_under_a_budget_before_recovered_answers_are_billed(env):
    """A restart removes our tickets at once, but an answer saved before the kill is billed only
    when its judgement returns. Until then no call under a budget may start: here the saved
    answer's cost brings the daily budget to its limit, so the next job must never be called."""
    d = env.daemon(spool__concurrency=1, budget__daily="0.01", **PRICE)
    saved, nxt = "answered before the kill", "a call the budget has no room for"
    d.submit("saved", {"prompt": saved})
    d.start_to_crash("save:response")
    assert env.fake.calls(saved) == 1
    d.submit("next", {"prompt": nxt})
    fifo = d.start_held_at("recovery:judge", wait_ready=False)
    waiting = "its calls wait until the cost of 1 answer(s) recovered from before the restart"
    wait_for(lambda: waiting in d.log() or env.fake.calls(nxt), 20,
             f"the next job to wait for the recovered answer (log:\n{d.log()[-3000:]})")
    assert env.fake.calls(nxt) == 0, "a call started before the recovered answer was billed"
    assert waiting in d.log(), d.log()
    os.close(held_at_stop(fifo, d))
    assert d.wait_finished("saved") == "done", d.log()
    wait_for(lambda: "is over its total daily budget" in d.log(), 20, "the budget to stop the next job")
    assert env.fake.calls(nxt) == 0 and env.fake.calls(saved) == 1, d.log()
    assert d.state("next") == "new", d.state("next")
    assert d.stop() == 0


def own_tickets(d):
    return os.listdir(d.path("providers", "apiyi", "calls"))


@contextlib.contextmanager
def full_ledger(d):
    """Daemon d's ledger/ on a small file system, full (its file 'filler'); its path. The
    daemon is killed and the file system unmounted after."""
    ledger = d.path("ledger")
    os.makedirs(ledger)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs", ledger], check=True)
    try:
        fill(ledger)
        yield ledger
    finally:
        d.kill()
        subprocess.run(["umount", "-l", ledger], check=False)


def test_a_failed_ledger_write_keeps_the_ticket_until_a_write_works(env):
    """A call's cost goes into the ledger file before its ticket goes. When that write fails
    (ledger/ on a full file system here), the ticket stays in calls/, reserving the cost in
    every host's sight, until a later write takes it (at a heartbeat); the cost counts once."""
    d = env.daemon(spool__concurrency=1, spool__lease_timeout=8, budget__daily="100", **PRICE)
    with full_ledger(d) as ledger:
        d.submit("unwritten", {"prompt": "a call whose cost the ledger cannot take"})
        d.start()
        kept = "its cost is not in the ledger yet: its ticket stays in calls/"
        wait_for(lambda: kept in d.log() or (d.state("unwritten") == "done" and
                                             not own_tickets(d)), 20,
                 f"the call to end (log:\n{d.log()[-3000:]})")
        # The operator is pointed at the file itself: ledger/MONTH/HOST.RUN.json.
        d.wait_logged(re.compile(r"cannot write '[^']*/ledger/\d{4}-\d{2}/testhost\.[0-9a-f]{16}\.json'"))
        d.wait_logged(kept)
        assert d.wait_finished("unwritten") == "done"
        assert len(own_tickets(d)) == 1, own_tickets(d)
        os.unlink(os.path.join(ledger, "filler"))
        wait_for(lambda: not own_tickets(d), 20, "a heartbeat to write the ledger and release")
        spent = ledger_spent(d.path())
        assert spent == {"testhost": 10000}, spent
        # Said by the helper before it takes the tickets; the log's writer thread may say it later.
        wait_for(lambda: "is written again" in d.log(), 10, f"the write to be said (log:\n{d.log()[-3000:]})")
        assert d.stop() == 0


def test_the_loop_never_waits_for_a_helpers_ledger_write(env):
    """A helper thread writing the ledger (held here inside that write) must not stop the loop:
    a call cancelled meanwhile is counted on the loop, whose write is left to a helper. The loop
    goes on (it answers a log mark); the cancelled job's records, which count that call, wait
    for the ledger to have it (a kill between would lose it), so it fails once the write is
    through, and the ledger ends with both calls' costs."""
    d = env.daemon(spool__concurrency=2, spool__lease_timeout=8, budget__daily="100", **PRICE)
    fast, slow = "answered while the other call runs", "a call cancelled in flight"
    env.fake.script(slow, {"kind": "b64", "delay": 30})
    d.submit("slow", {"prompt": slow})
    fifo = d.start_held_at("ledger:locked")
    wait_for(lambda: env.fake.calls(slow) == 1, 20, "the slow call to start")
    d.submit("fast", {"prompt": fast})
    writer = held_at_stop(fifo, d)   # the helper that judged the fast answer, inside its write
    os.makedirs(d.path("control"), exist_ok=True)
    with open(d.path("control", "cancel.slow"), "w"):
        pass
    d.wait_logged("slow cancelled by an operator: cutting the call in flight")
    d.log_barrier(timeout=10)   # the loop went on
    assert d.state("slow") == "running", d.state("slow")   # its records wait for the ledger
    os.close(writer)
    assert d.wait_finished("slow") == "failed", d.log()
    assert d.wait_finished("fast") == "done", d.log()
    wait_for(lambda: not own_tickets(d), 20, "every ticket to go")
    spent = ledger_spent(d.path())
    assert spent == {"testhost": 20000}, spent
    assert d.stop() == 0


def clear_ledger(d):
    """An operator removes ledger/ and makes it again."""
    shutil.rmtree(d.path("ledger"))
    os.mkdir(d.path("ledger"))


def test_a_cleared_ledger_never_counts_a_live_hosts_spend_as_0(env):
    """ledger/ removed and made again (spool-layout §17): host A, which spent the whole daily
    budget, writes its run's file there only at its next use. Until it has, host B must not
    count A's spend as 0: B's job waits, and is never called. Once A has left, what B read of
    A's run is carried back into the next new ledger/, and B waits for no one."""
    budget = dict(budget__daily="0.03", spool__concurrency=1, verbose=True, **PRICE)
    a = env.daemon(spool__host_id="hostA", **budget)
    b = env.daemon(spool_dir=a.spool, spool__host_id="hostB", **budget)
    a.start()
    for i in range(3):
        a.submit(f"a{i}", {"prompt": f"spent on host A {i}"})
    for i in range(3):
        assert a.wait_finished(f"a{i}", 30) == "done", a.log()
    b.start()
    # A stopped before it can see the new ledger/: alive by its lock (lease_timeout 60 s).
    a.send_signal(signal.SIGSTOP)
    a_run, = ledger_files(a.path(), "hostA")   # its run's file, 0.03
    clear_ledger(a)
    nxt = "a call the budget has no room for"
    b.submit("next", {"prompt": nxt})
    waiting = f"'{os.path.basename(a_run)}' of a live host is not in it yet"
    wait_for(lambda: waiting in b.log() or env.fake.calls(nxt), 20,
             f"host B to wait for host A's ledger (log:\n{b.log()[-3000:]})")
    assert env.fake.calls(nxt) == 0, "host B called past the budget: it counted A's 0.03 as 0"
    a.send_signal(signal.SIGCONT)
    wait_for(lambda: "over its total daily budget" in b.log(), 30, "host B to count A's spend")
    assert env.fake.calls(nxt) == 0 and b.state("next") == "new", (b.state("next"), b.log())

    assert a.stop() == 0
    clear_ledger(a)
    wait_for(lambda: ledger_files(a.path(), "hostA", copies=True), 20,
             "host B to carry host A's run back")
    with open(a.path("ledger", ledger_files(a.path(), "hostA", copies=True)[0])) as f:
        doc = json.load(f)
    assert doc["carried_by"] == "hostB" and doc["providers"]["apiyi"]["day_micros"] == 30000, doc
    b.wait_rescans(3)
    assert env.fake.calls(nxt) == 0 and b.state("next") == "new", (b.state("next"), b.log())
    assert b.flushed_log().count(waiting) == 1, "host B waited for a host that left"
    assert b.stop() == 0


def let_ledger_writes_through(fifo, d):
    """Lets one thread held at the stop point (if any) go on; for wait_for's loops."""
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError as e:
        if e.errno != errno.ENXIO:   # none held now
            raise
    assert not d.exited(), d.log()[-2000:]


def threads_at_a_fifo(d):
    """The ids of daemon d's threads waiting at a FIFO (at its stop point: opening or reading
    it), by their wait channel."""
    pid = d._daemon_pid()
    tids = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/wchan") as f:
                wchan = f.read()
        except OSError:   # ended meanwhile
            continue
        if wchan == "wait_for_partner" or wchan.endswith("pipe_read"):
            tids.append(int(tid))
    return tids


def test_a_heartbeats_ledger_retry_holds_no_loop(env):
    """A failed ledger write keeps the call's ticket; a heartbeat tries the write again. That
    retry was made by the loop itself: with it stuck (ledger:writing, a stalled file server)
    the whole daemon stalled. Now a helper makes it: the loop answers a log mark meanwhile, and
    once the write is through the ticket goes and the cost is in the ledger once."""
    d = env.daemon(spool__concurrency=1, spool__lease_timeout=8, budget__daily="100", **PRICE)
    with full_ledger(d) as ledger:
        fifo = d.start_held_at("ledger:writing", wait_ready=False)
        wait_for(lambda: let_ledger_writes_through(fifo, d) or "imgspoold: ready" in d.log(), 20,
                 "the daemon to be ready")
        d.submit("unwritten", {"prompt": "a call whose cost the ledger cannot take yet"})
        kept = "its cost is not in the ledger yet: its ticket stays in calls/"
        wait_for(lambda: let_ledger_writes_through(fifo, d) or
                 (kept in d.log() and d.state("unwritten") == "done"), 20,
                 f"the call to end, its ticket kept (log:\n{d.log()[-3000:]})")
        assert len(own_tickets(d)) == 1, own_tickets(d)
        retry = held_at_stop(fifo, d)   # the next heartbeat's write, held in it
        os.unlink(os.path.join(ledger, "filler"))   # so that it works once let go
        try:
            d.log_barrier(timeout=10)   # the loop goes on meanwhile
            assert len(own_tickets(d)) == 1, own_tickets(d)
        finally:
            os.close(retry)
        wait_for(lambda: let_ledger_writes_through(fifo, d) or not own_tickets(d), 20,
                 "the write to release the ticket")
        assert ledger_spent(d.path()) == {"testhost": 10000}, ledger_spent(d.path())
        assert d.stop() == 0


def test_a_cancels_ledger_write_holds_no_loop(env):
    """An operator's cancel of a call in flight counts the call (billing unknown) on the loop,
    which wrote the ledger itself: with that write stuck (ledger:writing), the daemon stalled.
    Now a helper writes it: the loop answers a log mark meanwhile; the job fails cancelled once
    the ledger has the cost (its records count the call), which is there once, its ticket gone."""
    d = env.daemon(spool__concurrency=1, spool__lease_timeout=8, budget__daily="100", **PRICE)
    slow = "a call cancelled while the ledger is stuck"
    env.fake.script(slow, {"kind": "b64", "delay": 30})
    d.submit("slow", {"prompt": slow})
    fifo = d.start_held_at("ledger:writing", wait_ready=False)
    wait_for(lambda: let_ledger_writes_through(fifo, d) or env.fake.calls(slow) == 1, 20,
             "the slow call to start")
    os.makedirs(d.path("control"), exist_ok=True)
    with open(d.path("control", "cancel.slow"), "w"):
        pass
    d.wait_logged("slow cancelled by an operator: cutting the call in flight")
    writer = held_at_stop(fifo, d)
    try:
        d.log_barrier(timeout=10)   # the loop goes on meanwhile
        assert d.state("slow") == "running", d.state("slow")   # its records wait for the ledger
    finally:
        os.close(writer)
    assert d.wait_finished("slow") == "failed", d.log()
    wait_for(lambda: let_ledger_writes_through(fifo, d) or not own_tickets(d), 20,
             "the ticket to go")
    assert ledger_spent(d.path()) == {"testhost": 10000}, ledger_spent(d.path())
    assert d.stop() == 0


def test_a_restarts_ledger_write_holds_no_loop(env):
    """A restart records a call its run died in as interrupted (billing unknown) and counts it
    in the ledger, which the loop wrote itself: with that write stuck (ledger:writing), the
    daemon never got ready. Now a helper writes it: the daemon is ready meanwhile; the job goes
    back to new/ once the ledger has the cut call (its records count it), and the ledger holds
    it once beside the second call."""
    prompt = "a call its run died in, under a budget"
    env.fake.script(prompt, [{"kind": "b64", "delay": 60}, {"kind": "b64"}])
    d = env.daemon(budget__daily="100", **PRICE).start()
    d.submit("died", {"prompt": prompt})
    wait_for(lambda: env.fake.calls(prompt) == 1, 10, "the first call to be in flight")
    d.kill()
    fifo = d.start_held_at("ledger:writing", wait_ready=False)
    os.close(held_at_stop(fifo, d))   # its start-up write of its run's file (nothing spent)
    loop = d._daemon_pid()   # the main thread, the loop's
    wait_for(lambda: [tid for tid in threads_at_a_fifo(d) if tid != loop], 10,
             "the interrupted call's cost to be written by a helper, not by the loop")
    recorded = held_at_stop(fifo, d)
    try:
        wait_for(lambda: "imgspoold: ready" in d.log()[d.log_offset:], 10, "the daemon to be ready")
        d.log_barrier(timeout=10)
        assert d.state("died") == "running", d.state("died")   # its records wait for the ledger
    finally:
        os.close(recorded)
    wait_for(lambda: let_ledger_writes_through(fifo, d) or d.state("died") == "done", 30,
             f"the job to be called again (log:\n{d.log()[-3000:]})")
    outcomes = [a["outcome"] for a in d.result("died")["attempts"]]
    assert outcomes == ["interrupted", "succeeded"], outcomes
    assert ledger_spent(d.path()) == {"testhost": 20000}, ledger_spent(d.path())
    assert d.stop() == 0


if __name__ == "__main__":
    run_tests([
        test_no_call_under_a_budget_before_recovered_answers_are_billed,
        test_a_failed_ledger_write_keeps_the_ticket_until_a_write_works,
        test_the_loop_never_waits_for_a_helpers_ledger_write,
        test_a_cleared_ledger_never_counts_a_live_hosts_spend_as_0,
        test_a_heartbeats_ledger_retry_holds_no_loop,
        test_a_cancels_ledger_write_holds_no_loop,
        test_a_restarts_ledger_write_holds_no_loop,
    ])
