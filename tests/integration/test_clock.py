#!/usr/bin/env python3
"""Times: file times any client can set, the probe of the file server's clock, and hosts whose
clock is off (issue 8, items 2, 14 and 15)."""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import clock_off_by, run_tests, wait_for  # noqa: E402

YEAR_2300 = 10_413_792_000          # past 2262: seconds * 1e9 no longer fits in 64 bits


def test_mtimes_past_2262_are_harmless(env):
    d = env.daemon(verbose=True).start()
    os.makedirs(d.path("tmp"), exist_ok=True)
    for name in ("future", "far-future"):
        path = d.path("tmp", name + ".json")
        with open(path, "w") as f:
            json.dump({"prompt": f"a job from {name}"}, f)
        when = YEAR_2300 if name == "future" else 2 ** 62
        os.utime(path, (when, when))
        os.rename(path, d.path("new", name + ".json"))
    with open(d.path("tmp", "left-behind.json"), "w") as f:
        f.write("{")
    os.utime(d.path("tmp", "left-behind.json"), (YEAR_2300, YEAR_2300))
    assert d.wait_finished("future") == "done"
    assert d.wait_finished("far-future") == "done"
    d.wait_rescans(2)
    assert not d.exited(), d.log()[-3000:]
    assert d.result("future")["created_at"].startswith("2300-"), d.result("future")["created_at"]



def plant_dead_hosts_job(d, task_id):
    """A job another host claimed an hour ago and never heartbeated since."""
    os.makedirs(d.path("running"), exist_ok=True)
    path = d.path("running", f"{task_id}@deadhost.json")
    with open(path, "w") as f:
        json.dump({"prompt": f"orphan {task_id}"}, f)
    old = os.stat(path).st_mtime - 3600
    os.utime(path, (old, old))


def test_fifo_planted_at_the_clock_probe(env):
    d = env.daemon(verbose=True)
    os.makedirs(d.spool, exist_ok=True)
    os.mkfifo(d.path(".clock.testhost"))     # the probe's old fixed name, in the client-writable root
    plant_dead_hosts_job(d, "orphan1")
    d.start()
    assert d.wait_finished("orphan1") == "done", "the dead host's job was not reclaimed"
    d.submit("after", {"prompt": "the loop still turns"})
    assert d.wait_finished("after") == "done"
    d.wait_logged("reclaimed from 'deadhost'")


def test_symlink_planted_at_the_clock_probe(env):
    d = env.daemon(verbose=True)
    os.makedirs(d.spool, exist_ok=True)
    os.symlink("/nonexistent/clock", d.path(".clock.testhost"))
    plant_dead_hosts_job(d, "orphan2")
    d.start()
    assert d.wait_finished("orphan2") == "done", "the dead host's job was never reclaimed"
    assert os.path.islink(d.path(".clock.testhost")), "a planted file was touched"


def test_retry_after_is_kept_by_a_host_whose_clock_is_ahead(env):
    env.fake.script("patience", [{"kind": "429_retry_after", "retry_after": "30"}, "b64"])
    a = env.daemon(spool__host_id="hostA").start()
    a.submit("patience", {"prompt": "patience"})
    wait_for(lambda: a.state("patience") == "deferred", 10, "the job to wait in deferred/")
    b = env.daemon(spool_dir=a.spool, spool__host_id="hostB", verbose=True,
                   extra_env=clock_off_by(600)).start()
    b.wait_rescans(3)
    assert env.fake.calls("patience") == 1, "a host 10 minutes ahead called before Retry-After"
    assert a.state("patience") == "deferred"


def test_settle_time_is_judged_by_the_servers_clock(env):
    d = env.daemon(verbose=True, spool__settle_time=5, extra_env=clock_off_by(600)).start()
    path = d.path("new", "slow.json")
    with open(path, "w") as f:
        f.write('{"prompt": "written in pla')           # a writer pausing mid-file
    d.wait_rescans(3)
    assert d.state("slow") == "new", "a file being written was failed as invalid"
    with open(path, "a") as f:
        f.write('ce"}')
    assert d.wait_finished("slow") == "done"


def test_tmp_is_cleaned_by_the_servers_clock(env):
    d = env.daemon(verbose=True, extra_env=clock_off_by(37 * 3600))
    os.makedirs(d.path("tmp"), exist_ok=True)
    with open(d.path("tmp", "fresh.json"), "w") as f:
        f.write('{"prompt": "being written"')
    d.start()
    d.wait_rescans(2)
    assert os.path.exists(d.path("tmp", "fresh.json")), "a host 37 h ahead removed a fresh file"


if __name__ == "__main__":
    run_tests([
        test_mtimes_past_2262_are_harmless,
        test_fifo_planted_at_the_clock_probe,
        test_symlink_planted_at_the_clock_probe,
        test_retry_after_is_kept_by_a_host_whose_clock_is_ahead,
        test_settle_time_is_judged_by_the_servers_clock,
        test_tmp_is_cleaned_by_the_servers_clock,
    ])
