#!/usr/bin/env python3
"""make bench, the operator's side: imgspool ls, ls -j, stat and gallery on a spool of 100 000
finished jobs (BENCH_CLI_JOBS), timed with the optimized build. Prints figures, asserts nothing.

The spool is made directly in the shapes the daemon publishes (job file, result, one small PNG
per job; a tenth failed), in a temporary directory on the real disk, with a warm page cache,
as an operator's second look at a busy spool would find it. Each figure is that one process's own
(wait4, and GNU time for its peak RSS), and a second pass under strace -c counts its system calls, the figure that does not
depend on the machine's load. BENCH_CLI_SPOOL=DIR keeps the spool in DIR (made when missing) for
the next run."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "fake"))
from upstream import png_for  # noqa: E402

JOBS = int(os.environ.get("BENCH_CLI_JOBS", "100000"))
CLI = os.environ.get("IMGSPOOL", os.path.join(ROOT, "build", "imgspool"))


def make_spool(root):
    for sub in ("tmp", "new", "running", "deferred", "done", "failed", "hold", "control"):
        os.makedirs(os.path.join(root, sub))
    png = png_for("bench")
    now = time.time()
    for i in range(JOBS):
        failed = i % 10 == 0
        state = "failed" if failed else "done"
        # Not "." and digits only at the end: such names are the daemon's own (spool-layout.md §3).
        task_id = f"{int(now)}.{i:06d}.4242.bench.j{i:015x}"
        d = os.path.join(root, state)
        with open(os.path.join(d, task_id + ".json"), "w") as f:
            f.write('{"prompt": "bench job %d, a lighthouse at dusk", "model": "gpt-image-2"}' % i)
        result = {
            "task_id": task_id, "status": "failed" if failed else "succeeded",
            "provider": "apiyi", "model": "gpt-image-2", "dialect": "openai",
            "images": [] if failed else [task_id + ".png"], "retry_count": 0,
            "billed_attempts": 1,
            "attempts": [{"started_at": "2026-11-25T11:02:03.120+08:00", "latency_ms": 48210,
                          "http_status": 400 if failed else 200, "transport": "done",
                          "outcome": "failed" if failed else "succeeded",
                          "billed": "no" if failed else "yes", "cost": 0 if failed else 0.04,
                          "error_code": "content_refused" if failed else None,
                          "request_id": "20261125110203120934abcd"}],
            "latency_ms": 48391, "usage": {"total_tokens": 213},
            "cost": {"amount": 0 if failed else 0.04, "currency": "USD", "estimated": False},
            "error": {"code": "content_refused", "message": "refused", "upstream_message": None}
            if failed else None,
            "created_at": "2026-11-25T11:02:03.001+08:00", "updated_at": "2026-11-25T11:02:51.392+08:00",
            "metadata": {"i": i},
        }
        with open(os.path.join(d, task_id + ".result.json"), "w") as f:
            json.dump(result, f, indent=2)
        if not failed:
            with open(os.path.join(d, task_id + ".png"), "wb") as f:
                f.write(png)
        os.utime(os.path.join(d, task_id + ".json"), (now - i, now - i))


def timed(base, *args):
    """(wall s, CPU s, peak RSS MiB, bytes on stdout) of one run. CPU is this child's alone
    (wait4; RUSAGE_CHILDREN would add up every child so far). The peak RSS comes from GNU time,
    which forks it from a small process: a child forked from Python inherits Python's RSS as the
    floor of its ru_maxrss (the kernel keeps the high-water mark across exec)."""
    out_path, rss_path = os.path.join(base, "stdout"), os.path.join(base, "maxrss")
    with open(out_path, "wb") as out, open(os.path.join(base, "stderr"), "wb") as err:
        start = time.monotonic()
        proc = subprocess.Popen(["/usr/bin/time", "-f", "%M", "-o", rss_path, CLI, *args],
                                stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        took = time.monotonic() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"imgspool {' '.join(args)} failed: {open(os.path.join(base, 'stderr')).read()}")
    rss_kib = int(open(rss_path).read().split()[-1])
    return took, usage.ru_utime + usage.ru_stime, rss_kib / 1024, os.path.getsize(out_path)


def syscalls(base, *args):
    """System calls of one run, from strace -c."""
    trace = os.path.join(base, "strace.txt")
    subprocess.run(["strace", "-c", "-o", trace, CLI, *args], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, check=True)
    for line in open(trace):
        f = line.split()
        if f and f[-1] == "total":
            return int(f[3] if len(f) >= 6 else f[2])
    return -1


def main():
    base = tempfile.mkdtemp(prefix="imgspool-bench-cli-", dir=os.environ.get("BENCH_DIR", "/var/tmp"))
    try:
        spool = os.environ.get("BENCH_CLI_SPOOL") or os.path.join(base, "spool")
        start = time.monotonic()
        if not os.path.isdir(os.path.join(spool, "new")):
            make_spool(spool)
        made = time.monotonic() - start
        print(f"imgspool benchmark: {JOBS} finished jobs ({JOBS // 10} failed), spool on {spool} "
              f"(made in {made:.0f} s), optimized build, warm cache")
        timed(base, "-d", spool, "ls")   # warms the cache
        for label, args in (("ls", ["ls"]), ("ls -j", ["ls", "-j"]), ("stat", ["stat"]),
                            ("gallery", ["gallery", "-o", os.path.join(base, "gallery")])):
            took, cpu, rss, out = timed(base, "-d", spool, *args)
            size, pages = out, ""
            if label == "gallery":   # its pages and index, beside the largest one
                sizes = [os.path.getsize(e.path) for e in os.scandir(os.path.join(base, "gallery"))]
                size = sum(sizes)
                pages = f"  {len(sizes) - 1} pages + index, largest {max(sizes) / 1e6:.2f} MB"
            calls = syscalls(base, "-d", spool, *args)
            print(f"  {label:8s} {took:7.2f} s wall  {cpu:6.2f} s CPU ({cpu / JOBS * 1e6:4.0f} µs/job)  "
                  f"{JOBS / took:8.0f} jobs/s  peak RSS {rss:6.1f} MiB  output {size / 1e6:6.1f} MB  "
                  f"{calls / JOBS:5.2f} syscalls/job{pages}")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
