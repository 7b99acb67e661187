#!/usr/bin/env python3
"""Rescans of new/ on a backlog (issue 14): a rescan that finds nothing new stats no queued job
(nor a running one), a job that starts at once is not stat'ed before its claim, an ignored
file changed in place is still looked at again, and jobs start in order of their mtime, also
when an older job arrives behind a backlog."""
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import run_tests, wait_for  # noqa: E402

RESCAN = "imgspoold: debug: rescan of new/"


def write_job(d, name, job, mtime=None):
    tmp = d.path("tmp", name)
    with open(tmp, "w") as f:
        f.write(job)
    if mtime is not None:
        os.utime(tmp, (mtime, mtime))
    os.rename(tmp, d.path("new", name))


def stats_while(d, action):
    """The stat-family system calls of every thread of the daemon while action() runs, as
    strace -y prints them (each dirfd with its path)."""
    out = os.path.join(tempfile.gettempdir(), "rescan-strace.txt")
    tracer = subprocess.Popen(["strace", "-f", "-y", "-o", out, "-e",
                               "trace=newfstatat,statx,stat,lstat", "-p", str(d.proc.pid)],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        tracer.stderr.readline()   # "Process N attached"
        action()
    finally:
        tracer.send_signal(signal.SIGINT)
        tracer.wait(30)
    with open(out) as f:
        trace = f.read()
    os.unlink(out)
    return trace


def test_a_rescan_stats_no_queued_job(env):
    """Nor a running one of its own (its file, its sidecars): their cost does not grow with
    the backlog or with the calls in flight."""
    env.fake.default = {"kind": "b64", "delay": 60}   # every slot stays busy: a backlog
    d = env.daemon(verbose=True, spool__concurrency=4, spool__poll_interval=1)
    os.makedirs(d.path("new"))
    os.makedirs(d.path("tmp"))
    for i in range(2000):
        write_job(d, f"q{i:04d}.json", '{"prompt": "backlog %d"}' % i)
    d.start()
    wait_for(lambda: env.fake.inflight == 4, 20, "four calls")
    d.wait_rescans(1)
    trace = stats_while(d, lambda: d.wait_rescans(2))
    stats = re.findall(r'"[^"]*q\d{4}[^"]*"', trace)
    assert not stats, (f"two rescans with 1996 queued jobs and 4 running stat'ed {len(stats)} "
                       f"of their files: {sorted(set(stats))[:6]}")
    lines = re.findall(r"rescan of new/: (\d+) entries, (\d+) stat'ed", d.log())
    assert lines and lines[-1] == ("1996", "0"), lines[-3:]


def test_a_deferred_job_is_stated_when_listed_and_when_due_only(env):
    """deferred/ holds a backlog too (a 429 storm): its jobs wait for their mtime, which a
    rescan does not read again until it has come."""
    d = env.daemon(verbose=True, spool__poll_interval=1)
    for sub in ("deferred", "tmp"):
        os.makedirs(d.path(sub))
    later = time.time() + 3600
    for i in range(500):
        tmp = d.path("tmp", f"w{i:03d}.json")
        with open(tmp, "w") as f:
            f.write('{"prompt": "waits %d"}' % i)
        os.utime(tmp, (later, later))
        os.rename(tmp, d.path("deferred", f"w{i:03d}.json"))
    d.start()
    d.wait_rescans(1)
    soon = time.time() + 2
    tmp = d.path("tmp", "soon.json")
    with open(tmp, "w") as f:
        f.write('{"prompt": "due in two seconds"}')
    os.utime(tmp, (soon, soon))
    os.rename(tmp, d.path("deferred", "soon.json"))
    trace = stats_while(d, lambda: d.wait_rescans(2))
    stats = re.findall(r'/deferred>, "w\d{3}\.json"', trace)
    assert not stats, f"two rescans stat'ed jobs in deferred/ that are not due {len(stats)} times"
    assert d.wait_finished("soon") == "done"
    assert time.time() >= soon
    assert len(d.listdir("deferred")) == 500


def test_a_job_that_starts_at_once_is_not_stated_before_its_claim(env):
    """Its mtime (its place in line) matters only if it has to wait: the claim reads it, and
    the claim's rename says whether it is still there."""
    d = env.daemon(spool__concurrency=4).start()

    def three_jobs():
        for i in range(3):
            d.submit(f"now{i}", {"prompt": f"at once {i}"})
            assert d.wait_finished(f"now{i}") == "done"
    trace = stats_while(d, three_jobs)
    stats = re.findall(r'/new>, "now\d\.json"', trace)
    assert not stats, f"3 jobs claimed at once were stat'ed {len(stats)} times in new/ first"


def test_an_ignored_file_changed_in_place_is_looked_at_again(env):
    """No inotify event and no new inode: only a stat can tell (issue 8, item 1)."""
    d = env.daemon(verbose=True, limits__max_job_bytes=1024).start()
    job = '{"prompt": "shrunk in place"}'
    write_job(d, "shrunk.json", job + " " * 4000)        # valid JSON, over max_job_bytes
    wait_for(lambda: "ignoring 'new/shrunk.json'" in d.log(), 10, "the file to be ignored")
    d.wait_rescans(2)
    os.truncate(d.path("new", "shrunk.json"), len(job))  # IN_MODIFY only: not watched
    assert d.wait_finished("shrunk") == "done"


def claimed_order(d):
    return re.findall(r"^(j\d+) claimed", d.log(), re.M)


def test_jobs_start_in_order_of_mtime_behind_a_backlog(env):
    d = env.daemon(verbose=True, spool__concurrency=1)
    for sub in ("new", "tmp", "control"):
        os.makedirs(d.path(sub), exist_ok=True)
    open(d.path("control", "pause"), "w").close()   # nothing starts until the queue is built
    base = 1_700_000_000
    # Names against the grain of their mtimes, so name order is not the answer.
    for i in range(40):
        write_job(d, f"j{i:02d}.json", '{"prompt": "order %d"}' % i, base + 1000 - i)
    d.start()
    wait_for(lambda: re.search(r"rescan of new/: 40 entries", d.log()), 20, "the 40 jobs listed")
    # A job that was held and is released keeps its mtime, and so its place in line.
    write_job(d, "j99.json", '{"prompt": "order 99"}', base)
    wait_for(lambda: re.search(r"rescan of new/: 41 entries", d.log()), 20, "the 41st job")
    os.unlink(d.path("control", "pause"))
    wait_for(lambda: len(claimed_order(d)) == 41, 60, "every job claimed")
    want = ["j99"] + [f"j{i:02d}" for i in reversed(range(40))]
    assert claimed_order(d) == want, claimed_order(d)


def test_the_first_claims_do_not_wait_for_every_job_to_be_placed(env):
    """A backlog whose stats are slow (strace delays each newfstatat by 20 ms: placing the 150
    jobs takes 3 s, as a cold NFS cache with a large backlog would): the first claims go
    SCAN_FIRST_SLICE_MS after the listing began, among the jobs placed so far, before the last
    of them is placed (they waited for every one before); once all are placed, the rest start
    oldest first (spool-layout.md §3)."""
    d = env.daemon(verbose=True, spool__concurrency=2)
    env.fake.default = {"kind": "b64", "delay": 0.3}
    for sub in ("new", "tmp", "deferred"):
        os.makedirs(d.path(sub), exist_ok=True)
    base = 1_700_000_000
    for i in range(150):   # names against the grain of their mtimes
        write_job(d, f"j{i:03d}.json", '{"prompt": "slow place %d"}' % i, base + 1000 - i)
    # A deferred job long due, older than all: among the first to start.
    with open(d.path("deferred", "due.json"), "w") as f:
        f.write('{"prompt": "due long ago"}')
    os.utime(d.path("deferred", "due.json"), (base, base))
    log = os.path.join(d.dir, "strace.log")
    d.wrapper = ["strace", "-f", "-qq", "-tt", "-y", "-o", log, "-e", "trace=newfstatat,renameat,renameat2",
                 "-e", "inject=newfstatat:delay_enter=20000"]
    d.start()
    wait_for(lambda: len(re.findall(r"^j\d+ claimed", d.log(), re.M)) >= 40, 60, "40 claims")
    d.stop()
    stats, claims, due_claimed = [], [], None
    with open(log, errors="replace") as f:
        for n, line in enumerate(f):
            m = re.search(r'newfstatat\(\d+<[^>]*/new>, "(j\d+)\.json"', line)
            if m:
                stats.append((n, m.group(1)))
            m = re.search(r'rename\w*\(\d+<[^>]*/new>, "(j\d+)\.json", \d+<[^>]*/running>', line)
            if m:
                claims.append((n, m.group(1)))
            if re.search(r'rename\w*\(\d+<[^>]*/deferred>, "due\.json", \d+<[^>]*/running>', line):
                due_claimed = n
    placed = {}
    for n, name in stats:
        placed.setdefault(name, n)
    assert len(placed) >= 140, f"only {len(placed)} jobs stat'ed in new/"
    last_placed = max(placed.values())
    early = [name for n, name in claims if n < last_placed]
    late = [name for n, name in claims if n > last_placed]
    assert early, "no claim before the last job was placed"
    assert due_claimed is not None and due_claimed < claims[1][0], "the due job was not first"
    # Early claims take the oldest among the jobs placed before them, not claimed yet.
    for n, name in claims:
        if n < last_placed:
            taken = {c for m, c in claims if m < n}
            waiting = [x for x, at in placed.items() if at < n and x not in taken]
            assert name == max(waiting), (name, max(waiting))
    # Once all are placed: strictly oldest first (highest number first) among those left.
    left = sorted(set(placed) - set(early), reverse=True)
    assert late == left[:len(late)], (late[:10], left[:10])
    print(f"# {len(early)} claims before the last of {len(placed)} jobs was placed, "
          f"{len(late)} after, in order")


if __name__ == "__main__":
    run_tests([
        test_a_rescan_stats_no_queued_job,
        test_a_deferred_job_is_stated_when_listed_and_when_due_only,
        test_a_job_that_starts_at_once_is_not_stated_before_its_claim,
        test_an_ignored_file_changed_in_place_is_looked_at_again,
        test_jobs_start_in_order_of_mtime_behind_a_backlog,
        test_the_first_claims_do_not_wait_for_every_job_to_be_placed,
    ])
