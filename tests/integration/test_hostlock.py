#!/usr/bin/env python3
"""One daemon per host id on a spool: a second one refuses to start and says why, on one host or
through a network file system; a restart after kill -9 starts at once (issue 8, item 20)."""
import json
import os
import signal
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


def test_an_empty_stale_lock_is_taken_over(env):
    # An empty file reads as no bytes at all: comparing two such reads must not crash the start.
    d = env.daemon()
    os.makedirs(d.path("running"), exist_ok=True)
    lock = d.path("running", ".host.testhost")
    open(lock, "w").close()
    old = os.stat(lock).st_mtime - 3600
    os.utime(lock, (old, old))
    d.start()
    assert "took over the host lock" in d.log() and lock_pid(d) == d.proc.pid, d.log()
    assert d.stop() == 0


def stale_lock_of_another_machine(d):
    """A lock whose holder stopped heartbeating an hour ago, on another machine."""
    os.makedirs(d.path("running"), exist_ok=True)
    lock = d.path("running", ".host.testhost")
    with open(lock, "w") as f:
        json.dump({"pid": 4242, "start_time": 1, "hostname": "another-machine", "boot_id": "x"}, f)
    old = os.stat(lock).st_mtime - 3600
    os.utime(lock, (old, old))
    return lock


def start_stopped_at(d, point):
    """Starts d, which stops itself (SIGSTOP) at the named point of taking the host lock."""
    d.start(wait_ready=False, extra_env={"IMGSPOOLD_STOP_AT": point})

    wait_for(d.stopped, 10, f"the daemon to stop at '{point}'")


def lock_pid(d):
    with open(d.path("running", ".host.testhost")) as f:
        return json.load(f)["pid"]


def test_two_daemons_taking_over_one_stale_lock_at_once(env):
    """Both judge the stale lock dead; the one that moves second finds another lock than the one
    it judged, puts it back and refuses, and the first keeps its lock."""
    late = env.daemon()
    stale_lock_of_another_machine(late)
    first = env.daemon(spool_dir=late.spool)
    start_stopped_at(late, "hostlock:stale")                     # judged it stale
    start_stopped_at(first, "hostlock:stale,hostlock:taken")     # so did this one
    first.send_signal(signal.SIGCONT)
    wait_for(lambda: "took over the host lock" in first.log(), 10, "the first to take it over")
    late.send_signal(signal.SIGCONT)
    wait_for(lambda: late.exited() or "imgspoold: ready" in late.log(), 10, "the late one to decide")
    assert late.exited() and late.proc.returncode == 1, f"both took the lock over:\n{late.log()}"
    assert "ready" not in late.log() and "host_id 'testhost'" in late.log(), late.log()
    first.send_signal(signal.SIGCONT)                            # on with its start-up
    wait_for(lambda: "imgspoold: ready" in first.log() or first.exited(), 10, "the first to start")
    assert lock_pid(first) == first.proc.pid, "the lock is not the first daemon's any more"
    first.submit("after-race", {"prompt": "the first daemon goes on"})
    assert first.wait_finished("after-race") == "done"
    assert not first.exited(), first.log()
    first.assert_not_logged("no longer ours")
    assert first.stop() == 0
    left = sorted(n for n in os.listdir(first.path("running")) if n.startswith(".host"))
    assert left == [], f"a lock or a temporary file was left behind: {left}"


def test_a_lock_made_while_the_stale_one_is_set_aside_wins(env):
    """A daemon that finds no lock at all takes it at once; one that had just set the stale lock
    aside then finds the name taken (EEXIST) and refuses."""
    slow = env.daemon()
    stale_lock_of_another_machine(slow)
    start_stopped_at(slow, "hostlock:aside")                     # the stale lock is set aside
    quick = env.daemon(spool_dir=slow.spool).start()
    slow.send_signal(signal.SIGCONT)
    wait_for(slow.exited, 10, "the slow one to refuse")
    assert slow.proc.returncode == 1 and "ready" not in slow.log(), slow.log()
    assert lock_pid(quick) == quick.proc.pid
    assert quick.stop() == 0


def test_a_lock_that_goes_while_it_is_read_is_taken(env):
    """The holder stops cleanly between our link (EEXIST) and our read of its lock: we start."""
    holder = env.daemon().start()
    late = env.daemon(spool_dir=holder.spool)
    start_stopped_at(late, "hostlock:exists")
    assert holder.stop() == 0                                  # removes its lock
    late.send_signal(signal.SIGCONT)
    wait_for(lambda: late.exited() or "imgspoold: ready" in late.log(), 10, "the start")
    assert not late.exited(), f"a lock that went away made the start fail:\n{late.log()}"
    assert lock_pid(late) == late.proc.pid
    assert late.stop() == 0


def host_names(d):
    return sorted(n for n in os.listdir(d.path("running")) if n.startswith(".host"))


def test_a_kill_between_the_link_and_the_unlink_leaves_a_lock_a_restart_takes(env):
    """The lock linked, its temporary name not yet removed: two links. A restart judges it like
    any lock (its holder is dead), takes it over and removes the temporary name."""
    d = env.daemon()
    start_stopped_at(d, "hostlock:linked")
    killed_pid = d.proc.pid
    assert os.stat(d.path("running", ".host.testhost")).st_nlink == 2
    d.kill()
    d.start()
    assert "took over the host lock" in d.log() and f"pid {killed_pid}" in d.log(), d.log()
    assert lock_pid(d) == d.proc.pid
    assert host_names(d) == [".host.testhost"], f"left behind: {host_names(d)}"
    assert os.stat(d.path("running", ".host.testhost")).st_nlink == 1
    assert d.stop() == 0


def test_a_two_link_lock_is_judged_by_its_content_and_age(env):
    """Another machine's lock with a second link: refused while heartbeated (naming its holder),
    taken over once it is a lease old."""
    d = env.daemon()
    lock = stale_lock_of_another_machine(d)
    second = d.path("running", ".host.testhost.4242.0badc0de.tmp")
    os.link(lock, second)
    os.utime(lock)                                     # heartbeated just now
    log = refused(d)
    assert "another-machine" in log and "pid 4242" in log, log
    old = os.stat(lock).st_mtime - 3600
    os.utime(lock, (old, old))
    d.start()
    assert "took over the host lock" in d.log() and lock_pid(d) == d.proc.pid, d.log()
    assert host_names(d) == [".host.testhost"], f"left behind: {host_names(d)}"
    assert d.stop() == 0


def test_a_daemon_that_lost_its_lock_stops(env):
    """At once, with calls in flight, and without touching its jobs: the new holder of the host
    id has adopted them (a drain would still move them)."""
    env.fake.default = {"kind": "b64", "delay": 30}
    # atexit=1: ASan reports from an atexit handler, which must not run while helper threads
    # may still rename the jobs' files (the process stops with _exit).
    d = env.daemon(spool__lease_timeout=2).start(
        extra_env={"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:atexit=1"})
    for i in range(3):
        d.submit(f"inflight{i}", {"prompt": f"in flight {i}"})
    wait_for(lambda: len(env.fake.requests) >= 3, 10, "three calls in flight")
    lock = d.path("running", ".host.testhost")
    with open(lock + ".planted", "w") as f:            # another daemon with this host_id took it
        json.dump({"pid": 4242, "start_time": 1, "hostname": "another-machine", "boot_id": "x"}, f)
    os.rename(lock + ".planted", lock)
    wait_for(d.exited, 10, "the daemon to stop")
    assert d.proc.returncode == 1, d.log()
    assert "no longer ours" in d.log() and "another-machine" in d.log(), d.log()
    assert "AddressSanitizer" not in d.log() and "Stats:" not in d.log(), d.log()
    with open(lock) as f:
        assert json.load(f)["pid"] == 4242, "the new holder's lock was touched"
    assert sorted(n for n in os.listdir(d.path("running")) if n.endswith("@testhost.json")) == \
        [f"inflight{i}@testhost.json" for i in range(3)], "its jobs were moved"
    assert not os.listdir(d.path("new")), "its jobs were put back"


def test_a_lock_removed_by_hand_is_made_again(env):
    d = env.daemon(spool__lease_timeout=2).start()
    os.unlink(d.path("running", ".host.testhost"))
    wait_for(lambda: os.path.exists(d.path("running", ".host.testhost")), 10, "the lock again")
    assert lock_pid(d) == d.proc.pid and not d.exited()
    assert d.stop() == 0


def test_same_host_id_through_two_mounts_refuses(env):
    with env.two_mounts() as mounts:
        a = env.daemon(spool_dir=os.path.join(mounts.mount_a, "spool"), spool__host_id="shared",
                       spool__lease_timeout=4).start()   # heartbeats every second
        log = refused(env.daemon(spool_dir=os.path.join(mounts.mount_b, "spool"),
                                 spool__host_id="shared"))
        assert "host_id 'shared'" in log, log
        lock = os.path.join(mounts.export, "spool", "running", ".host.shared")
        assert a.stop() == 0
        assert not os.path.exists(lock), "a clean exit through sshfs keeps its lock"
        # Through sshfs an inode number follows the name: only the content tells whose it is.
        a.start()
        planted = os.path.join(mounts.mount_b, "spool", "running", "planted")
        with open(planted, "w") as f:
            json.dump({"pid": 4242, "start_time": 1, "hostname": "another-machine", "boot_id": "x"}, f)
        os.rename(planted, os.path.join(mounts.mount_b, "spool", "running", ".host.shared"))
        wait_for(a.exited, 20, "the daemon whose lock was taken to stop")
        assert a.proc.returncode == 1 and "another-machine" in a.log(), a.log()

if __name__ == "__main__":
    run_tests([
        test_a_second_daemon_with_the_same_host_id_refuses,
        test_restart_after_kill_9_starts_at_once,
        test_a_lock_of_another_machine_is_judged_by_its_heartbeat,
        test_an_empty_stale_lock_is_taken_over,
        test_same_host_id_through_two_mounts_refuses,
        test_two_daemons_taking_over_one_stale_lock_at_once,
        test_a_lock_made_while_the_stale_one_is_set_aside_wins,
        test_a_lock_that_goes_while_it_is_read_is_taken,
        test_a_kill_between_the_link_and_the_unlink_leaves_a_lock_a_restart_takes,
        test_a_two_link_lock_is_judged_by_its_content_and_age,
        test_a_daemon_that_lost_its_lock_stops,
        test_a_lock_removed_by_hand_is_made_again,
    ])
