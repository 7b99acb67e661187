#!/usr/bin/env python3
"""One daemon per host id on a spool: a second one refuses to start and says why, on one host or
through a network file system; a restart after kill -9 starts at once (issue 8, item 20)."""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import run_tests, wait_for  # noqa: E402


def refused(d):
    d.start(wait_ready=False)
    wait_for(d.exited, 10, "the second daemon to refuse")
    assert d.proc.returncode != 0, "it exited 0"
    return d.log()


def test_a_second_daemon_with_the_same_host_id_refuses(env):
    a = env.daemon().start()
    log = refused(env.daemon(spool_dir=a.spool))
    assert "host_id 'testhost'" in log and f"pid {a.proc.pid}" in log, log
    assert "ready" not in log
    a.submit("still-served", {"prompt": "the first daemon goes on"})
    assert a.wait_finished("still-served") == "done"


def test_restart_after_kill_9_starts_at_once(env):
    d = env.daemon().start()
    d.kill()
    d.start()            # waits for "ready": a dead holder is seen by its pid, not by a lease
    with open(d.path("running", ".host.testhost")) as f:
        assert json.load(f)["pid"] == d.proc.pid
    assert d.stop() == 0
    assert not os.path.exists(d.path("running", ".host.testhost")), "a clean exit keeps its lock"


def test_a_lock_of_another_machine_is_judged_by_its_heartbeat(env):
    d = env.daemon()
    os.makedirs(d.path("running"), exist_ok=True)
    lock = d.path("running", ".host.testhost")
    with open(lock, "w") as f:
        json.dump({"pid": 4242, "start_time": 1, "hostname": "another-machine", "boot_id": "x"}, f)
    log = refused(d)
    assert "another-machine" in log, log
    old = os.stat(lock).st_mtime - 3600        # that machine stopped heartbeating an hour ago
    os.utime(lock, (old, old))
    d.start()
    assert "took over the host lock" in d.log()


def test_same_host_id_through_two_mounts_refuses(env):
    with env.two_mounts() as mounts:
        a = env.daemon(spool_dir=os.path.join(mounts.mount_a, "spool"), spool__host_id="shared").start()
        log = refused(env.daemon(spool_dir=os.path.join(mounts.mount_b, "spool"),
                                 spool__host_id="shared"))
        assert "host_id 'shared'" in log, log
        assert a.stop() == 0

if __name__ == "__main__":
    run_tests([
        test_a_second_daemon_with_the_same_host_id_refuses,
        test_restart_after_kill_9_starts_at_once,
        test_a_lock_of_another_machine_is_judged_by_its_heartbeat,
        test_same_host_id_through_two_mounts_refuses,
    ])
