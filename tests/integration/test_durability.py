#!/usr/bin/env python3
"""A full disk, a burst past inotify's queue, and maildir's tmp/ rule (issue 4)."""
import os
import signal
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import Tmpfs, run_tests, wait_for  # noqa: E402


def free_mb(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize / 2**20


def test_disk_full_keeps_the_paid_result(env):
    with env.mounted(Tmpfs("16m")) as fs:
        spool = os.path.join(fs.path, "spool")
        d = env.daemon(spool_dir=spool, spool__min_free_mb=2, spool__disk_retry_interval=1,
                       verbose=True)
        d.start()
        # A client's job already written to tmp/: renaming it in later needs no free space.
        os.makedirs(d.path("tmp"), exist_ok=True)
        with open(d.path("tmp", "waiting.json"), "w") as f:
            f.write('{"prompt": "waits for room"}')
        # Fill the file system but for ~2.5 MB: the response (3 MB) and its image cannot land.
        filler = os.path.join(fs.path, "filler")
        with open(filler, "wb") as f:
            f.write(b"\0" * int((free_mb(fs.path) - 2.5) * 2**20))
        env.fake.script("big paid image", [{"kind": "b64", "pad_mb": 3}])
        d.submit("big", {"prompt": "big paid image"})
        wait_for(lambda: "big error: cannot publish the result" in d.log(), 20, "publishing to fail")
        assert d.state("big") == "running", "the job must stay recoverable in running/"
        assert d.listdir("failed") == []
        # Below min_free_mb the daemon claims nothing more.
        os.rename(d.path("tmp", "waiting.json"), d.path("new", "waiting.json"))
        wait_for(lambda: "claiming nothing until there is room" in d.log(), 10, "the claim stop")
        wait_for(lambda: d.log().count("imgspoold: debug: rescan") >= 2, 10, "two rescans")
        assert d.state("waiting") == "new"
        os.unlink(filler)
        assert d.wait_finished("big", 30) == "done"
        assert d.wait_finished("waiting", 30) == "done"
        assert env.fake.calls("big paid image") == 1, "the paid image was fetched twice"
        assert len(d.read("done", "big.png")) > 2 * 2**20   # a 3 MB body of base64
        d.stop()


def test_burst_past_the_inotify_queue(env):
    # fsync is free on tmpfs: this measures the queue, not the disk.
    with env.mounted(Tmpfs("1g")) as fs:
        with open("/proc/sys/fs/inotify/max_queued_events") as f:
            queue = int(f.read())
        count = max(20000, queue + 1000)
        d = env.daemon(spool_dir=os.path.join(fs.path, "spool"), spool__concurrency=64,
                       spool__poll_interval=3600, verbose=True)
        d.start()
        os.makedirs(d.path("tmp"), exist_ok=True)
        for i in range(count):
            with open(d.path("tmp", f"b{i:05d}.json"), "w") as f:
                f.write('{"prompt": "burst %d"}' % i)
        # Stopped, the daemon cannot drain inotify while every file lands in new/ at once.
        d.send_signal(signal.SIGSTOP)
        for i in range(count):
            os.rename(d.path("tmp", f"b{i:05d}.json"), d.path("new", f"b{i:05d}.json"))
        d.send_signal(signal.SIGCONT)
        wait_for(lambda: "inotify queue overflowed" in d.log(), 20, "the overflow to be noticed")
        started = time.monotonic()
        wait_for(lambda: len(os.listdir(d.path("done"))) == 3 * count, 600, f"{count} jobs done")
        took = time.monotonic() - started
        print(f"# {count} jobs (queue {queue}) done in {took:.1f}s, {count / took:.0f} jobs/s "
              "(ASan build, fake upstream in Python)")
        assert d.listdir("new") == [] and d.listdir("failed") == []
        d.stop()


def test_tmp_files_older_than_36_hours_are_removed(env):
    d = env.daemon()
    os.makedirs(d.path("tmp"), exist_ok=True)
    # More than one slice of names (tmpclean.c takes 256 at a time), hidden ones too.
    old = [d.path("tmp", f"{dot}abandoned{i}.json") for i in range(300) for dot in ("", ".")]
    young = [d.path("tmp", f"in-progress{i}.json") for i in range(300)]
    for paths, age_h in ((old, 37), (young, 35)):
        for path in paths:
            with open(path, "w") as f:
                f.write("{")
            t = time.time() - age_h * 3600
            os.utime(path, (t, t))
    d.start()
    wait_for(lambda: not any(os.path.exists(p) for p in old), 20,
             "the 37-hour-old files to be removed")
    assert all(os.path.exists(p) for p in young), "a file younger than 36 hours was removed"


def test_a_slow_tmp_holds_up_no_job(env):
    """tmp/ is the clients': a stat there that takes 60 s (strace delays it; a tmp/ of 20 000
    files over sshfs took 23.5 s, one round trip each) must not hold up the loop: the first job
    is done while the clean-up still waits, on a helper thread."""
    d = env.daemon()
    os.makedirs(d.path("tmp"), exist_ok=True)
    with open(d.path("tmp", "slowstat.json"), "w") as f:
        f.write("{")
    trace = os.path.join(d.dir, "strace.log")
    d.wrapper = ["strace", "-f", "-qq", "-o", trace, "-P", "slowstat.json", "-e",
                 "trace=newfstatat,statx", "-e", "inject=newfstatat,statx:delay_enter=60000000"]
    d.submit("first", {"prompt": "not held up by tmp/"})
    d.start()
    assert d.wait_finished("first", timeout=30) == "done", d.log()[-2000:]
    assert os.path.exists(d.path("tmp", "slowstat.json"))
    d.kill()    # its helper may still be in the 60 s stat


if __name__ == "__main__":
    run_tests([
        test_tmp_files_older_than_36_hours_are_removed,
        test_a_slow_tmp_holds_up_no_job,
        test_disk_full_keeps_the_paid_result,
        test_burst_past_the_inotify_queue,
    ])
