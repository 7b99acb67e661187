#!/usr/bin/env python3
"""A job put back into new/ (imgspool retry, or by hand) holds its finished run's records. Its
claim makes the new run's records durable beside it in running/ before the claim's rename
(running/.ID@HOST.putback.D.INODE), and puts them in place after: a kill at any point of that
claim leaves something the restart recognises, and the job runs its new run (spool-layout.md §4,
§10). Before, a kill between the rename and the rewrite of the records left the old run's
"finished" in running/ with nothing staged, and the restart failed the job publish_failed."""
import json
import os
import signal
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import run_tests, wait_for  # noqa: E402
from test_control import stopped  # noqa: E402
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
    assert "publish_failed" not in d.log(), d.log()[-3000:]
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


def test_a_put_back_replaced_before_its_claim_and_killed_runs_what_replaced_it(env):
    """The job put back is read, then a client replaces new/ID.json (here by another finished
    job file of the id, with another prompt) before the claim, and the daemon is killed right
    after its claim: the new run written beside the job is the first file's, not the one
    claimed. The restart puts the claimed file back in new/ as it is, and it runs its own new
    run; the first file's new run is never used."""
    prompt, other = "put back, then replaced", "the replacement"
    d = env.daemon()
    first = a_done_job(env, d, "pr", prompt)
    env.fake.script(other, ["b64"])
    replacement = json.loads(d.read("new", "pr.json"))
    replacement["prompt"] = other
    d.start(wait_ready=False, extra_env={"IMGSPOOLD_STOP_AT": "claim:read",
                                         "IMGSPOOLD_CRASH_AT": "claim:claimed"})
    wait_for(lambda: stopped(d), 20, "the daemon to stop between its read and its claim")
    with open(d.path("tmp", "pr.json"), "w") as f:
        json.dump(replacement, f)
    os.rename(d.path("tmp", "pr.json"), d.path("new", "pr.json"))
    d.proc.send_signal(signal.SIGCONT)
    wait_for(d.exited, 20, "the daemon to kill itself after its claim")
    assert d.proc.returncode == -9, d.log()[-2000:]
    print(f"# running/ holds {sorted(os.listdir(d.path('running')))}")
    d.start()
    assert d.wait_finished("pr", 30) == "done", d.log()[-3000:]
    assert env.fake.calls(other) == 1 and env.fake.calls(prompt) == 1, d.log()[-3000:]
    r = d.result("pr")
    assert [a["outcome"] for a in r["attempts"]] == ["succeeded"] and r != first, r
    job = json.loads(d.read("done", "pr.json"))
    assert job["prompt"] == other, job
    assert [run["status"] for run in job["imgspool"]["runs"]] == ["succeeded"], job
    assert "back to new/ (its claim took a file that replaced the one read)" in d.log(), \
        d.log()[-3000:]
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
    assert "ph warning: reclaimed from 'testhost'" in other.log(), other.log()[-3000:]
    assert other.stop() == 0


if __name__ == "__main__":
    run_tests([
        test_a_kill_at_each_step_of_a_put_back_claim_runs_the_new_run,
        test_a_kill_while_the_new_run_is_written_beside_the_job_runs_it,
        test_a_put_back_replaced_before_its_claim_and_killed_runs_what_replaced_it,
        test_a_put_back_cut_by_a_host_that_died_runs_on_the_host_that_reclaims_it,
    ])
