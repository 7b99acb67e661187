#!/usr/bin/env python3
"""Budgets across a restart and a failing ledger (spool-layout §17): at every moment each call
is counted, reserved or spent, so no budget is passed by more than the overshoot bound.

The windows are made deterministic with the daemon's test hooks: IMGSPOOLD_CRASH_AT kills it at
a point, IMGSPOOLD_STOP_AT with IMGSPOOLD_STOP_FIFO holds the one thread that reaches a point
until the test opens the FIFO (the loop goes on meanwhile)."""
import errno
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import run_tests, wait_for  # noqa: E402

PRICE = {"prices__gpt-image-2": "0.01"}


def release(fifo, d):
    """Lets the thread held at a stop point go: opening the FIFO to write wakes its reader."""
    def opened():
        assert not d.exited(), d.log()[-2000:]
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            return True
        except OSError as e:
            if e.errno != errno.ENXIO:   # no reader yet
                raise
            return False
    wait_for(opened, 20, "the held thread to wait at its stop point")


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
    fifo = os.path.join(d.dir, "stop.fifo")
    os.mkfifo(fifo)
    d.start(wait_ready=False, extra_env={"IMGSPOOLD_STOP_AT": "recovery:judge",
                                         "IMGSPOOLD_STOP_FIFO": fifo})
    waiting = "its calls wait until the cost of 1 answer(s) recovered from before the restart"
    wait_for(lambda: waiting in d.log() or env.fake.calls(nxt), 20,
             f"the next job to wait for the recovered answer (log:\n{d.log()[-3000:]})")
    assert env.fake.calls(nxt) == 0, "a call started before the recovered answer was billed"
    assert waiting in d.log(), d.log()
    release(fifo, d)
    assert d.wait_finished("saved") == "done", d.log()
    wait_for(lambda: "is over its total daily budget" in d.log(), 20, "the budget to stop the next job")
    assert env.fake.calls(nxt) == 0 and env.fake.calls(saved) == 1, d.log()
    assert d.state("next") == "new", d.state("next")
    assert d.stop() == 0


if __name__ == "__main__":
    run_tests([
        test_no_call_under_a_budget_before_recovered_answers_are_billed,
    ])
