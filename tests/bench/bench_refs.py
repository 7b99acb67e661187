#!/usr/bin/env python3
"""make bench, BENCH_ONLY=refs: what one job naming the same 20 MiB reference image 16 times
costs the daemon (review10 F3): its peak RSS (VmHWM) before and after, and what its event loop
thread read (/proc/PID/task/PID/io rchar, deterministic) and spent in CPU for the job. Before
the fix each reference was read whole on the loop and copied twice (320 MiB read, ~1 GB peak);
now the file is opened once and the transfer sends it from the file. Both dialects: OpenAI's
multipart, Gemini's inline base64 (read once, encoded for each mention). [limits] max_refs_mb
at 320, its highest (the default, 50, refuses this job). Three runs each. Prints figures; asserts
nothing."""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "lib"))
os.environ.setdefault("IMGSPOOLD", os.path.join(ROOT, "build", "imgspoold"))
import harness  # noqa: E402

MIB = 1 << 20
REFS = 16


def loop_thread(pid):
    """(CPU seconds, bytes read) of the daemon's main thread: its event loop."""
    with open(f"/proc/{pid}/task/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    with open(f"/proc/{pid}/task/{pid}/io") as f:
        rchar = next(int(line.split()[1]) for line in f if line.startswith("rchar"))
    return cpu, rchar


def vm_hwm_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))
    return kb / 1024


def one_run(env, model):
    d = env.daemon(provider__timeout=120, limits__max_refs_mb=REFS * 20)
    try:
        d.start()
        pid = d.proc.pid
        os.makedirs(d.path("refs"))
        with open(d.path("refs", "big.png"), "wb") as f:
            f.write(b"\x89PNG\r\n\x1a\n" + bytes(20 * MIB - 8))
        d.submit("warm", {"prompt": "warm"})
        d.wait_finished("warm", 60)
        before = vm_hwm_mb(pid)
        cpu0, read0 = loop_thread(pid)
        job = {"prompt": "big refs", "images": ["refs/big.png"] * REFS}
        if model:
            job["model"] = model
        d.submit("big", job)
        state = d.wait_finished("big", 300)
        cpu1, read1 = loop_thread(pid)
        return state, before, vm_hwm_mb(pid), cpu1 - cpu0, (read1 - read0) / MIB
    finally:
        d.stop()
        d.cleanup(True)


def main():
    env = harness.Env()
    try:
        print(f"reference images: one job naming one 20 MiB image {REFS} times "
              f"(release build, fake upstream), three runs each")
        for label, model in (("openai multipart", None), ("gemini inline", "gemini-3-pro-image-preview")):
            for run in range(3):
                state, before, after, cpu, read = one_run(env, model)
                print(f"  {label:17} run {run + 1}: {state}; peak RSS {before:.0f} -> {after:.0f} MB; "
                      f"loop thread read {read:.1f} MiB, {cpu:.2f} s CPU")
    finally:
        env.close(True)


if __name__ == "__main__":
    main()
