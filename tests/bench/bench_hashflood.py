#!/usr/bin/env python3
"""make bench BENCH_ONLY=hashflood: what names a client chooses to collide in the daemon's tables
cost its loop. Measured, not asserted.

BENCH_HASHFLOOD_NAMES (32 768) entries in new/ that the daemon ignores but remembers (symlinks),
named so that their FNV-1a-64 hashes (the unkeyed hash the tables used before) agree in their low
24 bits: one probe chain in an open-addressing table of up to 2^24 slots (a Joux multicollision of
4-character blocks, found by birthday search from a fixed seed). The same count of random names
of the same length is the control. For each: the time from the daemon's start to its first job
done, and the loop thread's CPU (utime + stime of /proc/PID/task/PID/stat) over a window of
BENCH_HASHFLOOD_WINDOW (10) seconds of rescans (poll_interval 1) after it. BENCH_RUNS (2) runs
each. Each daemon's directory is removed after its run.
"""
import itertools
import os
import random
import shutil
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "lib"))
os.environ.setdefault("IMGSPOOLD", os.path.join(ROOT, "build", "imgspoold"))
import harness  # noqa: E402

NAMES = int(os.environ.get("BENCH_HASHFLOOD_NAMES", "32768"))
WINDOW = float(os.environ.get("BENCH_HASHFLOOD_WINDOW", "10"))
RUNS = int(os.environ.get("BENCH_RUNS", "2"))
FNV_PRIME, FNV_OFFSET = 1099511628211, 14695981039346656037
ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


def fnv_step(h, text, mask):
    for c in text.encode():
        h = ((h ^ c) * FNV_PRIME) & mask
    return h


def colliding_names(count, bits=24):
    """count names "x" + blocks + ".json" whose FNV-1a-64 of "n/NAME" (the tables' key for new/)
    agree in their low bits: from each state, two 4-character blocks that lead to one state."""
    mask = (1 << bits) - 1
    h = fnv_step(FNV_OFFSET & mask, "n/x", mask)
    rnd = random.Random(1)
    pairs = []
    while 1 << len(pairs) < count:
        seen = {}
        while True:
            block = "".join(rnd.choice(ALPHABET) for _ in range(4))
            v = fnv_step(h, block, mask)
            if seen.get(v, block) != block:
                pairs.append((seen[v], block))
                h = v
                break
            seen[v] = block
    names = ["x" + "".join(choice) + ".json" for choice in itertools.product(*pairs)]
    return names[:count]


def random_names(count, length):
    rnd = random.Random(2)
    return ["x" + "".join(rnd.choice(ALPHABET) for _ in range(length)) + ".json"
            for _ in range(count)]


def loop_cpu(pid):
    with open(f"/proc/{pid}/task/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(env, names, run_no, label):
    d = env.daemon()
    os.makedirs(d.path("new"), exist_ok=True)
    for n in names:
        os.symlink("/nonexistent", d.path("new", n))
    d.submit("first", {"prompt": f"first {label} {run_no}"})
    t0 = time.monotonic()
    d.start(wait_ready=False)
    harness.wait_for(lambda: d.state("first") == "done", 600, "the first job")
    first = time.monotonic() - t0
    pid = d.proc.pid
    c0, w0 = loop_cpu(pid), time.monotonic()
    harness.wait_for(lambda: time.monotonic() - w0 >= WINDOW, WINDOW + 10, "the window")
    cpu = loop_cpu(pid) - c0
    d.kill()
    shutil.rmtree(d.dir, ignore_errors=True)
    env.daemons.remove(d)
    print(f"  {label:9s} run {run_no}: start -> first job done {first:6.2f} s; loop thread "
          f"{cpu:5.2f} s of CPU in {WINDOW:.0f} s of rescans")


def main():
    env = harness.Env()
    try:
        collide = colliding_names(NAMES)
        mask = (1 << 24) - 1
        chains = len({fnv_step(FNV_OFFSET, "n/" + n, (1 << 64) - 1) & mask for n in collide})
        print(f"hash flooding: {len(collide)} ignored names in new/ ({len(collide[0])} bytes; "
              f"their FNV-1a-64 low 24 bits: {chains} value(s)) against as many random ones")
        for run_no in range(1, RUNS + 1):
            run(env, collide, run_no, "colliding")
            run(env, random_names(len(collide), len(collide[0]) - 6), run_no, "random")
    finally:
        for x in env.daemons:
            x.kill()
        env.fake.stop()
        for d in env.daemons:
            shutil.rmtree(d.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
