#!/usr/bin/env python3
"""A crash of the file system under a running daemon: every job it reported done survives it.

kill -9 cannot find a missing sync (the killed process loses nothing the page cache holds), so
here the file system itself goes: the daemon runs with sync = auto on a journaled ext4 of our
own (a loop device) against the fake upstream; once it has reported k jobs done, the ext4 is
shut down with EXT4_IOC_SHUTDOWN and EXT4_GOING_FLAGS_NOLOGFLUSH, which drops everything the
journal has not committed (xfstests' godown), the daemon is killed, and the file system is
unmounted and mounted again (the journal replayed). Then every job the daemon's log (on
another file system) says is done is in done/ whole (its job file and result parse, its images
are its prompt's), no job that is done is left to run again, a saved response left in running/
holds more than its header, and a restarted daemon calls the upstream for none of them again.
Three crash points (k). It fails with every sync off (the jobs reported done are back in
new/), and with only sync_file_range off, the wait for writeback before the renames of the
reduced sequence (jobs reported done with empty files: delayed allocation).

Then one job at a time (concurrency 1, each job submitted once the one before is reported
done), so that every publication is a job alone, file by file (its files written out, the
directories' fsyncs committing them): the file system goes right after the k-th job is
reported, for three k, and the same holds, with one call per job. With fsync, fdatasync and
sync_file_range all no-ops (an LD_PRELOAD shim) every job reported done is gone; with
sync_file_range alone a no-op they are there with empty files; with only the directories'
fsyncs no-ops they are gone.

This tests loss at the journal's level only: not a disk that reorders or drops writes from its
cache, nor torn writes (the loop device's backing file keeps every block written to it).
"""
import fcntl
import hashlib
import json
import os
import re
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import LoopExt4, run_tests, wait_for  # noqa: E402
from upstream import png_prompt_sha256  # noqa: E402

EXT4_IOC_SHUTDOWN = (2 << 30) | (4 << 16) | (ord("X") << 8) | 125   # _IOR('X', 125, __u32)
EXT4_GOING_FLAGS_NOLOGFLUSH = 0x2
HOST = "testhost"
JOBS = 160
DONE = re.compile(r"^(\S+) done: ", re.M)


def shut_down(path):
    """The file system of path stops here: what its journal has not committed is lost."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.ioctl(fd, EXT4_IOC_SHUTDOWN, struct.pack("I", EXT4_GOING_FLAGS_NOLOGFLUSH))
    finally:
        os.close(fd)


def reported_done(d):
    return set(DONE.findall(d.log()))


def prompt_of(task_id):
    return f"journal crash {task_id}."


def damage(d, task_id):
    """What is wrong with a job reported done, after the replay: None if nothing."""
    if d.state(task_id) != "done":
        return f"in {d.state(task_id)}"
    try:
        job = json.loads(d.read("done", task_id + ".json"))
        result = d.result(task_id)
    except (OSError, ValueError) as e:
        return f"job file or result unreadable: {e}"
    if job.get("imgspool", {}).get("finished") != "succeeded" or not result.get("images"):
        return "job file or result incomplete"
    want = hashlib.sha256(prompt_of(task_id).encode()).hexdigest()
    for name in result["images"]:
        image = d.read("done", name)
        if png_prompt_sha256(image) != want:
            return f"image {name} not its prompt's ({len(image)} bytes)"
    # Done, and nowhere a daemon would take it up again.
    for other in ("new", "deferred", "failed"):
        if os.path.exists(d.path(other, task_id + ".json")):
            return f"also in {other}/"
    if any(n.startswith(task_id + "@") for n in d.listdir("running")):
        return "also in running/"
    return None


def check_after_crash(d, reported):
    """What the file system holds after the replay, for the jobs the daemon reported done."""
    damaged = {t: why for t in sorted(reported) if (why := damage(d, t))}
    assert not damaged, f"{len(damaged)} of {len(reported)} jobs reported done lost or " \
        f"damaged, e.g. {list(damaged.items())[:5]}"
    running = os.listdir(d.path("running")) if os.path.isdir(d.path("running")) else []
    for name in running:
        if ".response." in name:
            with open(d.path("running", name), "rb") as f:
                data = f.read()
            header, _, body = data.partition(b"\n")
            assert header.startswith(b"imgspool-sidecar ") and body, (name, len(data))
    return sum(".response." in n for n in running)


def crash_and_restart(env, fs, d, jobs):
    """The file system of d's spool goes now, d is killed, the journal replayed: every job d
    reported done is whole in done/ (check_after_crash), its call made; a daemon started again
    finishes every other job of jobs and calls the upstream for none of those reported done.
    Returns the jobs reported done and the number of saved responses found in running/."""
    shut_down(fs.path)
    d.kill()
    reported = reported_done(d)   # read after the kill: the log is complete
    fs.remount()
    responses = check_after_crash(d, reported)
    calls = {t: env.fake.calls(prompt_of(t)) for t in reported}
    assert all(calls.values()), "a job reported done without a call"
    d.start()
    wait_for(lambda: all(d.state(t) in ("done", "failed") for t in jobs), 60,
             "every job to finish after the restart")
    d.stop()
    again = sorted(t for t in reported if env.fake.calls(prompt_of(t)) != calls[t])
    assert not again, f"reported done before the crash, called again after it: {again}"
    assert not d.listdir("failed"), d.listdir("failed")
    return reported, responses


def crash_once(env, fs, trial, k):
    d = env.daemon(spool_dir=os.path.join(fs.path, f"spool{trial}"), spool__concurrency=8,
                   spool__host_id=HOST, spool__sync="auto")
    jobs = [f"t{trial}-{i:03d}" for i in range(JOBS)]
    for task_id in jobs:
        d.submit(task_id, {"prompt": prompt_of(task_id)})
    os.sync()   # the clients' jobs are on disk: what goes missing is the daemon's doing
    d.start()
    assert "the spool is on ext4 with a journal" in d.log(), d.log()
    wait_for(lambda: len(reported_done(d)) >= k or d.exited(), 60, f"{k} jobs reported done")
    reported, responses = crash_and_restart(env, fs, d, jobs)
    print(f"# crash {trial}: {len(reported)} jobs reported done at the crash, all whole in done/, "
          f"{responses} saved responses whole in running/")


def test_a_crash_of_the_journal_loses_no_job_reported_done(env):
    with env.mounted(LoopExt4()) as fs:
        for trial, k in enumerate((8, 40, 100)):
            crash_once(env, fs, trial, k)


def one_by_one_once(env, fs, k):
    """One job at a time (concurrency 1, each submitted once the one before is reported done),
    so each is published alone, file by file: on a journaled ext4 its files only written out and
    the directories' fsyncs committing them (spool-layout §5). The file system goes right after
    the k-th is reported. Nothing syncs the clients' submissions (any fsync on an ext4 commits
    the whole journal, the daemon's renames too): only the daemon's own syncs can have made a
    job reported done durable."""
    d = env.daemon(spool_dir=os.path.join(fs.path, f"alone{k}"), spool__concurrency=1,
                   spool__host_id=HOST, spool__sync="auto")
    d.start()
    assert "the spool is on ext4 with a journal" in d.log(), d.log()
    jobs = [f"a{k}-{i}" for i in range(k)]
    for task_id in jobs:
        d.submit(task_id, {"prompt": prompt_of(task_id)})
        wait_for(lambda: task_id in reported_done(d) or d.exited(), 30, f"{task_id} reported done")
    reported, _ = crash_and_restart(env, fs, d, jobs)
    assert reported == set(jobs), (sorted(reported), d.log()[-2000:])
    calls = {t: env.fake.calls(prompt_of(t)) for t in jobs}
    assert set(calls.values()) == {1}, f"a job alone called more than once: {calls}"
    print(f"# {k} jobs published alone reported done at the crash: all whole in done/ after the "
          "replay, one call each")


def test_a_crash_of_the_journal_loses_no_job_published_alone(env):
    with env.mounted(LoopExt4()) as fs:
        for k in (1, 3, 6):
            one_by_one_once(env, fs, k)


if __name__ == "__main__":
    run_tests([test_a_crash_of_the_journal_loses_no_job_reported_done,
               test_a_crash_of_the_journal_loses_no_job_published_alone])
