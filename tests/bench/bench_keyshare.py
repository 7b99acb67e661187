#!/usr/bin/env python3
"""make bench, part 2: what sharing a key's limits through the spool costs on a network file
system (two sshfs mounts of one directory, tests/lib/sshfs.py). Measured, not asserted.

Prints: the file system calls per job the daemon makes with a provider's shared concurrency,
rpm and daily budget on, minus those without (strace -c over the same jobs), the time one file
operation takes on the mount, and how long host B takes to see a 429 pause written by host A
(from the pause file's appearance on the file server to B's log line; B rescans every second).
"""
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

JOBS = int(os.environ.get("BENCH_SHARE_JOBS", "200"))
CALLS = ["openat", "close", "unlinkat", "getdents64", "newfstatat", "statx", "utimensat", "renameat",
         "mkdirat", "fsync", "write", "read"]


def count_syscalls(env, spool_dir, settings, prefix):
    """Runs JOBS jobs through one daemon with strace -c attached; returns {syscall: count}."""
    out = os.path.join(tempfile.gettempdir(), f"strace-{prefix}.txt")
    d = env.daemon(spool_dir=spool_dir, spool__concurrency=8, spool__poll_interval=5,
                   spool__host_id=f"bench{prefix}", **settings)
    d.start()
    tracer = subprocess.Popen(["strace", "-c", "-f", "-o", out, "-e", "trace=" + ",".join(CALLS),
                               "-p", str(d.proc.pid)], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    tracer.stderr.readline()   # "Process N attached"
    os.makedirs(os.path.join(spool_dir, "tmp"), exist_ok=True)
    for i in range(JOBS):
        tmp = os.path.join(spool_dir, "tmp", f"{prefix}{i:04d}.json")
        with open(tmp, "w") as f:
            f.write('{"prompt": "share bench %s %d"}' % (prefix, i))
        os.rename(tmp, os.path.join(spool_dir, "new", f"{prefix}{i:04d}.json"))
    harness.wait_for(lambda: sum(1 for n in os.listdir(os.path.join(spool_dir, "done"))
                                 if n.startswith(prefix) and n.endswith(".result.json")) == JOBS,
                     600, "the jobs")
    tracer.send_signal(signal.SIGINT)
    tracer.wait(60)
    d.stop()
    counts = {}
    with open(out) as f:
        for line in f:
            m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)$", line)
            if m:
                counts[m.group(2)] = int(m.group(1))
    os.unlink(out)
    return counts


def stamp(line):
    return datetime.datetime.fromisoformat(line[:29]).timestamp()


def main():
    env = harness.Env()
    base = tempfile.mkdtemp(prefix="imgspool-bench-share-")
    mounts = TwoMounts(base).open()
    try:
        spool_a = os.path.join(mounts.mount_a, "spool")
        os.makedirs(os.path.join(mounts.export, "spool", "new"), exist_ok=True)
        plain = count_syscalls(env, spool_a, {}, "p")
        shared = count_syscalls(env, spool_a, {"provider__concurrency": 8, "provider__rpm": 100000,
                                               "provider__budget_daily": 1000000,
                                               "prices__gpt-image-2": "0.01"}, "s")
        print(f"keyshare benchmark: {JOBS} jobs through one daemon on an sshfs mount "
              f"(concurrency 8), with the shared concurrency, rpm and daily budget vs without")
        extra = 0.0
        for call in CALLS:
            diff = (shared.get(call, 0) - plain.get(call, 0)) / JOBS
            if abs(diff) >= 0.05:
                print(f"  {call:12s} {diff:+6.2f} per job")
            if call not in ("read", "write", "close"):
                extra += diff
        probe = os.path.join(spool_a, "new")
        t0 = time.monotonic()
        for _ in range(200):
            os.stat(probe)
        per_op = (time.monotonic() - t0) / 200 * 1000
        print(f"  file operations other than read/write/close: {extra:+.1f} per job; "
              f"one stat on the mount takes {per_op:.2f} ms")

        # Pause propagation: host A (inotify sees the job at once) gets a 429; host B rescans
        # every second.
        env.fake.default = {"kind": "b64", "delay": 0.05}
        settings = dict(spool__concurrency=4, spool__poll_interval=1, verbose=True)
        a = env.daemon(spool_dir=spool_a, spool__host_id="benchA", **settings).start()
        b = env.daemon(spool_dir=os.path.join(mounts.mount_b, "spool"), spool__host_id="benchB",
                       **settings).start()
        pause = os.path.join(mounts.export, "spool", "providers", "apiyi", "pause")
        delays = []
        for k in range(5):
            seen = b.raw_log().count("paused by another host's 429")
            before = os.stat(pause).st_mtime if os.path.exists(pause) else 0
            with open(os.path.join(spool_a, "tmp", f"x{k}.json"), "w") as f:
                # The first call of each gets a 429 (the fake's prompt directive), later ones work.
                f.write('{"prompt": "pause bench %d [fake:429_retry_after retry_after=2|b64]"}' % k)
            os.rename(os.path.join(spool_a, "tmp", f"x{k}.json"),
                      os.path.join(spool_a, "new", f"x{k}.json"))
            harness.wait_for(lambda: os.path.exists(pause) and os.stat(pause).st_mtime != before,
                             30, "the pause file")
            written = time.time()
            harness.wait_for(lambda: b.raw_log().count("paused by another host's 429") > seen, 30,
                             "host B to see the pause")
            line = [x for x in b.raw_log().splitlines() if "paused by another host's 429" in x][-1]
            delays.append(max(0.0, stamp(line) - written))
            harness.wait_for(lambda: os.path.exists(os.path.join(mounts.export, "spool", "deferred",
                                                                 f"x{k}.json")) or
                             os.path.exists(os.path.join(mounts.export, "spool", "done",
                                                         f"x{k}.json")), 30, "the job")
        a.stop()
        b.stop()
        print(f"  a 429 on host A seen by host B after {min(delays):.2f}-{max(delays):.2f} s "
              f"(mean {sum(delays) / len(delays):.2f} s over {len(delays)}; poll_interval 1 s)")
    finally:
        for d in env.daemons:
            d.kill()
        mounts.close()
        shutil.rmtree(base, ignore_errors=True)
        env.close(True)


if __name__ == "__main__":
    main()
