#!/usr/bin/env python3
"""make bench: what a large backlog in new/ costs the daemon, and what one job costs a file server.
Measured, not asserted.

1. A backlog of BENCH_BACKLOG (100 000) jobs in new/ on the real disk, calls that never end
   (every slot busy, so nothing is claimed while it is measured): the system calls of one
   rescan that finds nothing new (strace -c attached from one rescan's end to the next one's),
   and the time from the daemon's start to the upstream's first request, with that backlog;
   then the system calls from one write of the [metrics] textfile to the next, with no rescan.
2. The spool on an sshfs mount (tests/lib/sshfs.py): every SFTP request the daemon's jobs cost,
   logged by the server (OpenSSH's sftp-server at DEBUG3, one line per request), counted per
   job and grouped by operation and by the step of a job it belongs to; what one rescan of
   a BENCH_SSHFS_BACKLOG (2 000) job backlog costs the server, and the time from the daemon's
   start to its first call with that backlog.
BENCH_PART=backlog, sshfs or metrics (part 1's metrics file only) runs one part.
Everything it makes is under one temporary directory, removed at the end.
"""
import collections
import datetime
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "lib"))
os.environ.setdefault("IMGSPOOLD", os.path.join(ROOT, "build", "imgspoold"))
import harness  # noqa: E402
from sshfs import TwoMounts  # noqa: E402

BACKLOG = int(os.environ.get("BENCH_BACKLOG", "100000"))
SSHFS_JOBS = int(os.environ.get("BENCH_SSHFS_JOBS", "100"))
SSHFS_BACKLOG = int(os.environ.get("BENCH_SSHFS_BACKLOG", "2000"))
# Above the jobs one rescan finds: the daemon keeps up, as it should (a backlog is part 1).
SSHFS_CONCURRENCY = int(os.environ.get("BENCH_SSHFS_CONCURRENCY", "128"))
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
HOST = "benchhost"
RESCAN = "imgspoold: debug: rescan of new/"


def write_jobs(new_dir, count, prefix):
    for i in range(count):
        with open(os.path.join(new_dir, f"{prefix}{i:06d}.json"), "w") as f:
            f.write('{"prompt": "backlog %d"}' % i)


def put_back(spool):
    """Moves what a killed daemon left in running/ back to new/, as an operator would, so
    every run starts on the same backlog with no records in it."""
    running = os.path.join(spool, "running")
    for name in os.listdir(running):
        path = os.path.join(running, name)
        if name.endswith(f"@{HOST}.json") and not name.startswith("."):
            os.rename(path, os.path.join(spool, "new", name[:-len(f"@{HOST}.json")] + ".json"))
        elif os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        elif name.startswith("."):
            os.unlink(path)


def strace_counts(path):
    counts = {}
    with open(path) as f:
        for line in f:
            m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)$", line)
            if m and m.group(2) != "total":
                counts[m.group(2)] = int(m.group(1))
    return counts


def one_rescan(d, out):
    """strace -c on every thread of the daemon from the end of one rescan to the end of the
    next: one poll_interval, with exactly one rescan in it."""
    harness.wait_for(lambda: RESCAN in d.log(), 120, "a rescan")
    seen = d.log().count(RESCAN)
    harness.wait_for(lambda: d.log().count(RESCAN) > seen, 60, "the next rescan")
    seen = d.log().count(RESCAN)
    tracer = subprocess.Popen(["strace", "-c", "-f", "-o", out, "-p", str(d.proc.pid)],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    tracer.stderr.readline()   # "Process N attached"
    harness.wait_for(lambda: d.log().count(RESCAN) > seen, 60, "one rescan under strace")
    tracer.send_signal(signal.SIGINT)
    tracer.wait(60)
    counts = strace_counts(out)
    os.unlink(out)
    return counts


def one_metrics_write(d, prom, out):
    """strace -c on every thread of the daemon from one write of the metrics file to the next:
    one [metrics] interval, with exactly one write in it (each write renames a new inode)."""
    def inode():
        try:
            return os.stat(prom).st_ino
        except FileNotFoundError:
            return None
    harness.wait_for(lambda: inode() is not None, 120, "the metrics file")
    first = inode()
    harness.wait_for(lambda: inode() != first, 60, "a metrics write")
    seen = inode()
    tracer = subprocess.Popen(["strace", "-c", "-f", "-o", out, "-p", str(d.proc.pid)],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    tracer.stderr.readline()   # "Process N attached"
    harness.wait_for(lambda: inode() != seen, 60, "one metrics write under strace")
    tracer.send_signal(signal.SIGINT)
    tracer.wait(60)
    counts = strace_counts(out)
    os.unlink(out)
    return counts


def print_counts(title, runs):
    calls = sorted({c for r in runs for c in r}, key=lambda c: -max(r.get(c, 0) for r in runs))
    print(title)
    for call in calls:
        per = [r.get(call, 0) for r in runs]
        print(f"    {call:16s} " + " ".join(f"{n:8d}" for n in per) +
              f"   {max(per) / BACKLOG:7.3f} per queued job")
    total = [sum(r.values()) for r in runs]
    print(f"    {'total':16s} " + " ".join(f"{n:8d}" for n in total) +
          f"   {max(total) / BACKLOG:7.3f} per queued job")


def logged_at(d, marker, wall0, raw0):
    """Seconds from wall0 to the first log line after raw0 holding marker (its time stamp)."""
    for line in d.raw_log()[raw0:].splitlines():
        if marker in line:
            return datetime.datetime.fromisoformat(line[:29]).timestamp() - wall0
    return float("nan")


def first_call_after_start(env, d):
    """Seconds from the daemon's exec to the upstream's first request, and to the end of its
    first listing of new/ and its first claim, as its log says."""
    before = len(env.fake.requests)
    raw0 = len(d.raw_log())
    started, wall0 = time.monotonic(), time.time()
    d.start(wait_ready=False)
    while len(env.fake.requests) == before:
        if d.exited():
            raise AssertionError(f"the daemon exited:\n{d.log()[-2000:]}")
        if time.monotonic() - started > 600:
            raise AssertionError("no call within 600 s")
        time.sleep(0.001)
    took = time.monotonic() - started
    harness.wait_for(lambda: " claimed" in d.raw_log()[raw0:], 60, "the claim's log line")
    return took, logged_at(d, "rescan of new/", wall0, raw0), logged_at(d, " claimed", wall0, raw0)


def bench_backlog(env, base, rescans_too=True):
    spool = os.path.join(base, "spool")
    for sub in ("new", "tmp"):
        os.makedirs(os.path.join(spool, sub))
    t0 = time.monotonic()
    write_jobs(os.path.join(spool, "new"), BACKLOG, "q")
    made = time.monotonic() - t0
    env.fake.default = {"kind": "b64", "delay": 3600}   # every call hangs: the backlog stays
    d = env.daemon(spool_dir=spool, spool__concurrency=4, spool__poll_interval=5,
                   spool__host_id=HOST, verbose=True)
    firsts, rescans = [], []
    for run in range(RUNS if rescans_too else 0):
        firsts.append(first_call_after_start(env, d))
        rescans.append(one_rescan(d, os.path.join(base, f"strace-{run}.txt")))
        d.kill()
        d.logf.close()
        put_back(spool)
    print(f"backlog benchmark: {BACKLOG} jobs in new/ on {tempfile.gettempdir()} (made in "
          f"{made:.0f} s), concurrency 4, every call hanging, poll_interval 5 s, {RUNS} runs")
    if rescans_too:
        print("  start-up to the first call: " + ", ".join(f"{x[0]:.3f} s" for x in firsts) +
              "   (first listing of new/ done at " + ", ".join(f"{x[1]:.2f}" for x in firsts) +
              " s; first claim at " + ", ".join(f"{x[2]:.2f}" for x in firsts) + " s)")
        print_counts("  system calls of one rescan that finds nothing new (all threads, one "
                     "poll_interval):", rescans)
    # The metrics file with the same backlog: no rescan in the window (poll_interval 3600 s),
    # so what one write of the file costs is all there is, beside the 2 s service tick.
    prom = os.path.join(base, "textfile", "imgspool.prom")
    os.makedirs(os.path.dirname(prom))
    d = env.daemon(spool_dir=spool, spool__concurrency=4, spool__poll_interval=3600,
                   spool__host_id=HOST, verbose=True, metrics__textfile=prom,
                   metrics__interval=2)
    d.start()
    harness.wait_for(lambda: RESCAN in d.log(), 120, "the first listing of new/")
    writes = [one_metrics_write(d, prom, os.path.join(base, f"strace-m{run}.txt"))
              for run in range(RUNS)]
    d.kill()
    d.logf.close()
    put_back(spool)
    print_counts("  system calls from one write of the metrics file to the next ([metrics] "
                 "interval 2 s, all threads, no rescan):", writes)


# ---- sshfs: requests at the file server ------------------------------------------------------

class LoggedMounts(TwoMounts):
    """TwoMounts whose SFTP server is OpenSSH's sftp-server run per connection with a log of
    every request (DEBUG3), one file per connection in base_dir/sftp-logs/."""

    def open(self):
        self.sftp_logs = os.path.join(self.base_dir, "sftp-logs")
        os.makedirs(self.sftp_logs, exist_ok=True)
        self.sftp_wrapper = os.path.join(self.base_dir, "sftp-server-logged")
        with open(self.sftp_wrapper, "w") as f:
            f.write("#!/bin/sh\nexec /usr/lib/openssh/sftp-server -e -l DEBUG3 "
                    f"2>>{self.sftp_logs}/sftp.$$.log\n")
        os.chmod(self.sftp_wrapper, 0o755)
        return super().open()

    def _sshfs_argv(self, mountpoint):
        argv = super()._sshfs_argv(mountpoint)
        return argv[:-2] + ["-o", "sftp_server=" + self.sftp_wrapper] + argv[-2:]

    def log_lines(self):
        lines = []
        for name in sorted(os.listdir(self.sftp_logs)):
            with open(os.path.join(self.sftp_logs, name), errors="replace") as f:
                lines += f.read().splitlines()
        return lines


REQUEST = re.compile(r'request \d+: ([\w-]+)(.*)')
QUOTED = re.compile(r'"([^"]*)"')


def requests_since(m, offset):
    """(operation, path) of every request logged after line offset. sftp-server logs
    "request N: OP" for each request (DEBUG3), with the path on that line or on the next
    line that names one (VERBOSE: lstat name "P", open "P" flags ..., close "P" bytes ...)."""
    out, waiting = [], None
    for line in m.log_lines()[offset:]:
        match = REQUEST.search(line)
        if match and match.group(1) != "sent":
            path = QUOTED.search(match.group(2))
            out.append([match.group(1), path.group(1) if path else ""])
            waiting = None if path else out[-1]
        elif waiting is not None and not match:
            path = QUOTED.search(line)
            if path:
                waiting[1] = path.group(1)
                waiting = None
    return [tuple(r) for r in out]


def step_of(path, ids):
    """Which step of a job a request on path belongs to, and the job's id (or None)."""
    parts = path.split("/")
    name = parts[-1]
    directory = parts[-2] if len(parts) > 1 else ""
    if name in ("new", "deferred", "running", "control", "outbox", "tmp", "hold", "done",
                "failed") or directory == "providers" or name.startswith(".clock"):
        return "per rescan or tick", None
    if name.startswith(".host."):
        return "host lock", None
    job = next((i for i in ids if i in path), None)
    if job is None:
        return "other", None
    if ".done" in path or ".failed" in path or directory in ("done", "failed"):
        return "publish", job
    if directory == "new":
        return "list and claim", job
    if ".partial" in name or ".response" in name or ".target" in name:
        return "call sidecars", job
    return "running", job


def bench_sshfs(env, base):
    m = LoggedMounts(os.path.join(base, "nfs")).open()
    try:
        spool = os.path.join(m.mount_a, "spool")
        env.fake.default = {"kind": "b64"}
        d = env.daemon(spool_dir=spool, spool__concurrency=SSHFS_CONCURRENCY, spool__poll_interval=2,
                       spool__host_id=HOST, verbose=True)
        d.start()
        harness.wait_for(lambda: d.log().count(RESCAN) >= 2, 60, "two rescans")
        export_new = os.path.join(m.export, "spool", "new")
        ids = [f"s{i:04d}" for i in range(SSHFS_JOBS)]
        offset = len(m.log_lines())
        rescans0 = d.log().count(RESCAN)
        for i in ids:      # another host's submissions: straight on the server's disk
            with open(os.path.join(m.export, "spool", "tmp", i + ".json"), "w") as f:
                f.write('{"prompt": "sshfs bench %s"}' % i)
            os.rename(os.path.join(m.export, "spool", "tmp", i + ".json"),
                      os.path.join(export_new, i + ".json"))
        done = os.path.join(m.export, "spool", "done")
        harness.wait_for(lambda: sum(1 for n in os.listdir(done) if n.endswith(".result.json"))
                         == SSHFS_JOBS, 600, "the sshfs jobs")
        reqs = requests_since(m, offset)
        rescans = d.log().count(RESCAN) - rescans0
        by_step = collections.Counter()
        by_op = collections.defaultdict(collections.Counter)
        for op, path in reqs:
            step, job = step_of(path, ids)
            if job is not None:
                by_step[step] += 1
                by_op[step][op] += 1
        per_job = sum(by_step.values()) / SSHFS_JOBS
        print(f"sshfs benchmark: {SSHFS_JOBS} jobs submitted on the server's disk, one daemon on "
              f"an sshfs mount (caches off, as NFS with actimeo=0), every SFTP request logged by "
              f"the server")
        print(f"  {per_job:.1f} requests per job on the job's own files; by step and operation:")
        for step, n in by_step.most_common():
            ops = ", ".join(f"{op} {c / SSHFS_JOBS:.2f}" for op, c in by_op[step].most_common())
            print(f"    {step:16s} {n / SSHFS_JOBS:6.2f}   ({ops})")
        other = collections.Counter(op for op, path in reqs if step_of(path, ids)[1] is None)
        print(f"  not per job, over the {rescans} rescans meanwhile: " +
              ", ".join(f"{op} {c}" for op, c in other.most_common()))
        # A backlog over sshfs: one rescan with every slot busy.
        env.fake.default = {"kind": "b64", "delay": 3600}
        d.stop()
        d.logf.close()
        write_jobs(export_new, SSHFS_BACKLOG, "w")
        d.start()
        harness.wait_for(lambda: d.log().count(RESCAN) >= 1, 120, "the first rescan")
        seen = d.log().count(RESCAN)
        harness.wait_for(lambda: d.log().count(RESCAN) > seen, 60, "a rescan")
        seen = d.log().count(RESCAN)
        offset = len(m.log_lines())
        harness.wait_for(lambda: d.log().count(RESCAN) > seen, 60, "the next rescan")
        ops = collections.Counter(op for op, _ in requests_since(m, offset))
        total = sum(ops.values())
        print(f"  one rescan with {SSHFS_BACKLOG} jobs waiting in new/ (every slot busy): "
              f"{total} requests, {total / SSHFS_BACKLOG:.2f} per queued job (" +
              ", ".join(f"{op} {c}" for op, c in ops.most_common()) + ")")
        # The first call after a start on that backlog, where every stat is a round trip.
        firsts = []
        for _ in range(RUNS):
            d.kill()
            d.logf.close()
            put_back(os.path.join(m.export, "spool"))
            firsts.append(first_call_after_start(env, d))
        print(f"  start-up to the first call with {SSHFS_BACKLOG} jobs waiting: " +
              ", ".join(f"{x[0]:.3f} s" for x in firsts) + "   (first claim at " +
              ", ".join(f"{x[2]:.2f}" for x in firsts) + " s)")
        d.kill()
    finally:
        for x in env.daemons:
            x.kill()
        m.close()


def main():
    env = harness.Env()
    base = tempfile.mkdtemp(prefix="imgspool-bench-backlog-")
    try:
        part = os.environ.get("BENCH_PART", "all")
        if part in ("backlog", "all", "metrics"):
            bench_backlog(env, base, rescans_too=part != "metrics")
        if part in ("sshfs", "all"):
            bench_sshfs(env, base)
    finally:
        for x in env.daemons:
            x.kill()
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(base, ignore_errors=True)
        env.fake.stop()
        for d in env.daemons:
            shutil.rmtree(d.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
