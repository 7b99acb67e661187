#!/usr/bin/env python3
"""make bench, results: what reading a large result costs its readers. Prints figures, asserts
nothing.

  resume   a job killed past its commit (IMGSPOOLD_CRASH_AT=publish:committed) with metadata of
           0, 1 and 16 MiB, restarted under strace: the bytes of its staged result the restart
           reads to resume the publication, and in how many read(2) (deterministic)

The daemon is the real one against the fake upstream (tests/lib/harness.py), in a scratch
directory removed at the end."""
import os
import re
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
os.environ.setdefault("IMGSPOOLD", os.path.join(ROOT, "build", "imgspoold"))
sys.path.insert(0, os.path.join(ROOT, "tests", "lib"))
from harness import SCRATCH, Env, wait_for  # noqa: E402


def reads_of(trace, suffix):
    """Bytes and read(2) calls strace saw on files whose name ends in suffix."""
    fds, total, calls = {}, 0, 0
    for line in open(trace):
        m = re.search(r'openat\(.*"([^"]*)".*= (\d+)$', line)
        if m:
            fds[m.group(2)] = m.group(1)
            continue
        m = re.search(r'read\((\d+),.*= (\d+)$', line)
        if m and fds.get(m.group(1), "").endswith(suffix):
            total += int(m.group(2))
            calls += 1
    return total, calls


def resume(meta_bytes):
    env = Env()
    trace = os.path.join(SCRATCH, "resume.strace")
    try:
        d = env.daemon(limits__max_job_bytes=max(meta_bytes + 4096, 1 << 20))
        d.submit("big", '{"prompt":"resume","n":2,"metadata":"' + "m" * meta_bytes + '"}')
        d.start(wait_ready=False, extra_env={"IMGSPOOLD_CRASH_AT": "publish:committed"})
        wait_for(d.exited, 120, "the daemon to kill itself at its commit")
        d.wrapper = ["strace", "-f", "-qq", "-e", "trace=openat,read,close", "-o", trace]
        d.start()
        d.wait_finished("big", 120)
        d.stop()
        size = os.path.getsize(d.path("done", "big.result.json"))
        total, calls = reads_of(trace, "big.result.json")
        print(f"resume, metadata {meta_bytes >> 20} MiB: staged result {size} bytes, "
              f"read {total} bytes of it in {calls} read(2)", flush=True)
    finally:
        env.close(True)
        if os.path.exists(trace):
            os.unlink(trace)


def main():
    try:
        for mib in (0, 1, 16):
            resume(mib << 20)
    finally:
        shutil.rmtree(SCRATCH, ignore_errors=True)


if __name__ == "__main__":
    main()
