#!/usr/bin/env python3
"""make bench, results: what reading a large result costs its readers. Prints figures, asserts
nothing.

  resume   a job killed past its commit (IMGSPOOLD_CRASH_AT=publish:committed) with metadata of
           0, 1 and 16 MiB, restarted under strace: the bytes of its staged result the restart
           reads to resume the publication, and in how many read(2) (deterministic)
  show     imgspool show of the largest job (64 MiB, its metadata nested 28 deep, as
           test_publish makes it) and its result, put in done/ as the daemon leaves them: its
           wall time, peak RSS (GNU time) and the bytes it prints (deterministic); and of a
           job of 64 KiB, the most it still indents
  ls       imgspool ls and gallery of large files: wall time and peak RSS (listing())

The daemon is the real one against the fake upstream (tests/lib/harness.py), in a scratch
directory removed at the end."""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
os.environ.setdefault("IMGSPOOLD", os.path.join(ROOT, "build", "imgspoold"))
CLI = os.environ.get("IMGSPOOL", os.path.join(ROOT, "build", "imgspool"))
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


def deep_job(size):
    """A job of about size bytes whose metadata is nested as deep as max_depth allows."""
    unit = "[" * 28 + "0.5" + "]" * 28
    deep = "[" + ",".join([unit] * ((size - 4096) // (len(unit) + 1))) + "]"
    return '{"prompt":"the largest result","metadata":{"deep":' + deep + '}}', deep


def scratch_spool():
    spool = tempfile.mkdtemp(prefix="bench-show-", dir=SCRATCH)
    for sub in ("tmp", "new", "running", "deferred", "done", "failed", "hold", "control"):
        os.makedirs(os.path.join(spool, sub))
    return spool


def run_cli(spool, *args):
    """(wall s, peak RSS KiB, bytes printed) of one imgspool run."""
    rss_path = os.path.join(SCRATCH, "show.rss")
    out_path = os.path.join(SCRATCH, "show.out")
    with open(out_path, "w") as out:
        started = time.monotonic()
        subprocess.run(["/usr/bin/time", "-f", "%M", "-o", rss_path, CLI, "-d", spool, *args],
                       stdout=out, stdin=subprocess.DEVNULL, check=True)
        took = time.monotonic() - started
    rss = int(open(rss_path).read().split()[-1])
    printed = os.path.getsize(out_path)
    for path in (rss_path, out_path):
        os.unlink(path)
    return took, rss, printed


def show(size, label):
    spool = scratch_spool()
    job, deep = deep_job(size)
    with open(os.path.join(spool, "done", "big.json"), "w") as f:
        f.write(job)
    with open(os.path.join(spool, "done", "big.result.json"), "w") as f:
        f.write('{\n  "task_id": "big",\n  "status": "succeeded",\n  "images": [],\n'
                '  "metadata": {"deep":' + deep + '}\n}\n')
    took, rss, printed = run_cli(spool, "show", "big")
    print(f"show, {label}: job {len(job)} bytes, result {len(job) + 40} bytes: {took:.2f} s, "
          f"peak RSS {rss >> 10} MiB, printed {printed} bytes", flush=True)
    shutil.rmtree(spool)


def listing():
    """ls of a job in new/ whose provider is a 9 MB array of {} (parsed whole, it took 690 MB),
    ls of a 32 MiB result in done/ (scanned once per member), gallery of a 9 MB job nested
    deep (parsed whole for its prompt)."""
    spool = scratch_spool()
    with open(os.path.join(spool, "new", "prov.json"), "w") as f:
        f.write('{"prompt":"p","provider":[' + ",".join(["{}"] * ((9 << 20) // 3)) + '],"model":"m"}')
    with open(os.path.join(spool, "done", "res.json"), "w") as f:
        f.write('{"prompt":"p"}')
    with open(os.path.join(spool, "done", "res.result.json"), "w") as f:
        f.write('{\n  "task_id": "res",\n  "status": "succeeded",\n  "provider": "apiyi",\n'
                '  "images": [],\n  "attempts": [],\n  "metadata": "' + "x" * (32 << 20) + '"\n}\n')
    job, deep = deep_job(9 << 20)
    with open(os.path.join(spool, "failed", "deep.json"), "w") as f:
        f.write(job)
    with open(os.path.join(spool, "failed", "deep.result.json"), "w") as f:
        f.write('{"task_id": "deep", "status": "failed", "images": []}')
    for label, args in (("ls new, 9 MB provider", ["ls", "new"]),
                        ("ls done, 32 MiB result", ["ls", "done"]),
                        ("gallery failed, 9 MB job", ["gallery", "-o", os.path.join(spool, "www"),
                                                      "failed"])):
        took, rss, _ = run_cli(spool, *args)
        print(f"{label}: {took:.2f} s, peak RSS {rss >> 10} MiB", flush=True)
    shutil.rmtree(spool)


def main():
    only = [s for s in os.environ.get("BENCH_RESULTS", "resume,show,ls").split(",") if s]
    try:
        if "resume" in only:
            for mib in (0, 1, 16):
                resume(mib << 20)
        if "show" in only:
            show(64 << 10, "64 KiB (indented)")
            show(64 << 20, "64 MiB (as written)")
        if "ls" in only:
            listing()
    finally:
        shutil.rmtree(SCRATCH, ignore_errors=True)


if __name__ == "__main__":
    main()
