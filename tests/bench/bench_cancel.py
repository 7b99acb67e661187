#!/usr/bin/env python3
"""make bench, BENCH_ONLY=cancel: what cancelling 1 000 calls in flight in one turn of the loop
costs the loop thread, as the second SIGTERM's grace cut does (build/bench_cancel): its time in
the cancels (three runs), and under strace -f its system calls meanwhile (deterministic): its
eventfd writes waking the transfer thread, and futex calls (a cancel that waits for that thread
would make them). Prints figures; asserts nothing."""
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BENCH = os.environ.get("BENCH_CANCEL", os.path.join(ROOT, "build", "bench_cancel"))
CALLS = int(os.environ.get("BENCH_CANCEL_CALLS", "1000"))


def loop_syscalls():
    """{syscall: count} the loop thread made between the markers of one traced run."""
    base = tempfile.mkdtemp(prefix="imgspool-bench-cancel-")
    out = os.path.join(base, "strace.txt")
    try:
        subprocess.run(["strace", "-f", "-e", "trace=!epoll_wait", "-o", out,
                        "env", "MARK=1", BENCH, str(CALLS)],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        counts, loop_pid, eventfds, between = {}, None, set(), False
        with open(out) as f:
            for line in f:
                m = re.match(r"(\d+)\s+(\w+)\((\d*)(.*)", line)
                if not m:
                    continue
                pid, name, fd, rest = m.groups()
                if name == "execve":
                    loop_pid = pid
                ev = re.search(r"\)\s*=\s*(\d+)", rest)
                if name == "eventfd2" and ev:
                    eventfds.add(ev.group(1))
                if pid != loop_pid or name == "exit_group":
                    continue
                if name == "write" and fd == "2":
                    between = '"cancels' in rest
                    continue
                if between:
                    key = "eventfd write" if name == "write" and fd in eventfds else name
                    counts[key] = counts.get(key, 0) + 1
        return counts
    finally:
        shutil.rmtree(base, ignore_errors=True)


def main():
    print(f"cancels: {CALLS} calls in flight cancelled in one turn of the loop (the grace cut)")
    for _ in range(3):
        run = subprocess.run([BENCH, str(CALLS)], check=True, capture_output=True, text=True)
        print("  " + run.stdout.strip())
    counts = loop_syscalls()
    shown = ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))
    print(f"  loop thread's system calls in them (strace -f, deterministic): "
          f"{sum(counts.values())} ({shown or 'none'})")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
