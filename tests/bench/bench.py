#!/usr/bin/env python3
"""make bench: per-job overhead of the optimized imgspoold, measured, not asserted.

Runs build/imgspoold against the fake upstream (no generation delay) on a spool in a temporary
directory on the real disk (fsync included), and prints: jobs/s end to end, the daemon's CPU
time per job, its peak memory, and the CPU an idle daemon uses.
The fake (Python) is usually the throughput bottleneck; CPU per job is the daemon's own figure.
"""
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "lib"))
os.environ.setdefault("IMGSPOOLD", os.path.join(ROOT, "build", "imgspoold"))
import harness  # noqa: E402

JOBS = int(os.environ.get("BENCH_JOBS", "2000"))
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def peak_rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main():
    env = harness.Env()
    try:
        d = env.daemon(spool__concurrency=32, spool__poll_interval=5)
        d.start()
        pid = d.proc.pid
        # Idle: nothing to do for 3 s. An idle daemon must not spin.
        cpu0 = cpu_seconds(pid)
        time.sleep(3)   # measuring idleness is the point here: this is a benchmark, not a test
        idle = cpu_seconds(pid) - cpu0

        os.makedirs(d.path("tmp"), exist_ok=True)
        for i in range(JOBS):
            with open(d.path("tmp", f"b{i:05d}.json"), "w") as f:
                f.write('{"prompt": "bench %d", "metadata": {"i": %d}}' % (i, i))
        cpu0 = cpu_seconds(pid)
        start = time.monotonic()
        for i in range(JOBS):
            os.rename(d.path("tmp", f"b{i:05d}.json"), d.path("new", f"b{i:05d}.json"))
        harness.wait_for(lambda: len(os.listdir(d.path("done"))) == 3 * JOBS, 600, "all jobs")
        took = time.monotonic() - start
        cpu = cpu_seconds(pid) - cpu0
        rss = peak_rss_mb(pid)
        d.stop()
        print(f"imgspoold benchmark: {JOBS} jobs, concurrency 32, spool on {tempfile.gettempdir()} "
              f"(fsync on), fake upstream with no delay")
        print(f"  end to end       {JOBS / took:8.0f} jobs/s   ({took:.2f} s)")
        print(f"  daemon CPU       {cpu / JOBS * 1000:8.3f} ms per job (user+sys)")
        print(f"  peak RSS         {rss:8.1f} MiB")
        print(f"  idle CPU         {idle / 3 * 100:8.3f} % over 3 s")
    finally:
        env.close(True)


if __name__ == "__main__":
    main()
