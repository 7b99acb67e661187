#!/usr/bin/env python3
"""make bench, BENCH_ONLY=gate: system calls per keyshare_acquire() + keyshare_release() with a
total budget on (build/bench_gate under strace -c; deterministic), against a spool on this
machine's /tmp where 1, 8 or 32 providers each have another host's call in flight; idle (nothing
changes between acquires), busy (another host starts or ends a call on another provider
before every acquire) and full (the provider called is full: every acquire is a try that says
BUSY, as while a host waits for a place); look: a rescan's keyshare_look() of every provider
(no acquire); and ledger: 64 ended runs of another host in ledger/MONTH/ended/ while the month's
directory changes before every acquire (as whenever a host writes its run's file), against
ledger-flat: the same runs' files in the month's directory (as without ended/). Prints figures;
asserts nothing."""
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
GATE = os.environ.get("BENCH_GATE", os.path.join(ROOT, "build", "bench_gate"))
CYCLES = int(os.environ.get("BENCH_GATE_CYCLES", "1000"))
# The simulated other host's moves (bench_gate.c): not the gate's.
OTHERS = {"mknodat", "renameat"}


def syscalls(providers, cycles, mode):
    """{syscall: count} of one bench_gate run on a fresh spool."""
    base = tempfile.mkdtemp(prefix="imgspool-bench-gate-")
    out = os.path.join(base, "strace.txt")
    try:
        argv = [GATE, os.path.join(base, "spool"), str(providers), str(cycles)] + \
            ([mode] if mode != "idle" else [])
        subprocess.run(["strace", "-c", "-f", "-o", out] + argv, check=True, stdout=subprocess.DEVNULL)
        counts = {}
        with open(out) as f:
            for line in f:
                m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)$", line)
                if m and m.group(2) not in OTHERS | {"total"}:
                    counts[m.group(2)] = int(m.group(1))
        return counts
    finally:
        shutil.rmtree(base, ignore_errors=True)


def main():
    print(f"keyshare gate: system calls per acquire + release with a total budget, "
          f"{CYCLES} cycles (strace -c, deterministic)")
    for mode in ("idle", "busy", "full", "look", "ledger", "ledger-flat"):
        for providers in (1, 8, 32) if not mode.startswith("ledger") else (1,):
            zero, many = syscalls(providers, 0, mode), syscalls(providers, CYCLES, mode)
            diff = {k: (many.get(k, 0) - zero.get(k, 0)) / CYCLES for k in many}
            shown = ", ".join(f"{k} {v:.1f}" for k, v in sorted(diff.items(), key=lambda kv: -kv[1])
                              if v >= 0.05)
            what = "per rescan (a look at each provider)" if mode == "look" else "per acquire"
            print(f"  {providers:2d} providers, {mode}: {sum(diff.values()):6.1f} {what} ({shown})")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
