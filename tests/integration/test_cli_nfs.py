#!/usr/bin/env python3
"""imgspool's steering verbs on a spool shared by two daemons on two sshfs mounts of one
directory (a stand-in for NFS: inotify sees nothing of the other host): hold, release, cancel
(pending, and running on the other host), retry, purge and pause each leave every job in
exactly one state, and no call is made for a held, paused or cancelled job (issue 10)."""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import harness  # noqa: E402
from harness import IMGSPOOL, run_tests, wait_for  # noqa: E402

STATES = ("new", "deferred", "hold", "done", "failed")


def where(export, task_id):
    found = [s for s in STATES if os.path.exists(os.path.join(export, s, task_id + ".json"))]
    found += ["running" for n in os.listdir(os.path.join(export, "running"))
              if n.startswith(task_id + "@") and n.endswith(".json")]
    return found


def test_every_verb_on_two_hosts(env):
    with env.two_mounts() as mounts:
        export = os.path.join(mounts.export, "spool")
        via_a, via_b = (os.path.join(m, "spool") for m in (mounts.mount_a, mounts.mount_b))
        for sub in ("tmp", "new"):
            os.makedirs(os.path.join(export, sub), exist_ok=True)
        settings = dict(spool__concurrency=4, spool__poll_interval=1, spool__lease_timeout=6)
        a = env.daemon(spool_dir=via_a, spool__host_id="hostA", verbose=True, **settings).start()
        b = env.daemon(spool_dir=via_b, spool__host_id="hostB", verbose=True, **settings).start()

        def cli(spool, *args):
            return harness.cli(spool, *args, timeout=120)

        def submit(task_id, prompt):
            r = subprocess.run([IMGSPOOL, "-d", via_a, "submit", "-i", task_id, "-"],
                               input=json.dumps({"prompt": prompt}), capture_output=True, text=True)
            assert r.returncode == 0, r.stderr

        def rescans():
            a.wait_rescans(2)
            b.wait_rescans(2)

        # pause, from host B's mount: neither daemon calls while it is there.
        assert cli(via_b, "pause").returncode == 0
        rescans()
        for i in range(4):
            submit(f"p{i}", f"paused {i}")
        rescans()
        assert all(where(export, f"p{i}") == ["new"] for i in range(4))
        # hold and cancel pending jobs while nothing runs.
        r = cli(via_b, "hold", "p0", "p1")
        assert r.returncode == 0, r.stderr
        r = cli(via_a, "cancel", "p2")
        assert r.returncode == 0 and "cancelled (was pending)" in r.stdout, r
        assert cli(via_a, "resume").returncode == 0
        wait_for(lambda: where(export, "p3") == ["done"], 60, "p3 done after resume")
        rescans()
        assert where(export, "p0") == ["hold"] and where(export, "p1") == ["hold"]
        assert where(export, "p2") == ["failed"]
        for i in range(3):
            assert env.fake.calls(f"paused {i}") == 0, i
        # release one, cancel the other held one.
        assert cli(via_a, "release", "p0").returncode == 0
        assert cli(via_b, "cancel", "p1").returncode == 0
        wait_for(lambda: where(export, "p0") == ["done"], 60, "p0 done after release")
        assert env.fake.calls("paused 0") == 1 and env.fake.calls("paused 1") == 0

        # cancel a job running on the other host: B runs it, A's mount asks.
        env.fake.script("long on b", [{"kind": "b64", "delay": 60}])
        a.send_signal(19)   # SIGSTOP: only B can claim it
        try:
            submit("r1", "long on b")
            wait_for(lambda: where(export, "r1") == ["running"] and env.fake.inflight >= 1, 30,
                     "r1 running on host B")
            assert os.path.exists(os.path.join(export, "running", "r1@hostB.json"))
        finally:
            a.send_signal(18)   # SIGCONT
        r = cli(via_a, "cancel", "-t", "60", "r1")
        assert r.returncode == 0 and "running on hostB" in r.stdout and "billed: unknown" in r.stdout, r
        res = json.load(open(os.path.join(export, "failed", "r1.result.json")))
        assert res["error"]["code"] == "cancelled" and res["attempts"][-1]["billed"] == "unknown", res
        assert env.fake.calls("long on b") == 1
        b.wait_logged("r1 cancelled by an operator")
        assert re_count(b.flushed_log(), "r1 cancelled by an operator") == 1

        # hold a job running on B at its next transition: its 503 sends it to hold/.
        env.fake.script("flaky on b", [{"kind": "503", "delay": 2}, {"kind": "b64"}])
        a.send_signal(19)
        try:
            submit("h1", "flaky on b")
            wait_for(lambda: env.fake.inflight >= 1 and where(export, "h1") == ["running"], 30, "h1 running")
        finally:
            a.send_signal(18)
        assert cli(via_a, "hold", "h1").returncode == 0
        wait_for(lambda: where(export, "h1") == ["hold"], 60, "h1 held at its next transition")
        rescans()
        assert env.fake.calls("flaky on b") == 1
        assert cli(via_b, "release", "h1").returncode == 0
        wait_for(lambda: where(export, "h1") == ["done"], 60, "h1 done")

        # retry a failed job (the cancelled one), then purge everything finished.
        env.fake.script("long on b", [{"kind": "b64"}])
        r = cli(via_b, "retry", "r1")
        assert r.returncode == 0, r.stderr
        wait_for(lambda: where(export, "r1") == ["done"], 60, "r1 done after retry")
        assert env.fake.calls("long on b") == 2

        ids = [f"p{i}" for i in range(4)] + ["r1", "h1"]
        for task_id in ids:
            assert len(where(export, task_id)) == 1, (task_id, where(export, task_id))
        old = 86400 * 2
        for state in ("done", "failed"):
            for name in os.listdir(os.path.join(export, state)):
                p = os.path.join(export, state, name)
                st = os.stat(p)
                os.utime(p, (st.st_atime - old, st.st_mtime - old))
        r = cli(via_a, "purge", "--older-than", "1d")
        assert r.returncode == 0, r.stderr
        for state in ("done", "failed"):
            assert [n for n in os.listdir(os.path.join(export, state)) if not n.startswith(".")] == []
        assert [n for n in os.listdir(os.path.join(export, "control")) if not n.startswith(".")] == []
        for d in (a, b):
            assert d.stop() == 0


def re_count(text, needle):
    return text.count(needle)


if __name__ == "__main__":
    run_tests([test_every_verb_on_two_hosts])
