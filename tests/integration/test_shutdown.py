#!/usr/bin/env python3
"""The exit path: what a shutdown leaves when a thread of the daemon is stuck on the spool's file
system (a stalled NFS), and that an admin's restart never pays for a call again."""
import datetime
import errno
import json
import os
import signal
import subprocess
import time
import sys
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import TEST_KEY, cut_while_held, exit_within, held_at_stop, run_tests, wait_for  # noqa: E402
from harness import ledger_spent as harness_ledger_spent  # noqa: E402
from procstate import ended_but_its_close, sigterm_pending, stall_with_a_call_in_flight  # noqa: E402


def test_answer_stuck_in_its_write_is_not_paid_again(env):
    """A 200 received whole by libcurl's transfer thread, whose write into the job's .partial is
    stuck (the stop point http:body-write: a stalled NFS) when the grace period is cut. It was
    recorded as an interrupted call of unknown billing and requeued, so the restart called (and
    paid) again. Now it is on record as what it was (HTTP 200, billed yes, response_lost) and
    the job fails: the restart calls nothing."""
    # The body in one piece: libcurl reads it whole, then its one write is held.
    env.fake.script("whole but stuck", {"kind": "b64", "pieces": 1})
    d = env.daemon(**{"prices__gpt-image-2": "0.04"})
    fifo = d.start_held_at("http:body-write")
    d.submit("lost", {"prompt": "whole but stuck", "model": "gpt-image-2"})
    rc = cut_while_held(d, fifo, "the transfer thread is stuck writing a whole answer")
    assert rc == 0, (rc, d.log()[-2000:])
    assert d.state("lost") == "failed", (d.state("lost"), d.log()[-3000:])
    result = d.result("lost")
    assert result["error"]["code"] == "response_lost", result
    [a] = result["attempts"]
    assert (a["transport"], a["http_status"], a["billed"], a["outcome"], a["error_code"]) == \
        ("done", 200, "yes", "failed", "response_lost"), a
    assert a["cost"] == 0.04, a
    assert result["billed_attempts"] == 1 and result["cost"]["estimated"] is False, result
    assert not [n for n in os.listdir(d.path("running")) if n.startswith(".lost@")]
    d.start()
    wait_for(lambda: "ready" in d.log(), 10, "the restart")
    assert d.stop() == 0
    assert d.state("lost") == "failed"
    assert env.fake.calls("whole but stuck") == 1


def test_answer_whose_write_ends_at_the_cut_is_delivered(env):
    """The write of a whole 200 into its .partial ends just after the cut ran the answers handed
    over (http_deliver), before it walks the calls in flight: the transfer is on done, saved
    whole. It was cancelled as a lost answer (freed with its body) and the job failed
    response_lost, to be paid again by a retry. Now it is delivered: the job is done, one call."""
    env.fake.script("ends at the cut", {"kind": "b64", "pieces": 1})
    d = env.daemon(**{"prices__gpt-image-2": "0.04"})
    fifo = d.start_held_at("http:body-write,http:answer-done,dispatch:grace-cut")
    for point in ("http:answer-done", "dispatch:grace-cut"):
        os.mkfifo(f"{fifo}.{point}")
    d.submit("late", {"prompt": "ends at the cut", "model": "gpt-image-2"})
    body_write = held_at_stop(fifo, d)
    writers = [body_write]
    try:
        d.send_signal(signal.SIGTERM)
        wait_for(lambda: "waiting for 1 job(s)" in d.log(), 10, "the drain")
        d.send_signal(signal.SIGTERM)
        writers.append(held_at_stop(f"{fifo}.dispatch:grace-cut", d))   # the loop, in the cut
        os.close(writers.pop(0))   # the write ends: the answer is handed over, on done
        writers.append(held_at_stop(f"{fifo}.http:answer-done", d))
    finally:
        for w in writers:   # the loop walks the calls in flight now
            os.close(w)
    try:
        rc = d.proc.wait(20)
    except subprocess.TimeoutExpired:
        raise AssertionError("the daemon did not exit after the cut")
    d.logf.close()
    assert rc == 0, (rc, d.log()[-2000:])
    assert d.state("late") == "done", (d.state("late"), d.log()[-3000:])
    [a] = d.result("late")["attempts"]
    assert (a["transport"], a["http_status"], a["billed"]) == ("done", 200, "yes"), a
    assert env.fake.calls("ends at the cut") == 1


def open_gate(env):
    """A generation request of the test's own to the fake: opens a step's after_requests gate."""
    req = urllib.request.Request(
        env.fake.base_url + "/v1/images/generations",
        data=json.dumps({"model": "gpt-image-2", "prompt": "opens the gate"}).encode(),
        headers={"Authorization": "Bearer " + TEST_KEY, "Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=10).read()


def cut_call_as_it_ends(env, d, prompt, job, answer_point, stuck):
    """The cut walks the calls in flight with job's call not answered (held at dispatch:cut-call);
    meanwhile the fake answers it and the transfer thread reaches answer_point; then the cut goes
    on. The answer point's thread is let go of with it, or once the daemon exited if stuck.
    Returns the exit status."""
    fifo = d.start_held_at(f"dispatch:cut-call,{answer_point}")
    for point in ("dispatch:cut-call", answer_point):
        os.mkfifo(f"{fifo}.{point}")
    d.submit(job, {"prompt": prompt, "model": "gpt-image-2"})
    wait_for(lambda: env.fake.calls(prompt) == 1, 10, "the call to reach the fake")
    writers = []
    try:
        d.send_signal(signal.SIGTERM)
        wait_for(lambda: "waiting for 1 job(s)" in d.log(), 10, "the drain")
        d.send_signal(signal.SIGTERM)
        cut = held_at_stop(f"{fifo}.dispatch:cut-call", d)   # the loop: the call not answered
        writers.append(cut)
        open_gate(env)
        writers.append(held_at_stop(f"{fifo}.{answer_point}", d))   # its answer came
        for w in writers[:1 if stuck else 2]:   # the cut goes on
            os.close(w)
        writers = writers[1 if stuck else 2:]
        rc = exit_within(d, 20, "the answer ended in the cut", time.monotonic(), "the cut")
    finally:
        for w in writers:
            os.close(w)
    d.logf.close()
    return rc


def test_answer_that_ends_as_the_cut_cancels_its_call_is_delivered(env):
    """The cut found the call not answered, and the answer was handed over (whole, saved) before
    the cut cancelled it: the plain cancel freed a paid answer, the call was recorded
    interrupted and requeued, and the restart paid for it again. Now the cancel leaves a handed
    over answer to its delivery: the job is done with that one call."""
    gate = len(env.fake.snapshot()) + 2   # answered only once the test opens the gate
    env.fake.script("ends in the cut", {"kind": "b64", "pieces": 1, "after_requests": gate})
    d = env.daemon(**{"prices__gpt-image-2": "0.04"})
    rc = cut_call_as_it_ends(env, d, "ends in the cut", "window", "http:answer-done", False)
    assert rc == 0, (rc, d.log()[-2000:])
    d.start()
    wait_for(lambda: d.state("window") in ("done", "failed"), 20, "the job to end")
    assert d.stop() == 0
    assert env.fake.calls("ends in the cut") == 1
    assert d.state("window") == "done", (d.state("window"), d.log()[-3000:])
    result = d.result("window")
    [a] = result["attempts"]
    assert (a["transport"], a["http_status"], a["billed"]) == ("done", 200, "yes"), a
    assert result["billed_attempts"] == 1 and result["cost"]["estimated"] is False, result


def test_answer_that_arrives_as_the_cut_cancels_its_call_is_not_paid_again(env):
    """The cut found the call not answered; the whole answer then arrived and its write into the
    .partial stuck (http:body-write), before the cut cancelled it: recorded interrupted and
    requeued, it was paid again at the restart. Now the cut sees it answered, as one that
    arrived before the cut: billed, response_lost, never called again."""
    gate = len(env.fake.snapshot()) + 2
    env.fake.script("arrives in the cut", {"kind": "b64", "pieces": 1, "after_requests": gate})
    d = env.daemon(**{"prices__gpt-image-2": "0.04"})
    rc = cut_call_as_it_ends(env, d, "arrives in the cut", "stuck", "http:body-write", True)
    assert rc == 0, (rc, d.log()[-2000:])
    d.start()
    assert d.stop() == 0
    assert env.fake.calls("arrives in the cut") == 1
    assert d.state("stuck") == "failed", (d.state("stuck"), d.log()[-3000:])
    result = d.result("stuck")
    assert result["error"]["code"] == "response_lost", result
    [a] = result["attempts"]
    assert (a["transport"], a["http_status"], a["billed"], a["error_code"]) == \
        ("done", 200, "yes", "response_lost"), a
    assert result["billed_attempts"] == 1, result


def test_a_loop_stuck_after_the_cut_does_not_hang_the_exit(env):
    """The whole spool stalled: the loop itself is stuck in the cut (held at dispatch:grace-cut,
    as in a write to the spool), so it reads no signal. Only SIGKILL ended it. Now the exit is
    bounded (exitwatch): it ends with status 1, the spool as a crash leaves it, and the restart
    finishes the job."""
    env.fake.script("loop stuck", {"kind": "b64", "pieces": 1})
    d = env.daemon()
    fifo = d.start_held_at("http:body-write,dispatch:grace-cut")
    os.mkfifo(f"{fifo}.dispatch:grace-cut")
    d.submit("stuck", {"prompt": "loop stuck"})
    writers = [held_at_stop(fifo, d)]
    try:
        d.send_signal(signal.SIGTERM)
        wait_for(lambda: "waiting for 1 job(s)" in d.log(), 10, "the drain")
        cut_at = time.monotonic()
        d.send_signal(signal.SIGTERM)
        writers.append(held_at_stop(f"{fifo}.dispatch:grace-cut", d))
        d.send_signal(signal.SIGTERM)   # a third one: read by nobody
        rc = exit_within(d, 40, "its loop was stuck in the cut", cut_at, "the cut")
        took = time.monotonic() - cut_at
    finally:
        for w in writers:
            os.close(w)
    d.logf.close()
    assert rc == 1, (rc, d.log()[-2000:])
    # The cut's bound, 6 s (15 s before the exit's waits ran at once): what imgspoold(8) says.
    # The daemon says which bound ended it, and how long it was: the judge, not the wall
    # clock (a loaded machine only makes the exit later). took: the bound ran in full.
    assert "the exit did not end 6 s after the cut" in d.log(), d.log()[-2000:]
    assert took > 5.5, took
    d.start()
    assert d.wait_finished("stuck") == "done", d.log()[-3000:]
    assert d.stop() == 0


def test_a_loop_stuck_before_the_cut_does_not_hang_the_exit(env):
    """The spool's file server stops answering (the sshfs of its mount stopped) with a call in
    flight: the loop sticks in a file operation (a rescan's openat, a heartbeat) before any
    signal. Signals were read by the loop alone: the first SIGTERM stayed pending, the second
    was lost with it, and the daemon went on for ever. Now a thread of its own takes them and
    bounds the exit from the signal: 6 s after the second one it ends with status 1, the spool
    as a crash leaves it, and the restart finishes the job."""
    env.fake.script("stalled spool", [{"kind": "b64", "delay": 60}, {"kind": "b64"}])
    with env.two_mounts() as mounts:
        d, sshfs = stall_with_a_call_in_flight(env, mounts, "stalled", "stalled spool",
                                               spool__grace_period=3, spool__lease_timeout=8)
        pid = d.proc.pid
        try:
            d.send_signal(signal.SIGTERM)
            # Standard signals do not queue: the second counts only once the first is taken.
            wait_for(lambda: not sigterm_pending(pid), 10,
                     "the first SIGTERM to be taken (the loop, stuck, reads no signal)")
            second_at = time.monotonic()
            d.send_signal(signal.SIGTERM)
            wait_for(lambda: d.exited() or ended_but_its_close(pid), 30,
                     "the daemon to end while its loop was stuck before the cut")
            print(f"# ended {time.monotonic() - second_at:.2f} s after the second SIGTERM, its "
                  f"loop stuck on the stalled spool")
        finally:
            os.kill(sshfs.pid, signal.SIGCONT)
        rc = exit_within(d, 20, "its files on the spool were closed", second_at,
                         "the second SIGTERM")
        d.logf.close()
        assert rc == 1, (rc, d.log()[-2000:])
        assert "the exit did not end 6 s after the cut" in d.log(), d.log()[-2000:]
        assert "shutting down" not in d.log(), d.log()[-2000:]   # the loop never got there
        d.start()
        assert d.wait_finished("stalled", 30) == "done", d.log()[-3000:]
        assert d.stop() == 0
        assert env.fake.calls("stalled spool") == 2

def test_exit_does_not_hang_on_the_host_lock(env):
    """The clean exit removes running/.host.HOST; on a stalled NFS that unlink hung the exit for
    ever (the stop point hostlock:release holds it). Now it is waited for 2 s: the lock is left,
    as a crash leaves it, and the restart replaces it at once (its process is gone)."""
    d = env.daemon()
    fifo = d.start_held_at("hostlock:release")
    d.submit("before", {"prompt": "before the stop"})
    assert d.wait_finished("before") == "done"
    d.send_signal(signal.SIGTERM)
    writer = held_at_stop(fifo, d)
    try:
        rc = exit_within(d, 20, "removing its host lock was stuck", time.monotonic(), "SIGTERM")
    finally:
        os.close(writer)
    d.logf.close()
    assert rc == 0, (rc, d.log()[-2000:])
    assert "cannot remove the host lock 'running/.host.testhost' within 2000 ms" in d.log()
    assert os.path.exists(d.path("running", ".host.testhost"))
    d.start()
    d.submit("after", {"prompt": "after the restart"})
    assert d.wait_finished("after") == "done"
    assert d.stop() == 0
    assert not os.path.exists(d.path("running", ".host.testhost"))


def test_a_stderr_nobody_reads_stops_nothing(env):
    """stderr a pipe that is full and that nobody reads (a stuck journal): a thread that wrote
    the log blocked in that write, the loop too when its lines came first, so the daemon stopped
    claiming and finishing jobs (on the code before, already at its first line). Now only the
    log's own writer waits there: every job is claimed and done, and the exit waits for that
    writer 2 s at most."""
    env.fake.default = {"kind": "b64"}
    d = env.daemon(verbose=True)   # many lines: past the 1 MiB kept, some are dropped
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        try:
            while True:
                os.write(w, b"x" * 4096)
        except BlockingIOError:
            pass
        os.set_blocking(w, True)
        d.start(wait_ready=False, stderr=w)
        ids = [f"quiet{i}" for i in range(30)]
        for task_id in ids:
            d.submit(task_id, {"prompt": f"logged into a full pipe {task_id}"})
        for task_id in ids:
            assert d.wait_finished(task_id, 30) == "done", task_id
        stopped_at = time.monotonic()
        d.send_signal(signal.SIGTERM)
        try:
            rc = d.proc.wait(20)
        except subprocess.TimeoutExpired:
            raise AssertionError("the daemon did not exit while stderr took nothing")
        print(f"# {len(ids)} jobs done, exited {time.monotonic() - stopped_at:.2f} s after "
              "SIGTERM, stderr a full pipe")
        d.logf.close()
        assert rc == 0, rc
    finally:
        os.close(w)
        os.close(r)


def ledger_spent(d):
    """What the host's runs' ledger files say it spent today (micro-units), 0 without one."""
    return harness_ledger_spent(d.path()).get("testhost", 0)


BUDGETED = {"prices__gpt-image-2": "0.04", "budget__daily": "100"}


def start_with_ledger_held(d, points):
    """Starts d held at points, ledger:writing among them on a FIFO of its own: the writes of
    the ledger made before the daemon is ready (with nothing spent) are let through. Returns
    the FIFO's path."""
    fifo = os.path.join(d.dir, "stop.fifo")
    os.mkfifo(fifo)
    os.mkfifo(f"{fifo}.ledger:writing")
    d.start_held_at(points + ",ledger:writing", wait_ready=False)

    def ready():
        try:
            os.close(os.open(f"{fifo}.ledger:writing", os.O_WRONLY | os.O_NONBLOCK))
        except OSError as e:
            if e.errno != errno.ENXIO:
                raise
        assert not d.exited(), d.log()[-2000:]
        return "imgspoold: ready" in d.log()
    wait_for(ready, 20, "the daemon to be ready")
    return fifo


def test_a_ledger_write_stuck_at_the_cut_holds_no_loop(env):
    """Under a budget, the cost of an answer lost at the cut (its write into the .partial stuck,
    http:body-write) went into the ledger by a write the loop made itself: with that write stuck
    too (ledger:writing, a stalled disk), the loop read nothing more until exitwatch ended the
    process 15 s after the cut with status 1, and the restart paid for the call again. Now a
    helper makes that write: the loop keeps its bounded waits and exits 0 about 2 s after the
    cut; the job, left as a crash leaves it, is marked answered, so the restart fails it
    response_lost with no second call, and its cost is in the ledger once."""
    env.fake.script("lost, ledger stuck", {"kind": "b64", "pieces": 1})
    d = env.daemon(**BUDGETED)
    fifo = start_with_ledger_held(d, "http:body-write")
    d.submit("stuckbill", {"prompt": "lost, ledger stuck", "model": "gpt-image-2"})
    rc = cut_while_held(d, fifo, "the ledger write of a lost answer was stuck",
                        held_after_cut=f"{fifo}.ledger:writing", timeout=40)
    assert rc == 0, (rc, d.log()[-2000:])
    assert "the exit did not end" not in d.log(), d.log()[-2000:]
    assert d.state("stuckbill") == "running"
    assert [n for n in os.listdir(d.path("running")) if ".answered.1.200." in n], \
        os.listdir(d.path("running"))
    d.start()
    assert d.wait_finished("stuckbill") == "failed", d.log()[-3000:]
    assert d.result("stuckbill")["error"]["code"] == "response_lost"
    [a] = d.result("stuckbill")["attempts"]
    assert (a["http_status"], a["billed"], a["error_code"]) == (200, "yes", "response_lost"), a
    assert d.stop() == 0
    assert env.fake.calls("lost, ledger stuck") == 1
    assert ledger_spent(d) == 40000, ledger_spent(d)


def test_a_cut_calls_cost_is_written_off_the_loop(env):
    """Under a budget, a call cut in flight is settled at its reservation, which went into the
    ledger by a write the loop made (task_free): stuck (ledger:writing), it held the loop till
    exitwatch's status 1. Now a helper writes it; the exit is 0 and bounded, and the restart
    counts the cut call once (interrupted, billing unknown) and calls again."""
    env.fake.script("cut, ledger stuck", [{"kind": "b64", "delay": 60}, {"kind": "b64"}])
    d = env.daemon(provider__timeout=120, **BUDGETED)
    fifo = start_with_ledger_held(d, "none")
    d.submit("cutbill", {"prompt": "cut, ledger stuck", "model": "gpt-image-2"})
    wait_for(lambda: env.fake.inflight >= 1, 10, "the call")
    rc = cut_while_held(d, None, "the ledger write of a cut call was stuck",
                        held_after_cut=f"{fifo}.ledger:writing", timeout=40)
    assert rc == 0, (rc, d.log()[-2000:])
    assert "the exit did not end" not in d.log(), d.log()[-2000:]
    assert ledger_spent(d) == 0, ledger_spent(d)
    d.start()
    assert d.wait_finished("cutbill", 30) == "done", d.log()[-3000:]
    outcomes = [a["outcome"] for a in d.result("cutbill")["attempts"]]
    assert outcomes == ["interrupted", "succeeded"], outcomes
    assert d.stop() == 0
    assert ledger_spent(d) == 80000, ledger_spent(d)   # the cut call once, and the second


def test_costs_settled_at_the_cut_are_in_the_ledger_once(env):
    """The same two costs with nothing stuck but the lost answer's write: written by a helper
    now, each is in the ledger exactly once when the daemon has exited, and no ticket is left."""
    env.fake.script("lost, budgeted", {"kind": "b64", "pieces": 1})
    env.fake.script("cut, budgeted", {"kind": "b64", "delay": 60})
    d = env.daemon(provider__timeout=120, **BUDGETED)
    fifo = d.start_held_at("http:body-write")
    d.submit("cutonce", {"prompt": "cut, budgeted", "model": "gpt-image-2"})
    wait_for(lambda: env.fake.inflight >= 1, 10, "the cut call")
    d.submit("lostonce", {"prompt": "lost, budgeted", "model": "gpt-image-2"})
    rc = cut_while_held(d, fifo, "an answer's write is stuck", jobs=2)
    assert rc == 0, (rc, d.log()[-2000:])
    assert d.state("lostonce") == "failed" and d.state("cutonce") == "new", d.log()[-3000:]
    assert ledger_spent(d) == 80000, ledger_spent(d)
    assert os.listdir(d.path("providers", "apiyi", "calls")) == []


def test_a_helper_stuck_saving_a_whole_answer_is_not_paid_again(env):
    """A whole 200 handed to a helper that is stuck making it durable (save:partial: an fsync
    on a stalled disk) when the grace period is cut: the exit left the job as a crash leaves
    it, its .partial not renamed, and the restart recorded an interrupted call and paid again.
    Now the exit marks it answered (.answered.1.200.BYTES, off the loop) and the restart,
    finding the .partial whole, finishes the job from it: one call, no death counted."""
    env.fake.script("saved late", {"kind": "b64"})
    d = env.daemon()
    fifo = d.start_held_at("save:partial")
    d.submit("savelate", {"prompt": "saved late"})
    rc = cut_while_held(d, fifo, "a helper is stuck saving a whole answer")
    assert rc == 0, (rc, d.log()[-2000:])
    assert d.state("savelate") == "running"
    marks = [n for n in os.listdir(d.path("running")) if n.startswith(".savelate@testhost.answered.1.200.")]
    assert marks, os.listdir(d.path("running"))
    d.start()
    assert d.wait_finished("savelate") == "done", d.log()[-3000:]
    assert d.stop() == 0
    assert env.fake.calls("saved late") == 1
    assert records_of(d, "savelate", "done").get("crashes", 0) == 0, records_of(d, "savelate", "done")
    assert not [n for n in os.listdir(d.path("running")) if n.startswith(".savelate@")]


def logged_at(d, text):
    """The time (seconds, from the stamp of the log's line) of the first line holding text."""
    for line in d.raw_log().splitlines():
        if text in line:
            stamp = line.split(" ", 1)[0]
            return datetime.datetime.fromisoformat(stamp).timestamp()
    raise AssertionError(f"no line with {text!r} in the log:\n{d.log()[-3000:]}")


def test_the_exits_waits_run_at_once(env):
    """Two threads stuck at the exit on a stalled disk: libcurl's, writing a cut call's body
    (http:body-write), and the removal of the host lock (hostlock:release). The exit waited
    for one 2 s, then started the other and waited 2 s more: its waits added up (about 10 s
    with every one stuck). Now they run at once and share one deadline: both are given up at
    the same moment, 2 s after the loop ended."""
    env.fake.script("stuck at its write", [{"kind": "tail_stall", "stall": 60}, {"kind": "b64"}])
    d = env.daemon()
    fifo = d.start_held_at("http:body-write,hostlock:release")
    os.mkfifo(f"{fifo}.hostlock:release")
    d.submit("both", {"prompt": "stuck at its write"})
    rc = cut_while_held(d, fifo, "libcurl's thread and the host lock's removal were stuck",
                        held_after_cut=f"{fifo}.hostlock:release")
    assert rc == 0, (rc, d.log()[-2000:])
    http_given_up = logged_at(d, "libcurl's transfer thread has not ended")
    lock_given_up = logged_at(d, "cannot remove the host lock")
    print(f"# given up {lock_given_up - http_given_up:.3f} s apart")
    assert abs(lock_given_up - http_given_up) < 1, (http_given_up, lock_given_up, d.log()[-2000:])
    assert d.state("both") == "new"
    d.start()
    assert d.wait_finished("both", 30) == "done", d.log()[-2000:]
    assert d.stop() == 0


def records_of(d, task_id, state):
    with open(d.path(state, f"{task_id}.json")) as f:
        return json.load(f)["imgspool"]


def test_a_publication_stuck_at_the_cut_is_left_without_a_death(env):
    """An I/O helper stuck in a job's publication (the stop point publish:staging: a stalled
    NFS) when the grace period is cut: the drain waited for it for ever. Now the exit waits
    2 s, marks the job left (its response is saved) and ends as a crash would; the restart
    publishes it from that response, with no call and no death counted."""
    env.fake.default = {"kind": "b64"}
    d = env.daemon()
    fifo = d.start_held_at("publish:staging")
    d.submit("stuckpub", {"prompt": "published on a stalled disk"})
    rc = cut_while_held(d, fifo, "an I/O helper is stuck in a publication")
    assert rc == 0, (rc, d.log()[-2000:])
    assert "not done 2000 ms after the grace period's cut" in d.log(), d.log()[-2000:]
    assert d.state("stuckpub") == "running"
    assert os.path.exists(d.path("running", ".stuckpub@testhost.left.1")), \
        os.listdir(d.path("running"))
    d.start()
    assert d.wait_finished("stuckpub") == "done", d.log()[-2000:]
    assert d.stop() == 0
    assert env.fake.calls("published on a stalled disk") == 1
    assert records_of(d, "stuckpub", "done").get("crashes", 0) == 0, records_of(d, "stuckpub", "done")


def test_marking_jobs_left_does_not_hang_the_exit(env):
    """A job the shutdown leaves in running/ (its image still downloading) is marked left at
    the exit, on a thread waited for 2 s at most: held there (sidecar:left, a stalled disk),
    the exit goes on without the mark, and the restart counts the death it cannot tell from a
    crash. On the code before, the mark was made on the loop, which a stalled disk held."""
    env.fake.script("slow image", [{"kind": "url", "url_hang_downloads": 1}])
    d = env.daemon(spool__grace_period=1, limits__download_timeout=600)
    fifo = d.start_held_at("sidecar:left")
    d.submit("slowmark", {"prompt": "slow image"})
    wait_for(lambda: env.fake.downloads, 10, "the download to start")
    d.send_signal(signal.SIGTERM)
    writer = held_at_stop(fifo, d)
    try:
        try:
            rc = d.proc.wait(20)
        except subprocess.TimeoutExpired:
            raise AssertionError("the daemon did not exit while marking a job left was stuck")
    finally:
        os.close(writer)
    d.logf.close()
    assert rc == 0, (rc, d.log()[-2000:])
    assert "cannot mark 1 job(s) left in running/ within 2000 ms" in d.log(), d.log()[-2000:]
    assert d.state("slowmark") == "running"
    assert not [n for n in os.listdir(d.path("running")) if ".left." in n]
    d.start()
    assert d.wait_finished("slowmark") == "done", d.log()[-2000:]
    assert d.stop() == 0
    assert env.fake.calls("slow image") == 1
    assert records_of(d, "slowmark", "done").get("crashes") == 1


if __name__ == "__main__":
    run_tests([test_answer_stuck_in_its_write_is_not_paid_again,
               test_answer_whose_write_ends_at_the_cut_is_delivered,
               test_answer_that_ends_as_the_cut_cancels_its_call_is_delivered,
               test_answer_that_arrives_as_the_cut_cancels_its_call_is_not_paid_again,
               test_a_loop_stuck_after_the_cut_does_not_hang_the_exit,
               test_a_loop_stuck_before_the_cut_does_not_hang_the_exit,
               test_exit_does_not_hang_on_the_host_lock,
               test_a_stderr_nobody_reads_stops_nothing,
               test_a_publication_stuck_at_the_cut_is_left_without_a_death,
               test_a_ledger_write_stuck_at_the_cut_holds_no_loop,
               test_a_cut_calls_cost_is_written_off_the_loop,
               test_costs_settled_at_the_cut_are_in_the_ledger_once,
               test_a_helper_stuck_saving_a_whole_answer_is_not_paid_again,
               test_the_exits_waits_run_at_once,
               test_marking_jobs_left_does_not_hang_the_exit])
