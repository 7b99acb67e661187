#!/usr/bin/env python3
"""An operator's requests in control/ that outlived their job (spool-layout.md §15): a hold or
cancel whose job finished or is held is removed; one whose job is nowhere is removed once an
hour old; one whose job is live anywhere in the spool -- another host's running/ (seen through
an sshfs mount too), a publication's staging directory, deferred/ -- stays however old, and
ages are judged by the file server's clock, not by a host's own."""
import json
import os
import signal
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import clock_off_by, run_tests, wait_for  # noqa: E402

DAY = 86400


def request(d, name, age_s):
    """control/NAME, written as imgspool writes it, age_s seconds old."""
    os.makedirs(d.path("control"), exist_ok=True)
    path = d.path("control", name)
    with open(path, "w"):
        pass
    when = time.time() - age_s
    os.utime(path, (when, when))
    return path


def job_file(path, task_id, mtime=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"prompt": f"planted {task_id}"}, f)
    if mtime is not None:
        os.utime(path, (mtime, mtime))


def test_requests_that_outlived_their_job(env):
    d = env.daemon(spool__lease_timeout=4).start()
    d.submit("fin", {"prompt": "finished before its requests were seen"})
    assert d.wait_finished("fin") == "done"
    # done/ shows the job before the daemon is through with it: a request it reads by then is
    # its own job's, removed silently when the job leaves running/.
    wait_for(lambda: "fin done:" in d.log(), 10, "the daemon through with fin")
    future = time.time() + DAY   # leases that never run out while the test runs
    job_file(d.path("hold", "held1.json"), "held1")
    job_file(d.path("hold", "held2.json"), "held2")
    job_file(d.path("deferred", "live1.json"), "live1", future)
    job_file(d.path("running", "live2@elsewhere.json"), "live2", future)
    staging = d.path("running", ".pub1@elsewhere.done")
    job_file(os.path.join(staging, "pub1.json"), "pub1")
    os.utime(staging, (future, future))
    gone = [request(d, "hold.fin", 120), request(d, "cancel.fin", 120),
            request(d, "hold.held1", 120), request(d, "cancel.held2", 120),
            request(d, "cancel.ghost", 2 * 3600)]
    kept = [request(d, "cancel.live1", 2 * 3600), request(d, "hold.live2", 2 * 3600),
            request(d, "cancel.pub1", 2 * 3600),
            request(d, "hold.ghost2", 1800)]           # nowhere, but not an hour old
    wait_for(lambda: not any(os.path.exists(p) for p in gone), 30,
             f"the stale requests removed:\n{d.log()[-3000:]}")
    assert all(os.path.exists(p) for p in kept), [p for p in kept if not os.path.exists(p)]
    d.wait_logged("fin removed 'control/hold.fin': the job is finished")
    d.wait_logged("fin removed 'control/cancel.fin': the job is finished")
    d.wait_logged("held1 removed 'control/hold.held1': the job is held")
    d.wait_logged("held2 removed 'control/cancel.held2': the job is held")
    d.wait_logged("ghost warning: removed 'control/cancel.ghost': 120 minutes old, and no job "
                  "'ghost' anywhere in the spool")
    # The held job, the deferred one and the other host's are as they were.
    assert os.path.exists(d.path("hold", "held1.json"))
    assert os.path.exists(d.path("hold", "held2.json"))
    assert os.path.exists(d.path("running", "live2@elsewhere.json"))
    assert d.stop() == 0


def test_ages_by_the_file_servers_clock(env):
    """A host whose clock runs two hours ahead must not take a fresh request for an old one."""
    d = env.daemon(spool__lease_timeout=4, extra_env=clock_off_by(2 * 3600)).start()
    fresh = request(d, "cancel.soon", 0)
    old = request(d, "cancel.ghost", 2 * 3600)
    wait_for(lambda: not os.path.exists(old), 30, f"the old request removed:\n{d.log()[-3000:]}")
    assert os.path.exists(fresh), d.log()[-3000:]
    assert d.stop() == 0


def test_kept_while_its_job_runs_on_another_host(env):
    """Two daemons on two sshfs mounts of one spool: an old hold for a job running on one host
    is kept by both, while an old request for no job is removed."""
    with env.two_mounts() as mounts:
        export = os.path.join(mounts.export, "spool")
        settings = dict(spool__poll_interval=1, spool__lease_timeout=6)
        a = env.daemon(spool_dir=os.path.join(mounts.mount_a, "spool"), spool__host_id="hostA",
                       **settings).start()
        env.daemon(spool_dir=os.path.join(mounts.mount_b, "spool"), spool__host_id="hostB",
                   **settings).start()
        a.submit("slow", {"prompt": "a long call [fake:b64 delay=60]"})
        running = os.path.join(export, "running")
        wait_for(lambda: [n for n in os.listdir(running) if n.startswith("slow@")], 30,
                 "the job claimed")
        control = os.path.join(export, "control")
        when = time.time() - 2 * 3600
        for name in ("hold.slow", "cancel.ghost"):
            with open(os.path.join(control, name), "w"):
                pass
            os.utime(os.path.join(control, name), (when, when))
        wait_for(lambda: not os.path.exists(os.path.join(control, "cancel.ghost")), 40,
                 "the request for no job removed")
        assert [n for n in os.listdir(running) if n.startswith("slow@")], os.listdir(running)
        assert os.path.exists(os.path.join(control, "hold.slow")), "a running job's request went"


def test_honoured_at_the_claim(env):
    """A hold or cancel the daemon has read before it claims the job (asked while the job
    waited in new/ or deferred/, e.g. by an operator who saw it running on a host that then
    requeued it) is honoured without a call: before, the call went out and was cut at the next
    rescan, or, quick enough, was paid for and the job published as done."""
    d = env.daemon(spool__concurrency=1)
    for kind, task_id in (("cancel", "cx"), ("hold", "hx")):
        job_file(d.path("new", f"{task_id}.json"), task_id)
        request(d, f"{kind}.{task_id}", 0)
    d.start()   # reads control/ before its first claim
    d.submit("ok", {"prompt": "an ordinary job"})
    assert d.wait_finished("ok") == "done"
    assert d.wait_finished("cx") == "failed"
    assert d.result("cx")["error"]["code"] == "cancelled", d.result("cx")
    assert d.result("cx")["attempts"] == [], d.result("cx")
    wait_for(lambda: os.path.exists(d.path("hold", "hx.json")), 20,
             f"the held job in hold/:\n{d.log()[-3000:]}")
    # While it runs: the only slot is busy, a job and its cancel arrive, then the slot frees.
    d.submit("slow", {"prompt": "a long call [fake:b64 delay=60]"})
    wait_for(lambda: env.fake.calls("a long call [fake:b64 delay=60]"), 20, "the long call")
    d.submit("cy", {"prompt": "cancelled while waiting"})
    request(d, "cancel.cy", 0)
    request(d, "cancel.slow", 0)   # cuts the long call: the slot is free for cy
    assert d.wait_finished("cy") == "failed"
    assert d.result("cy")["error"]["code"] == "cancelled", d.result("cy")
    for prompt in ("planted cx", "planted hx", "cancelled while waiting"):
        assert env.fake.calls(prompt) == 0, f"{prompt!r} was sent upstream"
    # Fulfilled: the daemon that acted on them removed them.
    wait_for(lambda: not os.listdir(d.path("control")), 20,
             f"the requests removed: {os.listdir(d.path('control'))}")
    d.wait_logged("cx claimed: cancelled by an operator before its call")
    d.wait_logged("hx held by an operator before its call: new/ to hold/")
    assert d.stop() == 0


def test_a_job_replaced_while_claimed_is_cancelled_as_it_is_now(env):
    """A client replaced new/ID.json between the daemon's read and its claim, and ID had a
    cancel: the job failed with what was read before the replacement (its metadata in the
    result, those bytes as failed/ID.json), and the client's new file was lost. It goes back to
    new/ as the client wrote it, and its next claim cancels it as it is now."""
    d = env.daemon()
    os.makedirs(d.path("new"), exist_ok=True)
    with open(d.path("new", "rc.json"), "w") as f:
        json.dump({"prompt": "the first", "metadata": {"version": 1}}, f)
    request(d, "cancel.rc", 0)
    d.start(wait_ready=False, extra_env={"IMGSPOOLD_STOP_AT": "claim:read"})
    wait_for(d.stopped, 20, "the daemon to stop between its read and its claim")
    with open(d.path("tmp", "rc.json"), "w") as f:
        json.dump({"prompt": "the second", "metadata": {"version": 2}}, f)
    os.rename(d.path("tmp", "rc.json"), d.path("new", "rc.json"))

    def failed():   # it stops again before each read: let it go on each time
        if d.stopped():
            d.send_signal(signal.SIGCONT)
        return os.path.exists(d.path("failed", "rc.json"))
    wait_for(failed, 20, "rc in failed/")
    r = d.result("rc")
    assert r["error"]["code"] == "cancelled" and r["metadata"] == {"version": 2}, r
    with open(d.path("failed", "rc.json")) as f:
        assert json.load(f)["prompt"] == "the second"
    d.wait_logged("rc back to new/ (replaced while being claimed)")
    assert env.fake.calls("the first") == env.fake.calls("the second") == 0
    assert d.stop() == 0


def test_a_deferred_job_replaced_while_claimed_keeps_its_due_time(env):
    """Another host deferred deferred/ID.json again (a new file, its mtime the new due time)
    between this daemon's read and its claim: the replacement went to new/ with its mtime
    stamped "now" and was called at once, 60 s early. It goes back to deferred/ as written, its
    due time kept, and no call is made."""
    d = env.daemon()
    job_file(d.path("deferred", "rd.json"), "the first", mtime=time.time() - 5)
    d.start(wait_ready=False, extra_env={"IMGSPOOLD_STOP_AT": "claim:read"})
    wait_for(d.stopped, 20, "the daemon to stop between its read and its claim")
    due = int(time.time()) + 60
    job_file(d.path("tmp", "rd.json"), "the second", mtime=due)
    os.rename(d.path("tmp", "rd.json"), d.path("deferred", "rd.json"))

    def requeued():   # it stops again before each read: let it go on each time
        if d.stopped():
            d.send_signal(signal.SIGCONT)
        return "rd back to " in d.log()
    wait_for(requeued, 20, "rd requeued after its replacement")
    assert "rd back to deferred/ (replaced while being claimed)" in d.log(), d.log()[-3000:]
    assert os.stat(d.path("deferred", "rd.json")).st_mtime == due, os.listdir(d.path("deferred"))
    assert env.fake.calls("planted the first") == env.fake.calls("planted the second") == 0
    assert d.stop() == 0


def test_a_cancel_of_a_job_recovered_in_its_deferral_fails_it(env):
    """A kill -9 between the records of a deferral and its move (the job still in running/),
    then a cancel of the job: the restart deferred it again, to wait out its 10 minutes in
    deferred/, instead of failing it as cancelled, as a requeue does."""
    prompt = "deferred, killed, cancelled"
    env.fake.script(prompt, [{"kind": "429_retry_after", "retry_after": "600"}, "b64"])
    d = env.daemon()
    d.submit("dc", {"prompt": prompt})
    d.start(wait_ready=False, extra_env={"IMGSPOOLD_CRASH_AT": "move:rewritten"})
    wait_for(d.exited, 20, "the daemon to kill itself in the deferral")
    assert d.proc.returncode == -9, d.proc.returncode
    request(d, "cancel.dc", 0)
    d.start()
    assert d.wait_finished("dc") == "failed", d.log()[-3000:]
    r = d.result("dc")
    assert r["error"]["code"] == "cancelled" and len(r["attempts"]) == 1, r
    d.wait_logged("dc recovered in the middle of its deferral")
    assert env.fake.calls(prompt) == 1
    assert d.stop() == 0


if __name__ == "__main__":
    run_tests([test_requests_that_outlived_their_job, test_ages_by_the_file_servers_clock,
               test_kept_while_its_job_runs_on_another_host, test_honoured_at_the_claim,
               test_a_job_replaced_while_claimed_is_cancelled_as_it_is_now,
               test_a_deferred_job_replaced_while_claimed_keeps_its_due_time,
               test_a_cancel_of_a_job_recovered_in_its_deferral_fails_it])
