#!/usr/bin/env python3
"""A job put back into new/ (imgspool retry, or by hand) holds its finished run's records. Its
claim makes the new run's records durable beside it in running/ before the claim's rename
(running/.ID@HOST.putback.D.INODE), and puts them in place after: a kill at any point of that
claim leaves something the restart recognises, and the job runs its new run (spool-layout.md §4,
§10). Before, a kill between the rename and the rewrite of the records left the old run's
"finished" in running/ with nothing staged, and the restart failed the job publish_failed."""
import errno
import json
import os
import signal
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import cli, held_at_stop, run_tests, wait_for  # noqa: E402
from test_publish import put_back  # noqa: E402


def putback_files(d):
    return [n for n in os.listdir(d.path("running")) if ".putback." in n]


def a_done_job(env, d, task_id, prompt):
    """task_id run once (succeeded, the fake called once), the daemon stopped, then put back."""
    env.fake.script(prompt, ["b64", "b64"])
    d.start()
    d.submit(task_id, {"prompt": prompt})
    assert d.wait_finished(task_id) == "done"
    first = d.result(task_id)
    assert d.stop() == 0
    put_back(d, task_id)
    return first


def a_done_job_and_a_second_retry(env, d, task_id, prompt, other):
    """a_done_job, and the file of a second retry of it: another finished job file of the id,
    with prompt other, to replace new/ID.json with (replace_in_new)."""
    first = a_done_job(env, d, task_id, prompt)
    env.fake.script(other, ["b64"])
    replacement = json.loads(d.read("new", task_id + ".json"))
    replacement["prompt"] = other
    return first, replacement


def replace_in_new(d, task_id, job):
    with open(d.path("tmp", task_id + ".json"), "w") as f:
        json.dump(job, f)
    os.rename(d.path("tmp", task_id + ".json"), d.path("new", task_id + ".json"))


def assert_new_run(env, d, task_id, prompt, first):
    """The job ran its new run: called again (once), a new image and result in done/ listing
    only the new run's attempt, the first run kept in the records' history."""
    assert d.wait_finished(task_id, 30) == "done", d.log()[-3000:]
    assert env.fake.calls(prompt) == 2, (env.fake.calls(prompt), d.log()[-3000:])
    r = d.result(task_id)
    assert r["status"] == "succeeded" and r["images"] == [task_id + ".png"], r
    assert [a["outcome"] for a in r["attempts"]] == ["succeeded"], r["attempts"]
    assert r["updated_at"] != first["updated_at"], "the first run's result is still there"
    assert d.read("done", task_id + ".png").startswith(b"\x89PNG")
    records = json.loads(d.read("done", task_id + ".json"))["imgspool"]
    assert [run["status"] for run in records["runs"]] == ["succeeded"], records
    assert records["runs_total"] == 1 and records["finished"] == "succeeded", records
    d.assert_not_logged("publish_failed")
    assert putback_files(d) == [], putback_files(d)


# Every step of a put-back claim where a kill leaves another state on disk: the claim made (the
# old records in running/, the new ones beside them), the new run's records durable beside the
# job not claimed yet, the new records in place.
POINTS = ["claim:claimed", "claim:putback-written", "claim:putback-recorded"]


def test_a_kill_at_each_step_of_a_put_back_claim_runs_the_new_run(env):
    for point in POINTS:
        task_id = "pb-" + point.split(":")[1]
        prompt = f"put back, killed at {point}"
        d = env.daemon()
        first = a_done_job(env, d, task_id, prompt)
        d.start_to_crash(point)
        print(f"# {point}: running/ holds {sorted(os.listdir(d.path('running')))}")
        d.start()
        assert_new_run(env, d, task_id, prompt, first)
        assert d.stop() == 0


def test_a_kill_while_the_new_run_is_written_beside_the_job_runs_it(env):
    """Killed in the write of the new run's records (the file beside the job half-written, the
    job not claimed): the restart removes that file, and the job, still in new/, runs its new
    run."""
    prompt = "put back, killed writing its new run"
    d = env.daemon()
    first = a_done_job(env, d, "pw", prompt)
    ino = os.stat(d.path("new", "pw.json")).st_ino
    name = f".pw@testhost.putback.n.{ino:x}"
    trace = os.path.join(d.dir, "strace.log")
    d.wrapper = ["strace", "-f", "-qq", "-o", trace, "-P", os.path.join(d.path("running"), name),
                 "-e", "trace=write", "-e", "inject=write:signal=KILL:when=1"]
    d.start(wait_ready=False)
    wait_for(d.exited, 30, "the daemon to be killed in its write")
    with open(trace) as f:
        assert "+++ killed by SIGKILL +++" in f.read()
    assert name in os.listdir(d.path("running")), os.listdir(d.path("running"))
    assert os.path.exists(d.path("new", "pw.json"))
    d.wrapper = []
    d.start()
    assert_new_run(env, d, "pw", prompt, first)
    assert d.stop() == 0


def killed_after_claiming_its_replacement(env, d, task_id, prompt, other):
    """task_id done and put back, read, then replaced in new/ by a second retry of it (prompt
    other) before the claim, and the daemon killed right after its claim: the new run written
    beside the job is the first file's, not the one claimed. Returns the first run's result."""
    first, replacement = a_done_job_and_a_second_retry(env, d, task_id, prompt, other)
    d.start(wait_ready=False, extra_env={"IMGSPOOLD_STOP_AT": "claim:read",
                                         "IMGSPOOLD_CRASH_AT": "claim:claimed"})
    wait_for(d.stopped, 20, "the daemon to stop between its read and its claim")
    replace_in_new(d, task_id, replacement)
    d.proc.send_signal(signal.SIGCONT)
    wait_for(d.exited, 20, "the daemon to kill itself after its claim")
    assert d.proc.returncode == -9, d.log()[-2000:]
    print(f"# running/ holds {sorted(os.listdir(d.path('running')))}")
    return first


def assert_replacement_ran(env, d, task_id, prompt, other, first):
    """The second retry went back to new/ as it was and ran its own new run; the first file's
    new run was never used."""
    assert d.wait_finished(task_id, 30) == "done", d.log()[-3000:]
    assert env.fake.calls(other) == 1 and env.fake.calls(prompt) == 1, d.log()[-3000:]
    r = d.result(task_id)
    assert [a["outcome"] for a in r["attempts"]] == ["succeeded"] and r != first, r
    job = json.loads(d.read("done", task_id + ".json"))
    assert job["prompt"] == other, job
    assert [run["status"] for run in job["imgspool"]["runs"]] == ["succeeded"], job
    d.wait_logged("back to new/ (its claim took a file that replaced the one read)")
    d.assert_not_logged("publish_failed")
    assert putback_files(d) == []


def test_a_put_back_replaced_before_its_claim_and_killed_runs_what_replaced_it(env):
    """killed_after_claiming_its_replacement: the restart puts the claimed file back in new/ as
    it is, and it runs its own new run."""
    prompt, other = "put back, then replaced", "the replacement"
    d = env.daemon()
    first = killed_after_claiming_its_replacement(env, d, "pr", prompt, other)
    d.start()
    assert_replacement_ran(env, d, "pr", prompt, other, first)
    assert d.stop() == 0


def test_a_replacement_the_restart_cannot_move_back_is_not_adopted_before_it_is(env):
    """killed_after_claiming_its_replacement, and at the restart the move of the claimed file
    back to new/ fails (EIO): the file beside it was removed all the same and the job adopted,
    its file saying its run finished: failed publish_failed, never called. Both now stay and
    the job is not adopted until the move is made (at the next rescan), then runs its own new
    run."""
    prompt, other = "put back, replaced, the restart's move back refused", "its second retry"
    d = env.daemon()
    first = killed_after_claiming_its_replacement(env, d, "pq", prompt, other)
    trace = traced(d, "pq.json", "-e", "trace=renameat2",   # new/pq.json, the move back
                   "-e", "inject=renameat2:error=EIO:when=1")
    d.start()
    assert_replacement_ran(env, d, "pq", prompt, other, first)
    assert in_trace(trace, "(INJECTED)")
    d.wait_logged("pq error: cannot move 'running/pq@testhost.json' back to new/pq.json")
    assert d.stop() == 0


def test_a_job_left_in_running_says_so_once_however_many_rescans_fail_to_move_it(env):
    """As above, the move back failing at the restart and at the next three rescans (EIO): its
    error was logged at each (every poll_interval, for as long as the move fails). It is now
    said once, and once more only when it changes, and one line says when it is settled, after
    how many retries."""
    prompt, other = "put back, replaced, the move back refused four times", "its second retry"
    d = env.daemon(verbose=True)
    first = killed_after_claiming_its_replacement(env, d, "pl", prompt, other)
    trace = traced(d, "pl.json", "-e", "trace=renameat2",   # new/pl.json, the move back
                   "-e", "inject=renameat2:error=EIO:when=1..4")
    d.start()
    assert_replacement_ran(env, d, "pl", prompt, other, first)
    with open(trace) as f:
        assert f.read().count("(INJECTED)") == 4
    d.wait_logged("pl no longer left in running/: settled after 3 retries")
    log = d.flushed_log()
    said = [line for line in log.splitlines() if line.startswith("pl error:")]
    assert said == ["pl error: cannot move 'running/pl@testhost.json' back to new/pl.json: "
                    "Input/output error; not recovered until it is (tried again at the next "
                    "rescan)"], said
    assert d.stop() == 0


def test_a_replacement_moved_back_to_deferred_at_a_rescan_is_claimed_when_due(env):
    """As above, from deferred/: a job put back there, replaced before its claim by a second
    retry, the daemon killed after the claim; at the restart the first move of the claimed file
    back to deferred/ fails (EIO: an EEXIST now tries the id's other name there), the rescan's
    goes through. That move did not count the job
    nor wake the deferral timer, so the job, due already, waited for the next listing of
    deferred/ (a poll_interval later); it is now claimed at once, as after a claim's move back."""
    prompt, other = "put back to deferred/, replaced, moved back at a rescan", "its third retry"
    d = env.daemon(spool__poll_interval=60)
    first, replacement = a_done_job_and_a_second_retry(env, d, "pv", prompt, other)
    old = time.time() - 60
    os.rename(d.path("new", "pv.json"), d.path("deferred", "pv.json"))
    os.utime(d.path("deferred", "pv.json"), (old, old))
    d.start(wait_ready=False, extra_env={"IMGSPOOLD_STOP_AT": "claim:read",
                                         "IMGSPOOLD_CRASH_AT": "claim:claimed"})
    wait_for(d.stopped, 20, "the daemon to stop between its read and its claim")
    with open(d.path("tmp", "pv.json"), "w") as f:
        json.dump(replacement, f)
    os.utime(d.path("tmp", "pv.json"), (old, old))
    os.rename(d.path("tmp", "pv.json"), d.path("deferred", "pv.json"))
    d.proc.send_signal(signal.SIGCONT)
    wait_for(d.exited, 20, "the daemon to kill itself after its claim")
    assert d.proc.returncode == -9, d.log()[-2000:]
    trace = traced(d, "pv.json", "-e", "trace=renameat2",   # deferred/pv.json, the move back
                   "-e", "inject=renameat2:error=EIO:when=1")
    d.start()
    wait_for(lambda: "back to deferred/ (its claim took a file that replaced the one read)"
             in d.log(), 20, "the move back to deferred/")
    assert in_trace(trace, "(INJECTED)")
    d.wait_logged("pv error: cannot move 'running/pv@testhost.json' back to deferred/pv.json")
    # Well before the next rescan (60 s).
    assert d.wait_finished("pv", 20) == "done", d.log()[-3000:]
    assert env.fake.calls(other) == 1 and env.fake.calls(prompt) == 1, d.log()[-3000:]
    assert d.result("pv")["attempts"][0]["outcome"] == "succeeded"
    assert putback_files(d) == []
    assert d.stop() == 0


def test_a_job_of_a_dead_host_is_never_reclaimed_over_a_replacement_left_in_running(env):
    """killed_after_claiming_its_replacement, and at the restart the move of the claimed file
    back to new/ fails (EIO), so it stays in running/ to be settled at the next rescan; a dead
    host's claim of a third version of the id is in running/ too, its lease run out. The
    rescan reclaimed that job by renaming it over the file left here: the second retry was
    never run. The reclaim now waits until the file left here is settled; then each runs once."""
    prompt, other, third = "put back, replaced, a dead host's too", "its second retry", "a third"
    d = env.daemon()
    first = killed_after_claiming_its_replacement(env, d, "pz", prompt, other)
    env.fake.script(third, ["b64"])
    dead = d.path("running", "pz@deadhost.json")
    with open(dead, "w") as f:
        json.dump({"prompt": third}, f)
    old = time.time() - 3600
    os.utime(dead, (old, old))
    trace = traced(d, "pz.json", "-e", "trace=renameat2",   # new/pz.json, the move back
                   "-e", "inject=renameat2:error=EIO:when=1")
    d.start()

    def each_once():
        return (env.fake.calls(other) == 1 and env.fake.calls(third) == 1 and
                d.state("pz") == "done" and
                not any(n.startswith("pz@") for n in d.listdir("running")))
    wait_for(each_once, 40, "the second retry and the dead host's job to run")
    assert in_trace(trace, "(INJECTED)")
    assert env.fake.calls(prompt) == 1, d.log()[-3000:]
    d.wait_logged("pz warning: reclaimed from 'deadhost'")
    d.assert_not_logged("publish_failed")
    assert putback_files(d) == []
    assert d.stop() == 0


def test_a_put_back_cut_by_a_host_that_died_runs_on_the_host_that_reclaims_it(env):
    """Killed right after the claim of a job put back, its host never comes back: another host
    reclaims the job once its lease ran out, with the new run written beside it (renamed to its
    own name, as every sidecar), and runs the new run."""
    prompt = "put back, its host died"
    d = env.daemon()
    first = a_done_job(env, d, "ph", prompt)
    d.start_to_crash("claim:claimed")
    old = time.time() - 3600
    os.utime(d.path("running", "ph@testhost.json"), (old, old))
    other = env.daemon(spool_dir=d.spool, spool__host_id="otherhost", spool__lease_timeout=2)
    other.start()
    assert_new_run(env, other, "ph", prompt, first)
    other.wait_logged("ph warning: reclaimed from 'testhost'")
    assert other.stop() == 0


def putback_name(d, task_id):
    """The name its claim writes its new run to, from the inode of new/ID.json."""
    ino = os.stat(d.path("new", task_id + ".json")).st_ino
    return f".{task_id}@testhost.putback.n.{ino:x}"


def cut_at(env, task_id, prompt, point):
    """task_id done and put back, and a daemon killed at point of its put-back claim: returns
    the daemon, the first run's result and the path of its put-back file in running/."""
    d = env.daemon()
    first = a_done_job(env, d, task_id, prompt)
    name = putback_name(d, task_id)
    d.start_to_crash(point)
    return d, first, d.path("running", name)


def traced(d, path, *args):
    """d runs under strace, its system calls on path (as the daemon names it: relative to a
    directory) traced, as args inject; returns the trace's path."""
    trace = os.path.join(d.dir, "strace.log")
    d.wrapper = ["strace", "-f", "-qq", "-o", trace, "-P", path] + list(args)
    d.extra_env["ASAN_OPTIONS"] = "detect_leaks=0:abort_on_error=0"   # LSan fails under ptrace
    return trace


def untraced(d):
    d.wrapper = []
    del d.extra_env["ASAN_OPTIONS"]


def in_trace(trace, text):
    try:
        with open(trace) as f:
            return text in f.read()
    except FileNotFoundError:   # strace has not started yet
        return False


def test_a_put_back_whose_rename_fails_at_the_restart_is_adopted_once_settled(env):
    """Killed right after the claim of a job put back; at the restart the rename of its new run
    over the job file fails (EIO). The job was adopted all the same, its file saying the old run
    finished with nothing staged: failed publish_failed, never called. It is now left alone
    until its new run is in place (the next rescan renames it), then runs that new run."""
    prompt = "put back, its settle failed"
    d = env.daemon()
    first = a_done_job(env, d, "sa", prompt)
    name = putback_name(d, "sa")
    d.start_to_crash("claim:claimed")
    assert name in os.listdir(d.path("running")), os.listdir(d.path("running"))
    trace = traced(d, name, "-e", "trace=rename,renameat,renameat2",
                   "-e", "inject=rename,renameat,renameat2:error=EIO:when=1")
    d.start()
    assert_new_run(env, d, "sa", prompt, first)
    assert in_trace(trace, "(INJECTED)"), "no rename of the put-back file failed"
    d.wait_logged("sa error: cannot put its new run in place")
    assert d.stop() == 0


def started_to_fail_its_rename(env, d, task_id, prompt, unlinkat):
    """task_id done, put back, and d started under strace: the rename of its new run over its
    job file fails (EIO), and unlinkat (an inject) comes at the removal of the file beside it.
    Returns the first run's result, that file's name and the trace's path."""
    first = a_done_job(env, d, task_id, prompt)
    name = putback_name(d, task_id)
    trace = traced(d, name, "-e", "trace=renameat,unlinkat", "-e", "inject=renameat:error=EIO:when=1",
                   "-e", "inject=unlinkat:" + unlinkat + ":when=1")
    d.start(wait_ready=False)
    return first, name, trace


def test_a_kill_while_a_put_back_is_written_over_its_job_file_runs_the_new_run(env):
    """The rename of a put-back's new run over its job file fails (EIO): the records are written
    over the job file instead. The file beside the job was removed before that rewrite: a kill
    in between left the old run's "finished" alone in running/, and the restart failed the job
    publish_failed. It is now removed only once the rewrite is durable: killed at its removal,
    the restart finds the new run's records and runs them."""
    prompt = "put back, killed after a failed rename"
    d = env.daemon()
    first, name, trace = started_to_fail_its_rename(env, d, "pe", prompt, "delay_exit=8000000")
    wait_for(lambda: in_trace(trace, "unlinkat("), 30, "the removal of the put-back file")
    with open(trace) as f:
        pid = int(f.read().split()[0])   # the daemon's, strace's child
    os.kill(pid, signal.SIGKILL)   # strace, its parent, reaps it and exits
    wait_for(d.exited, 20, "the daemon to be killed")
    d.kill()
    assert in_trace(trace, "(INJECTED)"), "the rename of the put-back file did not fail"
    print(f"# running/ holds {sorted(os.listdir(d.path('running')))}")
    untraced(d)
    d.start()
    assert_new_run(env, d, "pe", prompt, first)
    assert d.stop() == 0


def test_a_kill_before_the_put_back_file_goes_after_a_rewrite_runs_the_new_run(env):
    """As above, killed instead as the file beside the job is about to be removed, the rewrite
    of the job file durable: both are there, the job file another inode than the one read. The
    restart moves that file (the new run's records) back to new/ and removes the other; the new
    run runs once."""
    prompt = "put back, killed before its file went"
    d = env.daemon()
    first, name, trace = started_to_fail_its_rename(env, d, "pk", prompt, "signal=KILL")
    wait_for(d.exited, 30, "the daemon to be killed as it removes the put-back file")
    assert in_trace(trace, "+++ killed by SIGKILL +++")
    assert name in os.listdir(d.path("running")), os.listdir(d.path("running"))
    records = json.loads(d.read("running", "pk@testhost.json"))["imgspool"]
    assert not records.get("finished"), records
    untraced(d)
    d.start()
    assert_new_run(env, d, "pk", prompt, first)
    d.wait_logged("pk back to new/")
    assert d.stop() == 0


def let_go(fifo):
    """Lets a thread waiting at its stop point (IMGSPOOLD_STOP_FIFO) go on, if one waits."""
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError as e:
        if e.errno != errno.ENXIO:   # nobody waits
            raise


def test_a_put_back_replaced_while_claimed_and_not_moved_back_runs_what_replaced_it(env):
    """A job put back is read, then replaced in new/ by another finished file of the id (a second
    retry) before the claim; moving that file back to new/ fails (EIO). The new run written beside the job was removed first, so the replacement stayed in
    running/ alone, saying its run finished, and the restart failed it publish_failed without a
    call. That file now stays until the replacement is back in new/ (at a rescan, or the
    restart), which then runs its own new run."""
    prompt, other = "put back, replaced, not moved back", "the second retry"
    d = env.daemon()
    first, replacement = a_done_job_and_a_second_retry(env, d, "pd", prompt, other)
    # renameat2 of pd.json: the claim (RENAME_NOREPLACE), then the move back to new/.
    trace = traced(d, "pd.json", "-e", "trace=renameat2",
                   "-e", "inject=renameat2:error=EIO:when=2")
    fifo = d.start_held_at("claim:read", wait_ready=False)
    held = held_at_stop(fifo, d)   # the first read (a put-back), held before its claim
    replace_in_new(d, "pd", replacement)   # before the claim goes on: it takes the replacement
    os.close(held)

    def refused():   # it waits again before each read: let it go on each time
        let_go(fifo)
        return "pd error: cannot move 'running/pd@testhost.json' back to new/pd.json" in d.log()
    wait_for(refused, 30, "the move back of the replacement to fail")
    assert in_trace(trace, "(INJECTED)")
    print(f"# running/ holds {sorted(os.listdir(d.path('running')))}")
    stopping = d.proc
    d.send_signal(signal.SIGTERM)
    wait_for(lambda: let_go(fifo) or stopping.poll() is not None, 30, "the daemon to stop")
    d.stop()
    untraced(d)
    d.start()
    assert_replacement_ran(env, d, "pd", prompt, other, first)
    assert d.stop() == 0


def a_second_retry_claimed_and_a_third_written(env, d, task_id, prompt, second, third, trace_args=(),
                                               also=None):
    """task_id done and put back; d started and held (IMGSPOOLD_STOP_FIFO) at its read of the
    put-back, while new/ is replaced by a second retry of it (prompt second), then at its claim,
    which took that second retry, while a third (prompt third) is written into new/ (and also()
    called, if given). Then let go: the second retry cannot go back to new/. Returns the stop
    FIFO."""
    first, replacement = a_done_job_and_a_second_retry(env, d, task_id, prompt, second)
    env.fake.script(third, ["b64"])
    later = dict(replacement, prompt=third)
    if trace_args:
        traced(d, task_id + ".json", *trace_args)
    fifo = d.start_held_at("claim:read,claim:claimed", wait_ready=False)
    held = held_at_stop(fifo, d)   # its read of the put-back
    replace_in_new(d, task_id, replacement)
    os.close(held)
    # Its claim, which took the second retry (once made: the first stop's FIFO is closed).
    wait_for(lambda: os.path.exists(d.path("running", f"{task_id}@testhost.json")), 20,
             "the claim")
    held = held_at_stop(fifo, d)
    assert json.loads(d.read("running", f"{task_id}@testhost.json"))["prompt"] == second
    replace_in_new(d, task_id, later)
    if also:
        also()
    os.close(held)
    return fifo


def assert_each_ran_once(env, d, fifo, task_id, prompt, second, third):
    """The second and third retries each ran once (one after the other), the first file's new
    run never; nothing of the id is left waiting or in running/."""
    def both_done():
        let_go(fifo)   # the claims wait at their stop points: let each go on
        return (env.fake.calls(second) == 1 and env.fake.calls(third) == 1 and
                d.state(task_id) == "done" and
                not any(n.startswith(task_id + "@") for n in d.listdir("running")))
    wait_for(both_done, 40, f"both retries to run (log:\n{d.log()[-3000:]})")
    assert env.fake.calls(prompt) == 1, d.log()[-3000:]
    assert json.loads(d.read("done", task_id + ".json"))["prompt"] in (second, third)
    d.assert_not_logged("publish_failed")
    assert putback_files(d) == [], putback_files(d)


def test_a_third_version_never_replaces_a_second_left_in_running(env):
    """A job put back is read; a second retry of it replaces new/ before the claim, which takes
    it; a third is written into new/ before the second can go back. The second stayed in
    running/ (new/ taken), and the claim of the third renamed over it: the second retry was
    lost, never called. It now goes to deferred/, due at once (new/ holds a later version), and
    the two run one after the other."""
    prompt, second, third = "put back, then twice again", "its second retry", "its third retry"
    d = env.daemon()
    fifo = a_second_retry_claimed_and_a_third_written(env, d, "p3", prompt, second, third)
    assert_each_ran_once(env, d, fifo, "p3", prompt, second, third)
    d.wait_logged("p3 back to deferred/ (replaced while being claimed; new/ holds a later "
                  "version of it)")
    assert d.stop() == 0


def test_a_second_version_left_in_running_keeps_a_third_waiting_until_a_rescan_moves_it(env):
    """As above, and the move of the second retry to deferred/ fails too (EIO): it stays in
    running/, where the claim of the third replaced it. The third now waits, unclaimed, until
    the next rescan has moved the second out (to deferred/); then both run."""
    prompt, second, third = "put back, twice again, stranded", "the stranded retry", "the one waiting"
    d = env.daemon()
    # renameat2 of p4.json: the claim, the move back to new/ (taken), the one to deferred/.
    fifo = a_second_retry_claimed_and_a_third_written(
        env, d, "p4", prompt, second, third,
        ("-e", "trace=renameat2", "-e", "inject=renameat2:error=EIO:when=3"))
    assert_each_ran_once(env, d, fifo, "p4", prompt, second, third)
    trace = os.path.join(d.dir, "strace.log")
    assert in_trace(trace, "(INJECTED)")
    d.wait_logged("p4 error: cannot move 'running/p4@testhost.json' back to deferred/p4.json: "
                  "Input/output error; left in running/, no claim of its id until the next "
                  "rescan moves it")
    d.wait_logged("p4 back to deferred/ (its claim took a file that replaced the one read; new/ "
                  "holds a later version of it)")
    assert d.stop() == 0


def test_a_version_left_in_running_with_others_in_new_and_deferred_runs_after_them(env):
    """As above, and deferred/ holds a version of the id too (another host's deferral, due):
    the second retry can go neither to new/ nor to deferred/p5.json. It stayed in running/,
    and kept every other version of its id from being claimed, rescan after rescan, until an
    operator came. It now goes to deferred/p5 (the id's other name, which neither clients nor
    deferrals write), and the three run one after the other, each once."""
    prompt, second, third = "put back, twice again, one deferred", "its second retry", "its third"
    deferred = "a version deferred by another host"
    d = env.daemon()
    env.fake.script(deferred, ["b64"])

    def a_deferred_version():
        with open(d.path("tmp", "p5.json"), "w") as f:
            json.dump({"prompt": deferred}, f)
        past = time.time() - 60   # due
        os.utime(d.path("tmp", "p5.json"), (past, past))
        os.rename(d.path("tmp", "p5.json"), d.path("deferred", "p5.json"))

    fifo = a_second_retry_claimed_and_a_third_written(env, d, "p5", prompt, second, third,
                                                      also=a_deferred_version)
    wait_for(lambda: let_go(fifo) or env.fake.calls(deferred) == 1, 40,
             f"the deferred version to run (log:\n{d.log()[-3000:]})")
    assert_each_ran_once(env, d, fifo, "p5", prompt, second, third)
    assert env.fake.calls(deferred) == 1, d.log()[-3000:]
    assert ("p5 back to deferred/ (replaced while being claimed; new/ and deferred/ hold "
            "another version of it: as deferred/p5)") in d.log(), d.log()[-3000:]
    assert not os.listdir(d.path("deferred")) and not os.listdir(d.path("new"))
    assert d.stop() == 0


def test_a_version_left_in_running_with_every_other_name_taken_runs_after_them(env):
    """As above, and deferred/ holds a version under the id's other name too (deferred/p6, one
    moved back before): new/p6.json, deferred/p6.json and deferred/p6 are all taken. The
    second retry stayed in running/, stranded, and kept every version of its id from being
    claimed on this host, rescan after rescan, until an operator came. It now goes to
    deferred/p6.2.json (a numbered name, which only the daemon writes), and the four versions
    run one after the other, each once."""
    prompt, second, third = "put back, twice again, two deferred", "its second retry", "its third"
    deferred, other = "deferred by another host", "moved back before"
    d = env.daemon()
    env.fake.script(deferred, ["b64"])
    env.fake.script(other, ["b64"])

    def two_deferred_versions():
        for name, text in (("p6.json", deferred), ("p6", other)):
            with open(d.path("tmp", name), "w") as f:
                json.dump({"prompt": text}, f)
            past = time.time() - 60   # due
            os.utime(d.path("tmp", name), (past, past))
            os.rename(d.path("tmp", name), d.path("deferred", name))

    fifo = a_second_retry_claimed_and_a_third_written(env, d, "p6", prompt, second, third,
                                                      also=two_deferred_versions)
    wait_for(lambda: let_go(fifo) or "p6 back to deferred/" in d.log(), 30,
             f"the second retry to go back (log:\n{d.log()[-3000:]})")
    assert ("p6 back to deferred/ (replaced while being claimed; new/ and deferred/ hold "
            "other versions of it: as deferred/p6.2.json)") in d.log(), d.log()[-3000:]
    for text in (deferred, other):
        wait_for(lambda: let_go(fifo) or env.fake.calls(text) == 1, 40,
                 f"the version '{text}' to run (log:\n{d.log()[-3000:]})")
    assert_each_ran_once(env, d, fifo, "p6", prompt, second, third)
    assert env.fake.calls(deferred) == 1 and env.fake.calls(other) == 1, d.log()[-3000:]
    assert not os.listdir(d.path("deferred")) and not os.listdir(d.path("new"))
    assert d.stop() == 0


def test_imgspool_finds_a_version_under_a_numbered_name(env):
    """A version the daemon moved back as deferred/ID.N.json (above) is deferred for imgspool
    status, ls and cancel, as deferred/ID.json is; in new/ such a name is no job."""
    d = env.daemon().start()   # the spool made, and no daemon to claim it
    assert d.stop() == 0
    with open(d.path("deferred", "pn.3.json"), "w") as f:
        json.dump({"prompt": "a numbered version"}, f)
    status = cli(d.spool, "status", "pn")
    assert status.stdout.strip() == "deferred", (status.returncode, status.stdout, status.stderr)
    listed = cli(d.spool, "ls", "-j", "deferred")
    assert [json.loads(x)["id"] for x in listed.stdout.splitlines()] == ["pn"], listed
    assert cli(d.spool, "cancel", "pn").returncode == 0
    assert os.listdir(d.path("deferred")) == [] and "pn.json" in os.listdir(d.path("failed"))
    with open(d.path("new", "pm.2.json"), "w") as f:
        json.dump({"prompt": "a client's name that is no id"}, f)
    assert cli(d.spool, "status", "pm").returncode == 4


def test_a_put_back_file_of_a_host_gone_whose_claim_never_happened_is_removed(env):
    """A host is killed after writing a put-back's new run beside the job, before its claim, and
    never comes back: the job is still in new/, and another host runs it. The dead host's file
    was removed only when a batch of that host's was taken over, so with none it stayed for
    ever. A rescan now removes it once that host is gone (its lock says so) and the file is
    older than a lease, with no job of that host in running/ to take it along."""
    prompt = "put back, its host died before the claim"
    d, first, path = cut_at(env, "pg", prompt, "claim:putback-written")
    name = os.path.basename(path)
    assert os.path.exists(path) and os.path.exists(d.path("new", "pg.json"))
    old = time.time() - 3600
    os.utime(path, (old, old))
    other = env.daemon(spool_dir=d.spool, spool__host_id="otherhost", spool__lease_timeout=2)
    other.start()
    wait_for(lambda: not os.path.exists(path), 20,
             f"the dead host's put-back file to be removed (log:\n{other.log()[-2000:]})")
    assert_new_run(env, other, "pg", prompt, first)
    other.wait_logged(f"pg removed 'running/{name}': the new run of a job put back, written by "
                      "'testhost' before a claim that never happened; that host is gone")
    assert other.stop() == 0


def test_a_put_back_file_of_a_live_host_is_never_removed(env):
    """The same file of a host that is alive (stopped between writing it and its claim), as old
    as above: other hosts leave it alone, as its host settles it (here: removes it when its
    claim finds the job gone, run meanwhile by the other host)."""
    prompt = "put back, its host stopped before the claim"
    d = env.daemon()
    first = a_done_job(env, d, "pa", prompt)
    name = putback_name(d, "pa")
    path = d.path("running", name)
    fifo = d.start_held_at("claim:putback-written", wait_ready=False)
    held = held_at_stop(fifo, d)
    old = time.time() - 3600
    os.utime(path, (old, old))
    other = env.daemon(spool_dir=d.spool, spool__host_id="otherhost", verbose=True)   # lease 60 s
    other.start()
    assert_new_run_but_its_file(env, other, "pa", prompt, first)
    other.wait_rescans(3)
    assert os.path.exists(path), other.log()[-2000:]
    os.close(held)
    wait_for(lambda: not os.path.exists(path), 20, "its host to remove it")
    assert other.stop() == 0 and d.stop() == 0
    assert "removed 'running/" not in other.log(), other.log()[-2000:]


def looking_dead(d):
    """Makes d's host lock look like a dead host's to the others: another machine's (another
    boot id), its heartbeat an hour old. Returns its bytes, for alive_again."""
    lock = d.path("running", ".host.testhost")
    with open(lock, "rb") as f:
        text = f.read()
    owner = json.loads(text)
    owner["boot_id"] = "another-boot"
    with open(lock, "r+b") as f:   # in place: the same inode, as the daemon's own heartbeat
        f.write(json.dumps(owner).encode())
        f.truncate()
    old = time.time() - 3600
    os.utime(lock, (old, old))
    return text


def alive_again(d, text):
    lock = d.path("running", ".host.testhost")
    with open(lock, "r+b") as f:
        f.write(text)
        f.truncate()
    os.utime(lock)


def stalled_after_writing_its_put_back(d, task_id):
    """d started, to be killed at its claim of task_id (put back), and held after writing its
    new run beside it, before that claim: its lock looks dead, the file an hour old. Returns the
    file's path, the stop FIFO, its held write end and the lock's bytes (alive_again)."""
    path = d.path("running", putback_name(d, task_id))
    fifo = os.path.join(d.dir, "stop.fifo")
    os.mkfifo(fifo)
    d.start(wait_ready=False, extra_env={"IMGSPOOLD_STOP_AT": "claim:putback-written",
                                         "IMGSPOOLD_STOP_FIFO": fifo,
                                         "IMGSPOOLD_CRASH_AT": "claim:claimed"})
    held = held_at_stop(fifo, d)
    lock_text = looking_dead(d)
    old = time.time() - 3600
    os.utime(path, (old, old))
    return path, fifo, held, lock_text


def a_host_that_claims_nothing(env, d):
    """Another host on d's spool, with a lease of 2 s, that claims nothing (min_free_mb above any
    disk) but rescans running/ as ever."""
    return env.daemon(spool_dir=d.spool, spool__host_id="otherhost", spool__lease_timeout=2,
                      spool__min_free_mb=1 << 20, verbose=True)


def test_a_put_back_file_of_a_stalled_host_whose_job_waits_in_new_is_kept(env):
    """A host stalls between writing a put-back's new run and its claim, longer than a lease:
    its lock looks dead. Another host removed its file (its job not in running/), then the
    stalled host claimed the job and was killed before its new run was in place: the restart
    found the old run's "finished" alone in running/ and failed the job publish_failed, the
    user's put-back lost. The file is now kept while its job waits in new/ (its host may yet
    claim it), so the restart puts the new run in place and runs it."""
    prompt = "put back, its host stalled before the claim"
    d = env.daemon()
    first = a_done_job(env, d, "pt", prompt)
    path, fifo, held, lock_text = stalled_after_writing_its_put_back(d, "pt")
    other = a_host_that_claims_nothing(env, d).start()
    other.wait_rescans(3)
    assert os.path.exists(path), other.log()[-2000:]
    assert other.stop() == 0
    alive_again(d, lock_text)
    os.close(held)
    wait_for(d.exited, 20, "the daemon to kill itself at claim:claimed")
    assert d.proc.returncode == -9, (d.proc.returncode, d.log()[-2000:])
    d.start()
    assert_new_run(env, d, "pt", prompt, first)
    assert d.stop() == 0
    assert "removed 'running/" not in other.log(), other.log()[-2000:]


def test_a_put_back_claimed_after_a_stall_in_which_its_file_was_removed_runs_the_new_file(env):
    """A host stalls for more than its lease between writing a put-back's new run beside the job
    and its claim. Meanwhile the job leaves new/ (its client takes it back), another host
    removes the stalled host's file (that host looks gone, and the job is not waiting), and the
    client puts another finished file of the id into new/. The stalled host then claimed that
    file, and a kill before the claim's check of it left its old run's "finished" alone in
    running/: the restart failed it publish_failed, without a call. A put-back's claim is now
    not made after a stall of half a lease: the new file is read again, claimed as a put-back
    of its own, and, killed at that claim too, runs its new run after the restart."""
    prompt, other = "put back, its host stalled, then taken back", "put back again meanwhile"
    d = env.daemon(spool__lease_timeout=2)
    first, replacement = a_done_job_and_a_second_retry(env, d, "ps", prompt, other)
    path, fifo, held, lock_text = stalled_after_writing_its_put_back(d, "ps")
    stalled_from = time.monotonic()
    os.rename(d.path("new", "ps.json"), d.path("tmp", "ps.json"))   # its client takes it back
    gone = a_host_that_claims_nothing(env, d).start()
    wait_for(lambda: not os.path.exists(path), 20,
             f"the stalled host's put-back file to be removed (log:\n{gone.log()[-2000:]})")
    assert gone.stop() == 0
    os.unlink(d.path("tmp", "ps.json"))
    replace_in_new(d, "ps", replacement)
    alive_again(d, lock_text)
    # The stall is time on the stalled host's own clock: its lease (2 s), at least.
    wait_for(lambda: time.monotonic() - stalled_from > 2.5, 10, "the stall to outlast its lease")
    os.close(held)
    wait_for(lambda: let_go(fifo) or d.exited(), 20, "the daemon to kill itself at claim:claimed")
    assert d.proc.returncode == -9, (d.proc.returncode, d.log()[-2000:])
    d.start()
    assert d.wait_finished("ps", 30) == "done", d.log()[-3000:]
    assert env.fake.calls(other) == 1 and env.fake.calls(prompt) == 1, d.log()[-3000:]
    assert json.loads(d.read("done", "ps.json"))["prompt"] == other
    r = d.result("ps")
    assert [a["outcome"] for a in r["attempts"]] == ["succeeded"] and r != first, r
    assert "publish_failed" not in d.log(), d.log()[-3000:]
    assert putback_files(d) == [], putback_files(d)
    assert "ps warning: stalled " in d.log(), d.log()[-3000:]
    assert d.stop() == 0


def assert_new_run_but_its_file(env, d, task_id, prompt, first):
    """assert_new_run, another host's put-back file of the job still there."""
    assert d.wait_finished(task_id, 30) == "done", d.log()[-3000:]
    assert env.fake.calls(prompt) == 2, (env.fake.calls(prompt), d.log()[-3000:])
    r = d.result(task_id)
    assert [a["outcome"] for a in r["attempts"]] == ["succeeded"] and r != first, r


def published_again(d, task_id, first):
    """Whether done/ holds another run's job file and result than first's."""
    try:
        job = json.loads(d.read("done", task_id + ".json"))
        return json.loads(d.read("done", task_id + ".result.json"))["updated_at"] != \
            first["updated_at"] and "runs" in job["imgspool"]
    except (FileNotFoundError, ValueError, KeyError):
        return False


def test_a_put_back_claimed_in_place_of_a_plain_job_and_not_moved_back_runs_after_a_kill(env):
    """A plain job (no put-back) is read; before its claim a finished job file of the id (a job
    put back by hand) replaces it in new/, and the claim takes that; its move back to new/ fails
    (EIO), and the daemon is killed. The restart adopted the file claimed as it was: its records
    say its run finished, nothing staged, so it failed publish_failed with no call. The claim now
    leaves beside it what a put-back's claim writes first (the file read, under a put-back's
    name): the restart sends the file claimed back as it is, and it runs its new run."""
    prompt, plain = "a job done, then put back over a plain one", "the plain job read"
    env.fake.script(prompt, ["b64", "b64"])
    env.fake.script(plain, ["b64"])
    d = env.daemon()
    d.start()
    d.submit("px", {"prompt": prompt})
    assert d.wait_finished("px") == "done"
    first = d.result("px")
    assert d.stop() == 0
    finished = json.loads(d.read("done", "px.json"))
    replace_in_new(d, "px", {"prompt": plain})
    # renameat2 of px.json: the claim (RENAME_NOREPLACE), then the move back to new/.
    trace = traced(d, "px.json", "-e", "trace=renameat2",
                   "-e", "inject=renameat2:error=EIO:when=2")
    fifo = d.start_held_at("claim:read", wait_ready=False)
    held = held_at_stop(fifo, d)   # the plain job read
    replace_in_new(d, "px", finished)
    os.close(held)
    wait_for(lambda: "px error: cannot move 'running/px@testhost.json' back to new/px.json"
             in d.log(), 30, "the move back to fail")
    with open(trace) as f:
        pid = int(f.read().split()[0])   # the daemon's, strace's child
    os.kill(pid, signal.SIGKILL)   # strace, its parent, reaps it and exits
    wait_for(d.exited, 20, "the daemon to be killed")
    print(f"# running/ holds {sorted(os.listdir(d.path('running')))}")
    untraced(d)
    d.start()
    # done/ holds the first run until the new one is published over it
    wait_for(lambda: env.fake.calls(prompt) == 2 and published_again(d, "px", first), 30,
             "the new run to be called and published")
    assert_new_run(env, d, "px", prompt, first)
    assert env.fake.calls(plain) == 0, d.log()[-3000:]   # replaced before its claim: never run
    assert d.stop() == 0


NOBODY = 65534


def test_a_put_back_file_another_user_wrote_is_never_put_in_place(env):
    """A file at a put-back's name in running/ that another user wrote (a client, on a spool
    whose running/ it can write) is not the daemon's new run: the restart removed nothing and
    checked nothing, and put it over the job file, so its prompt was called. Then it was removed,
    with a warning, and the job recovered from its own file, which says its run finished: the
    user's put-back was lost, failed publish_failed without a call. The forged file is still
    never believed, and the job the user put back goes back to new/ as it is, claimed afresh:
    it runs its new run (the user's prompt), once."""
    prompt = "put back, its new run forged"
    d, first, path = cut_at(env, "pf", prompt, "claim:claimed")
    name = os.path.basename(path)
    forged = json.loads(d.read("running", name))
    forged["prompt"] = "forged new run"
    os.unlink(path)
    with open(path, "w") as f:
        json.dump(forged, f)
    os.chown(path, NOBODY, NOBODY)
    d.start()
    assert_new_run(env, d, "pf", prompt, first)
    assert env.fake.calls("forged new run") == 0, d.log()[-3000:]
    d.wait_logged(f"pf warning: ignoring 'running/{name}': not a file the daemon wrote (owned "
                  f"by uid {NOBODY}, not the daemon's user); its job file goes back to be claimed "
                  "afresh, as it is")
    assert d.stop() == 0


def test_a_put_back_file_with_a_second_link_is_never_put_in_place(env):
    """As above, the file at the put-back's name a hard link of a file of the daemon's user
    (a second name elsewhere, that another program may change): not believed, and the job the
    user put back runs its new run."""
    prompt = "put back, its new run linked"
    d, first, path = cut_at(env, "pl", prompt, "claim:claimed")
    name = os.path.basename(path)
    os.link(path, os.path.join(d.dir, "second-name"))
    d.start()
    assert_new_run(env, d, "pl", prompt, first)
    d.wait_logged(f"pl warning: ignoring 'running/{name}': not a file the daemon wrote (2 "
                  "links, not one); its job file goes back")
    assert d.stop() == 0


if __name__ == "__main__":
    run_tests([
        test_a_kill_at_each_step_of_a_put_back_claim_runs_the_new_run,
        test_a_kill_while_the_new_run_is_written_beside_the_job_runs_it,
        test_a_put_back_replaced_before_its_claim_and_killed_runs_what_replaced_it,
        test_a_replacement_the_restart_cannot_move_back_is_not_adopted_before_it_is,
        test_a_replacement_moved_back_to_deferred_at_a_rescan_is_claimed_when_due,
        test_a_job_left_in_running_says_so_once_however_many_rescans_fail_to_move_it,
        test_a_put_back_cut_by_a_host_that_died_runs_on_the_host_that_reclaims_it,
        test_a_job_of_a_dead_host_is_never_reclaimed_over_a_replacement_left_in_running,
        test_a_put_back_whose_rename_fails_at_the_restart_is_adopted_once_settled,
        test_a_kill_while_a_put_back_is_written_over_its_job_file_runs_the_new_run,
        test_a_kill_before_the_put_back_file_goes_after_a_rewrite_runs_the_new_run,
        test_a_put_back_replaced_while_claimed_and_not_moved_back_runs_what_replaced_it,
        test_a_put_back_claimed_in_place_of_a_plain_job_and_not_moved_back_runs_after_a_kill,
        test_a_put_back_file_another_user_wrote_is_never_put_in_place,
        test_a_put_back_file_with_a_second_link_is_never_put_in_place,
        test_a_put_back_file_of_a_host_gone_whose_claim_never_happened_is_removed,
        test_a_put_back_file_of_a_live_host_is_never_removed,
        test_a_put_back_file_of_a_stalled_host_whose_job_waits_in_new_is_kept,
        test_a_third_version_never_replaces_a_second_left_in_running,
        test_a_second_version_left_in_running_keeps_a_third_waiting_until_a_rescan_moves_it,
        test_a_version_left_in_running_with_others_in_new_and_deferred_runs_after_them,
        test_a_version_left_in_running_with_every_other_name_taken_runs_after_them,
        test_imgspool_finds_a_version_under_a_numbered_name,
        test_a_put_back_claimed_after_a_stall_in_which_its_file_was_removed_runs_the_new_file,
    ])
