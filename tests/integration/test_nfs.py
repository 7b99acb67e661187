#!/usr/bin/env python3
"""Two daemons on one spool over a real network file system (sshfs, two mounts): each job is
called once, and a dead daemon's jobs are reclaimed after its lease, never published twice."""
import json
import os
import re
import signal
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import run_tests, wait_for  # noqa: E402


def submit_on_server(export_spool, task_id, job):
    """A client writing on the file server itself: tmp/ then rename into new/."""
    tmp = os.path.join(export_spool, "tmp", task_id + ".json")
    with open(tmp, "w") as f:
        json.dump(job, f)
    os.rename(tmp, os.path.join(export_spool, "new", task_id + ".json"))


def done_count(export_spool, prefix):
    return sum(1 for n in os.listdir(os.path.join(export_spool, "done"))
               if n.startswith(prefix) and n.endswith(".result.json"))


def test_two_hosts_share_one_spool(env):
    with env.two_mounts() as mounts:
        export = os.path.join(mounts.export, "spool")
        for sub in ("tmp", "new"):
            os.makedirs(os.path.join(export, sub), exist_ok=True)
        settings = dict(spool__concurrency=8, spool__poll_interval=1, spool__lease_timeout=4)
        a = env.daemon(spool_dir=os.path.join(mounts.mount_a, "spool"), spool__host_id="hostA",
                       **settings).start()
        b = env.daemon(spool_dir=os.path.join(mounts.mount_b, "spool"), spool__host_id="hostB",
                       **settings).start()

        # 500 jobs: each called exactly once, all done, and both hosts took a share.
        env.fake.default = {"kind": "b64", "delay": 0.05}
        for i in range(500):
            submit_on_server(export, f"j{i:03d}", {"prompt": f"shared job {i}"})
        wait_for(lambda: done_count(export, "j") == 500, 300, "500 jobs done")
        for i in range(500):
            assert env.fake.calls(f"shared job {i}") == 1, f"job {i} called {env.fake.calls(f'shared job {i}')} times"
        claimed = re.compile(r"^j\d+ claimed")
        wait_for(lambda: len(a.logged(claimed)) + len(b.logged(claimed)) >= 500, 20,
                 "500 claims logged")
        a.log_barrier()
        b.log_barrier()
        claims_a, claims_b = len(a.logged(claimed)), len(b.logged(claimed))
        assert claims_a + claims_b == 500 and claims_a > 0 and claims_b > 0, (claims_a, claims_b)

        # Host A dies with calls in flight: B reclaims them after the lease, none published twice.
        env.fake.default = {"kind": "b64", "delay": 3}
        for i in range(40):
            submit_on_server(export, f"k{i:02d}", {"prompt": f"reclaim job {i}"})
        held_by_a = lambda: [n for n in os.listdir(os.path.join(export, "running"))
                             if n.endswith("@hostA.json")]
        wait_for(lambda: len(held_by_a()) >= 4, 30, "host A to hold jobs")
        a.kill()
        orphans = [n.split("@")[0] for n in held_by_a()]
        env.fake.default = {"kind": "b64", "delay": 0.05}
        wait_for(lambda: done_count(export, "k") == 40, 120, "all 40 jobs done by host B")
        for task_id in orphans:
            b.wait_logged(re.compile(rf"^{task_id} warning: reclaimed from 'hostA'"),
                          what=f"{task_id} reclaimed")
            with open(os.path.join(export, "done", task_id + ".result.json")) as f:
                r = json.load(f)
            # A's call in flight (if it had sent one) is on record as possibly billed: every
            # call the fake saw is accounted for.
            calls = env.fake.calls(f"reclaim job {int(task_id[1:])}")
            outcomes = [x["outcome"] for x in r["attempts"]]
            assert outcomes[-1] == "succeeded" and len(outcomes) >= calls, (task_id, calls, outcomes)
            assert set(outcomes[:-1]) <= {"interrupted"}, (task_id, outcomes)
            assert all(x["billed"] == "unknown" for x in r["attempts"][:-1]), r["attempts"]
        blog = b.flushed_log()   # a's is final: it was killed
        for i in range(40):
            # A kill between A's final rename and its log line leaves 0 lines: never 2.
            finals = len(re.findall(rf"^k{i:02d} (done|failed):", a.log() + blog, re.M))
            assert finals <= 1, f"k{i:02d} published {finals} times"
        assert os.listdir(os.path.join(export, "running")) == [] or all(
            n.startswith(".") for n in os.listdir(os.path.join(export, "running")))
        assert b.stop() == 0


def test_a_job_replaced_from_another_host_while_claimed(env):
    """Another host renamed a new version over new/ID.json between this daemon's read and its
    claim. sshfs numbers inodes by name (getdents says d_ino 0xffffffff for every name, stat the
    same number before and after the replacement): the claim's inode check saw the same file,
    and the daemon called and published the version it had read, the client's new version lost.
    It goes back to new/ as written, and the new version is the one called."""
    with env.two_mounts() as mounts:
        export = os.path.join(mounts.export, "spool")
        for sub in ("tmp", "new"):
            os.makedirs(os.path.join(export, sub), exist_ok=True)
        submit_on_server(export, "rv", {"prompt": "the first version", "metadata": {"v": 1}})
        a = env.daemon(spool_dir=os.path.join(mounts.mount_a, "spool"), spool__host_id="hostA",
                       spool__poll_interval=1)
        a.start(wait_ready=False, extra_env={"IMGSPOOLD_STOP_AT": "claim:read"})
        wait_for(a.stopped, 30, "the daemon to stop between its read and its claim")
        # The client on host B: tmp/ then a rename over new/rv.json, through B's own mount.
        spool_b = os.path.join(mounts.mount_b, "spool")
        with open(os.path.join(spool_b, "tmp", "rv.json"), "w") as f:
            json.dump({"prompt": "the second version", "metadata": {"v": 2}}, f)
        os.rename(os.path.join(spool_b, "tmp", "rv.json"), os.path.join(spool_b, "new", "rv.json"))

        def done():   # it stops again before each read: let it go on each time
            if a.stopped():
                a.send_signal(signal.SIGCONT)
            return os.path.exists(os.path.join(export, "done", "rv.result.json"))
        wait_for(done, 60, "rv done")
        with open(os.path.join(export, "done", "rv.result.json")) as f:
            r = json.load(f)
        assert r["metadata"] == {"v": 2}, r
        assert env.fake.calls("the second version") == 1, env.fake.requests
        assert env.fake.calls("the first version") == 0, env.fake.requests
        a.wait_logged("rv back to new/ (replaced while being claimed)")
        assert a.stop() == 0



if __name__ == "__main__":
    run_tests([test_two_hosts_share_one_spool, test_a_job_replaced_from_another_host_while_claimed])
