#!/usr/bin/env python3
"""make bench: what one job costs the optimized imgspoold, against a fake upstream that is never
the bottleneck, next to what a raw HTTP client reaches against the same fake in the same run.
Measured and printed with the issue 14 target and the ratio beside each figure; asserts nothing.

The fake is build/fastup (tests/bench/fastup.c: C, epoll, keep-alive, the OpenAI Images body of
upstream-api.md 6.1 with a valid PNG, an optional fixed delay). The raw clients are wrk (fixed
duration, for the instant upstream) and build/loadgen (tests/bench/loadgen.c: exactly N requests
over C connections, for the 1 s upstream, where a fixed duration would cut the last second off).
The daemon's time runs from the first job's rename into new/ to the last rename into done/ (the
directory's mtime); CPU is utime+stime from /proc (the loop thread is the main thread, libcurl's
transfer thread is named imgspool-http). A ratio to a client is the median over runs of (daemon
run / the client run right after it), so a burst of load from a neighbour weighs on both sides.

Sections (BENCH_ONLY picks some, comma-separated; the Makefile's bench target also knows parse,
cli, keyshare, gate, cancel, rescan and results, which are other programs):
  idle        CPU of an idle daemon over 3 s; the loop thread's wake-ups per second over
              BENCH_WAKE_SECONDS (10; its voluntary context switches: one per sleep of its
              epoll_wait, counted by the kernel) with the default timers (poll_interval 5,
              lease_timeout 60), idle and with a retry waiting in memory (deferred/ removed)
              that is due while an operator pauses its provider (the Python fake, for its 429)
  throughput  instant upstream, BENCH_JOBS jobs, concurrency 64, spool on a private tmpfs:
              jobs/s vs wrk -c64 req/s, and vs build/curlgen (tests/bench/curlgen.c: the
              daemon's libcurl options and multi socket loop without jobs, 64 at once: what the
              HTTP library alone costs), CPU per job (all threads, the loop thread); medians of
              BENCH_RUNS runs, daemon and clients interleaved
  instructions the same case under valgrind's callgrind, BENCH_INSTR_JOBS jobs (500), counted
              from the first job to the last (start-up left out): user-space instructions and
              allocations (malloc, calloc, realloc calls) per job, per thread: deterministic
              (within a few percent: how claims fall into turns of the loop) where CPU times
              are not; the kernel's part is not counted (the syscalls section counts its calls)
  syscalls    the same case once more under strace -f (every call traced): system calls per
              job, all threads, the top ten, fsync+fdatasync+syncfs per job (deterministic
              where the others are noisy), and the same per thread: the loop (the main
              thread), the I/O helpers (named imgspool-io), libcurl's transfer thread
              (imgspool-http), any other, any born later
  ext4        the throughput case, fsync on, BENCH_EXT4_JOBS jobs, on (a) a fresh journaled ext4
              the bench makes (a sparse file under BENCH_LOOP_DIR, a loop device, mkfs.ext4 and
              mount with their defaults; unmounted, detached and removed at the end) and (b)
              the disk itself (a directory under BENCH_DISK_DIR), described from /proc/mounts
              and /sys/fs/ext4 (journal or not, mount options), and a private tmpfs; their runs
              alternated, medians of BENCH_RUNS: jobs/s and its ratio to the tmpfs run just
              before, CPU per job (all threads, and in the kernel), sync calls per job (perf
              stat on their tracepoints: counted in the kernel, nothing slowed); on (a) also
              journal commits, device flushes, write requests and KiB written per job (the
              kernel's counters; the bench's own job files included), and the commits and
              flushes of BENCH_EXT4_ALONE_JOBS (30) jobs one at a time
  inflight    a 1 s upstream, BENCH_INFLIGHT calls in flight (1000), BENCH_INFLIGHT_WAVES (3)
              times as many jobs (more waves weigh the start-up less): jobs/s vs loadgen with
              as many connections doing as many requests, and curlgen --reuse
              likewise (libcurl alone: the floor of one thread on libcurl); the calls waiting at
              the fake sampled every ~25 ms: their time-weighted mean (jobs/s is about that
              over 1 s) and how long until all were first in flight
  rss         BENCH_RSS_INFLIGHT jobs (10000) at once, concurrency as many; the fake holds every
              answer until all the calls are in flight (fastup --hold): the daemon's peak RSS
              (VmHWM), how long it took to have them all in flight, and the peak RSS of curlgen
              holding as many calls the same way (what libcurl itself takes); then, under
              valgrind's dhat, BENCH_HEAP_INFLIGHT (2000) calls held the same way: the heap's
              bytes and blocks per call in flight at its peak (deterministic, where RSS depends on
              the load; the daemon's own 0.2 MB included)
Knobs: BENCH_JOBS (2000), BENCH_RUNS (3), BENCH_INSTR_JOBS (500: valgrind is slow),
BENCH_SYSCALL_JOBS (1000: the counts per job hardly move with it, strace is slow),
BENCH_SYSCALLS_ALL=1 (every call, not the top ten),
BENCH_SYSCALLS_TRACE=FILE (keep the trace there, to see what each call is for),
BENCH_CALLGRIND_KEEP=DIR (keep callgrind's files there, one a thread, for callgrind_annotate),
BENCH_EXT4_JOBS (500: fsync on a virtual disk is slow), BENCH_EXT4_ALONE_JOBS (30), BENCH_INFLIGHT (1000),
BENCH_INFLIGHT_WAVES (3), BENCH_RSS_INFLIGHT (10000), BENCH_HEAP_INFLIGHT (2000), BENCH_DISK_DIR (/var/tmp: where the ext4
case makes its spool on the disk), BENCH_LOOP_DIR (/var/tmp: where it puts its loop file system's
backing file),
BENCH_ONLY (all). Example, one section fast:
  make build/imgspoold build/fastup build/loadgen &&
  BENCH_ONLY=syscalls BENCH_JOBS=500 python3 tests/bench/bench.py
or `make bench BENCH_ONLY=throughput,syscalls`.
"""
import contextlib
import json
import os
import re
import resource
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "lib"))
os.environ.setdefault("IMGSPOOLD", os.path.join(ROOT, "build", "imgspoold"))
import harness  # noqa: E402
from fastup import FastUpstream, curlgen, loadgen  # noqa: E402

JOBS = int(os.environ.get("BENCH_JOBS", "2000"))
SYSCALL_JOBS = int(os.environ.get("BENCH_SYSCALL_JOBS", str(min(JOBS, 1000))))
EXT4_JOBS = int(os.environ.get("BENCH_EXT4_JOBS", str(min(JOBS, 500))))
EXT4_ALONE_JOBS = int(os.environ.get("BENCH_EXT4_ALONE_JOBS", "30"))
SYSCALLS_ALL = os.environ.get("BENCH_SYSCALLS_ALL") == "1"
INSTR_JOBS = int(os.environ.get("BENCH_INSTR_JOBS", str(min(JOBS, 500))))
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
INFLIGHT = int(os.environ.get("BENCH_INFLIGHT", "1000"))
INFLIGHT_WAVES = int(os.environ.get("BENCH_INFLIGHT_WAVES", "3"))
RSS_INFLIGHT = int(os.environ.get("BENCH_RSS_INFLIGHT", "10000"))
HEAP_INFLIGHT = int(os.environ.get("BENCH_HEAP_INFLIGHT", "2000"))
WAKE_SECONDS = int(os.environ.get("BENCH_WAKE_SECONDS", "10"))
SECTIONS = ("idle", "throughput", "instructions", "syscalls", "ext4", "inflight", "rss")
ONLY = [s for s in os.environ.get("BENCH_ONLY", "").split(",") if s]
TICK = os.sysconf("SC_CLK_TCK")
CONCURRENCY = 64
KEY = harness.TEST_KEY


def wanted(section):
    return not ONLY or section in ONLY


# -- the daemon's side -----------------------------------------------------------------------

def cpu_ticks(pid, tid=None):
    """(user, system) clock ticks of the process (every thread, dead ones too) or one thread."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    with open(path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])


def named_thread(pid, name):
    """The id of the daemon's thread called name (src/http.h's HTTP_THREAD_NAME), or None."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/comm") as f:
            if f.read().strip() == name:
                return int(tid)
    return None


HTTP_THREAD = "imgspool-http"


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


SYNC_CALLS = ("fsync", "fdatasync", "syncfs", "sync_file_range")


class Run:
    """One daemon on spool_dir against an upstream; jobs() pushes jobs through it. With
    count_syncs, self.syncs counts the daemon's sync calls (all threads) from the first job
    submitted until it is stopped: perf stat counting their tracepoints in the kernel, which
    stops nothing (strace's stops at those calls alone cost a fifth of the jobs/s on tmpfs)."""

    def __init__(self, upstream, spool_dir, concurrency, wrapper=None, count_syncs=False):
        self.spool_dir = spool_dir
        self.upstream = upstream
        self.count_syncs = count_syncs
        self.perf = self.syncs = self.writebacks = None
        # Quiet settings: no rescans during a run, nothing but jobs on the loop.
        self.d = harness.Daemon(upstream, spool_dir=spool_dir, wrapper=wrapper,
                                spool__concurrency=concurrency, spool__poll_interval=60,
                                spool__settle_time=5, spool__host_id="bench",
                                provider__timeout=120, provider__connect_timeout=30)

    def __enter__(self):
        try:
            self.d.start()
            self.pid = self.d.proc.pid
            if self.count_syncs:
                self.perf_dir = os.path.join(self.d.dir, "perf")
                os.mkdir(self.perf_dir)
                ctl, ack = (os.path.join(self.perf_dir, x) for x in ("ctl", "ack"))
                os.mkfifo(ctl)
                os.mkfifo(ack)
                # Counters open disabled (-D -1); jobs() enables them and waits for perf's ack.
                self.perf = subprocess.Popen(
                    ["perf", "stat", "-x,", "-D", "-1", "--control", f"fifo:{ctl},{ack}",
                     "-o", os.path.join(self.perf_dir, "out"), "-p", str(self.pid), "-e",
                     ",".join(f"syscalls:sys_enter_{c}" for c in SYNC_CALLS)],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE, text=True)
        except BaseException:
            self.__exit__(*sys.exc_info())
            raise
        return self

    def count_from_now(self):
        # O_RDWR: opening a FIFO so never blocks, whether perf is there or not.
        ctl = os.open(os.path.join(self.perf_dir, "ctl"), os.O_RDWR)
        ack = os.open(os.path.join(self.perf_dir, "ack"), os.O_RDWR)
        try:
            os.write(ctl, b"enable\n")
            # perf writes "ack\n" with its NUL.
            if not select.select([ack], [], [], 30)[0] or not os.read(ack, 16).startswith(
                    b"ack\n"):
                raise RuntimeError(f"perf stat did not start counting: {self.end_perf()[1]}")
        finally:
            os.close(ctl)
            os.close(ack)

    def end_perf(self):
        """Stops perf stat; returns (its counts, by call, or None; its error output)."""
        self.perf.send_signal(signal.SIGINT)
        try:
            err = self.perf.communicate(timeout=60)[1]
        except subprocess.TimeoutExpired:
            self.perf.kill()
            err = self.perf.communicate()[1]
        counts = {}
        try:
            with open(os.path.join(self.perf_dir, "out")) as f:
                for line in f:
                    fields = line.split(",")
                    if len(fields) > 2 and fields[2].startswith("syscalls:sys_enter_"):
                        counts[fields[2][len("syscalls:sys_enter_"):]] = (
                            int(fields[0]) if fields[0].isdigit() else 0)   # "<not counted>"
        except FileNotFoundError:
            pass
        return (counts if len(counts) == len(SYNC_CALLS) else None), err.strip()

    def __exit__(self, *exc):
        try:
            if self.perf and self.perf.returncode is None:
                counts, err = self.end_perf()
                if counts is None and exc[0] is None:
                    raise RuntimeError(f"perf stat counted nothing: {err}")
                # sync_file_range waits for a writeback and commits nothing (a journaled
                # ext4's saved responses, spool-layout §5): counted apart.
                self.syncs = sum(v for k, v in counts.items()
                                 if k != "sync_file_range") if counts else None
                self.writebacks = counts.get("sync_file_range") if counts else None
        finally:
            try:
                self.d.stop(timeout=120)
            finally:
                self.d.cleanup(True)
                shutil.rmtree(self.spool_dir, ignore_errors=True)

    def daemon_pid(self):
        """The daemon's own pid (under a wrapper, the wrapper's child)."""
        return self.pid

    def prepare(self, n, prefix="b"):
        tmp = os.path.join(self.spool_dir, "tmp")
        os.makedirs(tmp, exist_ok=True)
        names = [f"{prefix}{i:06d}.json" for i in range(n)]
        for i, name in enumerate(names):
            with open(os.path.join(tmp, name), "w") as f:
                f.write('{"prompt": "bench %d", "metadata": {"i": %d}}' % (i, i))
        return names

    def finished(self):
        n = 0
        for state in ("done", "failed"):
            try:
                n += sum(1 for x in os.listdir(os.path.join(self.spool_dir, state))
                         if x.endswith(".result.json"))
            except FileNotFoundError:
                pass
        return n

    def jobs(self, n, prefix="b", sample=None, timeout=900):
        """Submits n jobs at once and waits for all; returns a dict of figures. sample(), if
        given, is called about every 50 ms while the jobs run."""
        names = self.prepare(n, prefix)
        tmp, new = os.path.join(self.spool_dir, "tmp"), os.path.join(self.spool_dir, "new")
        pid = self.daemon_pid()
        http_tid = named_thread(pid, HTTP_THREAD)
        cpu0, loop0 = cpu_ticks(pid), cpu_ticks(pid, pid)
        http0 = cpu_ticks(pid, http_tid) if http_tid else (0, 0)
        if self.count_syncs:
            self.count_from_now()
        start = time.time()
        for name in names:
            os.rename(os.path.join(tmp, name), os.path.join(new, name))

        # Until the fake has answered n calls, ask it (a signal and a line) rather than list
        # done/ (thousands of names every 20 ms: a tenth of a core taken from the daemon, which
        # the raw clients' runs do not pay).
        up, answered, asked = self.upstream, self.upstream.answered, [self.upstream.asked]

        def all_done():
            if sample:
                sample()
            if up.asked == asked[0]:   # sample() did not ask
                up.counters()
            asked[0] = up.asked
            return up.answered - answered >= n and self.finished() >= n
        harness.wait_for(all_done, timeout, f"{n} jobs (log:\n{self.d.log()[-2000:]})")
        cpu1, loop1 = cpu_ticks(pid), cpu_ticks(pid, pid)
        http1 = cpu_ticks(pid, http_tid) if http_tid else (0, 0)
        end = max(os.stat(os.path.join(self.spool_dir, s)).st_mtime_ns
                  for s in ("done", "failed") if os.path.isdir(os.path.join(self.spool_dir, s)))
        took = max(end / 1e9 - start, 1e-6)
        failed = len([x for x in os.listdir(os.path.join(self.spool_dir, "failed"))
                      if x.endswith(".result.json")]) if os.path.isdir(
            os.path.join(self.spool_dir, "failed")) else 0
        return {"seconds": took, "jobs_s": n / took, "failed": failed,
                "cpu_ms": (sum(cpu1) - sum(cpu0)) / TICK * 1000 / n,
                "sys_ms": (cpu1[1] - cpu0[1]) / TICK * 1000 / n,
                "loop_ms": (sum(loop1) - sum(loop0)) / TICK * 1000 / n,
                "loop_sys_ms": (loop1[1] - loop0[1]) / TICK * 1000 / n,
                "http_ms": (sum(http1) - sum(http0)) / TICK * 1000 / n,
                "rss": peak_rss_mib(pid)}


# -- spools on tmpfs and on the disk ----------------------------------------------------------

class Tmpfs:
    """A private tmpfs mounted on a directory of our own (or, without mount rights, a
    directory under /dev/shm). Unmounted and removed at the end."""

    def __enter__(self):
        self.dir = tempfile.mkdtemp(prefix="imgspool-bench-tmpfs-")
        self.mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2g,mode=0700",
                                       "imgspool-bench", self.dir], stderr=subprocess.DEVNULL
                                      ).returncode == 0
        if not self.mounted:
            os.rmdir(self.dir)
            self.dir = tempfile.mkdtemp(prefix="imgspool-bench-", dir="/dev/shm")
        self.where = "a private tmpfs" if self.mounted else "/dev/shm (tmpfs)"
        return self

    def spool(self, name):
        return os.path.join(self.dir, name)

    def __exit__(self, *exc):
        if self.mounted:
            subprocess.run(["umount", self.dir], check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


class Disk:
    """A directory on the real disk (/var/tmp: not a tmpfs on Debian; BENCH_DISK_DIR names
    another, e.g. a journaled file system), removed at the end."""

    def __enter__(self):
        self.dir = tempfile.mkdtemp(prefix="imgspool-bench-disk-",
                                    dir=os.environ.get("BENCH_DISK_DIR", "/var/tmp"))
        self.fs = describe_fs(self.dir)
        self.where = f"{self.dir} ({self.fs['fstype']})"
        return self

    def spool(self, name):
        return os.path.join(self.dir, name)

    def __exit__(self, *exc):
        shutil.rmtree(self.dir, ignore_errors=True)


class LoopExt4:
    """A fresh journaled ext4 of our own (harness.LoopExt4): a sparse file under BENCH_LOOP_DIR
    (/var/tmp, on the VM's disk), attached to a loop device, mkfs.ext4 with its defaults, mounted
    with the default options. Unmounted, detached and removed at the end, after an error, Ctrl-C
    or SIGTERM too."""

    SIZE_MB = 2048      # sparse: a few tens of MiB are written

    def __enter__(self):
        self.old_term = signal.signal(signal.SIGTERM, _interrupted)
        try:
            self.loop = harness.LoopExt4(self.SIZE_MB, os.environ.get("BENCH_LOOP_DIR",
                                                                       "/var/tmp"))
        except BaseException:
            signal.signal(signal.SIGTERM, self.old_term)
            raise
        self.dir, self.device, self.top = self.loop.path, self.loop.device, self.loop.top
        self.fs = describe_fs(self.dir)
        self.backing = describe_fs(self.top)
        self.where = f"{self.device} ({self.fs['fstype']})"
        return self

    def spool(self, name):
        return os.path.join(self.dir, name)

    def io_counts(self):
        """Journal commits (/proc/fs/jbd2), and the device's flushes, write requests and
        sectors written (/sys/block/DEV/stat): counted by the kernel, deterministic but for
        how jobs fall into batches."""
        name = os.path.basename(self.device)
        with open(f"/proc/fs/jbd2/{name}-8/info") as f:
            commits = int(f.readline().split()[0])
        with open(f"/sys/block/{name}/stat") as f:
            stat = [int(x) for x in f.read().split()]
        return {"commits": commits, "flushes": stat[15] if len(stat) > 15 else 0,
                "writes": stat[4], "sectors": stat[6]}

    def __exit__(self, *exc):
        # A second Ctrl-C or SIGTERM must not leave a mount or a loop device behind: ignored
        # meanwhile, by umount and losetup too (they inherit it).
        old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            self.loop.close()
        finally:
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, self.old_term)


def _interrupted(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _unescape(field):
    """/proc/mounts writes space, tab, newline and backslash in octal."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mount_entry(path, exact=False):
    """The /proc/mounts entry path is on (the last of the longest mount points above it: a later
    mount hides an earlier one), as a dict; with exact=True only one mounted on path itself."""
    path = os.path.realpath(path)
    best = None
    with open("/proc/mounts") as f:
        for line in f:
            source, target, fstype, options = map(_unescape, line.split()[:4])
            inside = path == target or path.startswith(target.rstrip("/") + "/")
            if (target == path if exact else inside) and (
                    best is None or len(target) >= len(best["target"])):
                best = {"source": source, "target": target, "fstype": fstype,
                        "options": options}
    return best


def describe_fs(path):
    """What the file system under path is, read from /proc/mounts and, for ext4, /sys/fs/ext4
    and /proc/fs/ext4: a dict with "text" (one line) and "journal" (True, False, None)."""
    fs = dict(mount_entry(path))
    fs["journal"] = None
    text = f"{fs['source']} on {fs['target']}: {fs['fstype']}"
    name = os.path.basename(os.path.realpath(fs["source"]))
    sysdir = f"/sys/fs/ext4/{name}"
    if fs["fstype"] == "ext4" and os.path.isdir(sysdir):
        with open(f"{sysdir}/journal_task") as f:
            task = f.read().strip()
        if task == "<none>":
            fs["journal"] = False
            text += f", no journal ({sysdir}/journal_task: <none>)"
        else:
            fs["journal"] = True
            try:
                with open(f"/proc/{task}/comm") as f:
                    task = f.read().strip()
            except OSError:
                pass
            data = ""
            try:
                with open(f"/proc/fs/ext4/{name}/options") as f:
                    data = next((o for o in f.read().split() if o.startswith("data=")), "")
            except OSError:
                pass
            text += f", journal ({task}{', ' + data if data else ''})"
    fs["text"] = text + f", mounted {fs['options']}"
    return fs


# -- the raw clients --------------------------------------------------------------------------

WRK_LUA = """wrk.method = "POST"
wrk.body = '{"model":"gpt-image-2","prompt":"bench 1"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %s"
"""


def wrk(upstream, connections, seconds=3):
    """Requests/s of wrk (one thread, keep-alive) posting what the daemon posts."""
    script = os.path.join(tempfile.gettempdir(), "bench-post.lua")
    with open(script, "w") as f:
        f.write(WRK_LUA % KEY)
    try:
        out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", script,
                              upstream.base_url + "/v1/images/generations"],
                             capture_output=True, text=True, timeout=seconds + 60).stdout
    finally:
        os.unlink(script)
    m = re.search(r"Requests/sec:\s*([\d.]+)", out)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if not m or bad:
        raise RuntimeError(f"wrk failed:\n{out}")
    return float(m.group(1))


# -- printing ---------------------------------------------------------------------------------

def row(label, value, unit, target=None, ratio=None):
    text = f"  {label:34s} {value:>10} {unit:10s}"
    if ratio is not None:
        text += f" ratio {ratio:5.2f}"
    if target:
        text += f"   (target {target})"
    print(text, flush=True)


def median(values):
    return statistics.median(values)


def paired(daemon, client):
    """The median of the ratios of runs made one after the other: a neighbour's burst of load
    on this shared machine then weighs on both sides of a ratio."""
    return median([d / c for d, c in zip(daemon, client)])


def spread(values, fmt="{:.0f}"):
    return "runs: " + " ".join(fmt.format(v) for v in values)


# -- sections ---------------------------------------------------------------------------------

def idle_cpu(up):
    with Tmpfs() as fs, Run(up, fs.spool("idle"), CONCURRENCY) as r:
        c0 = sum(cpu_ticks(r.pid))
        time.sleep(3)   # idleness over a span is what is measured: a benchmark, not a test
        idle = (sum(cpu_ticks(r.pid)) - c0) / TICK
    print("idle daemon:")
    row("idle CPU over 3 s", f"{idle / 3 * 100:.3f}", "%")
    for case, rate in loop_wakeups_per_s().items():
        row(case, f"{rate:.2f}", "per s")


def loop_sleeps(pid):
    """The loop (main) thread's voluntary context switches: one per sleep of its epoll_wait,
    while nothing else it does blocks (an idle daemon on a tmpfs)."""
    with open(f"/proc/{pid}/task/{pid}/status") as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    raise RuntimeError("no voluntary_ctxt_switches in /proc")


def loop_wakeups_per_s():
    """Wake-ups per second of the loop thread over WAKE_SECONDS with the default timers, idle,
    and while a retry waiting in memory is due and its provider is paused by an operator."""
    fake = harness.FakeUpstream(api_keys={KEY}).start()
    rates = {}
    try:
        with Tmpfs() as fs:
            for case in ("loop wake-ups, idle", "  a retry in memory, paused"):
                d = harness.Daemon(fake, spool_dir=fs.spool(f"wakeups{len(rates)}"),
                                   spool__poll_interval=5, spool__host_id="bench")
                try:
                    d.start()
                    if rates:
                        os.rmdir(d.path("deferred"))   # the retry waits in memory
                        d.submit("r", {"prompt": "r [fake:429_retry_after retry_after=1|b64]"})
                        harness.wait_for(lambda: "r warning: cannot move to deferred/" in d.log(),
                                         20, "the retry in memory")
                        os.makedirs(d.path("control"), exist_ok=True)
                        open(d.path("control", "pause.apiyi"), "w").close()
                        time.sleep(2)   # it comes due meanwhile (a benchmark, not a test)
                    before = loop_sleeps(d.proc.pid)
                    time.sleep(WAKE_SECONDS)
                    rates[case] = (loop_sleeps(d.proc.pid) - before) / WAKE_SECONDS
                finally:
                    d.stop()
                    d.cleanup(True)
    finally:
        fake.stop()
    return rates


def throughput_runs(up, fs, jobs, with_clients, count_syncs=False):
    """RUNS daemon runs of `jobs` jobs on fs (and as many runs of each raw client between them);
    returns the daemon's figures (with "syncs", per job, if count_syncs), wrk's and curl's
    requests/s."""
    daemon, raw, curl = [], [], []
    for i in range(RUNS):
        daemon.append(one_run(up, fs, f"run{i}", jobs, count_syncs))
        if with_clients:
            raw.append(wrk(up, CONCURRENCY))
            curl.append(curlgen(up, CONCURRENCY, 5 * JOBS))
    return daemon, raw, curl


def one_run(up, fs, name, jobs, count_syncs=False):
    with Run(up, fs.spool(name), CONCURRENCY, count_syncs=count_syncs) as r:
        io = fs.io_counts() if hasattr(fs, "io_counts") else None
        res = r.jobs(jobs)
        if io:
            res["io"] = {k: (v - io[k]) / jobs for k, v in fs.io_counts().items()}
    if count_syncs:
        res["syncs"] = r.syncs / jobs
        res["writebacks"] = r.writebacks / jobs
    return res


def throughput(up):
    with Tmpfs() as fs:
        daemon, raw, curl = throughput_runs(up, fs, JOBS, True)
    jobs_s = [x["jobs_s"] for x in daemon]
    print(f"instant upstream, {JOBS} jobs, concurrency {CONCURRENCY}, spool on {fs.where} "
          f"(medians of {RUNS}; a ratio is the daemon's jobs/s over a client's req/s, the median "
          f"of runs made one after the other):")
    row("daemon", f"{median(jobs_s):.0f}", "jobs/s", ">= 0.7 of wrk",
        paired(jobs_s, raw))
    print(f"      {spread(jobs_s)}")
    row("raw client (wrk -t1 -c64, 3 s)", f"{median(raw):.0f}", "req/s")
    print(f"      {spread(raw)}")
    curl_rate = [x[0] for x in curl]
    row("libcurl client (curlgen -c64)", f"{median(curl_rate):.0f}", "req/s", None,
        paired(jobs_s, curl_rate))
    print(f"      {spread(curl_rate)}; {median([x[1] for x in curl]):.3f} ms of CPU per request")
    row("daemon CPU per job, all threads", f"{median([x['cpu_ms'] for x in daemon]):.3f}", "ms",
        "<= 0.1 ms")
    row("  of it on the loop thread", f"{median([x['loop_ms'] for x in daemon]):.3f}", "ms")
    row("  loop thread in the kernel", f"{median([x['loop_sys_ms'] for x in daemon]):.3f}", "ms")
    row("  on the transfer thread (libcurl)", f"{median([x['http_ms'] for x in daemon]):.3f}", "ms")
    row("peak RSS", f"{max(x['rss'] for x in daemon):.1f}", "MiB")
    if any(x["failed"] for x in daemon):
        print(f"  NOTE: failed jobs in the runs: {[x['failed'] for x in daemon]}")
    return median(jobs_s)


CALLGRIND_ALLOC = re.compile(r"^cfn=(?:malloc|calloc|realloc)\n^calls=(\d+)", re.M)
# A job file's reads: each goes through spool_read_keep (claims and their retries alike).
CALLGRIND_JOB_READ = re.compile(r"^cfn=spool_read_keep\n^calls=(\d+)", re.M)


def callgrind_role(text):
    """A callgrind file's thread (--compress-strings=no): the loop is thread 1; the I/O helpers
    run helper_main; libcurl's transfer thread runs the multi socket loop."""
    if re.search(r"^thread: 1$", text, re.M):
        return ROLES[0]
    if re.search(r"^c?fn=helper_main$", text, re.M):
        return ROLES[1]
    if re.search(r"^c?fn=curl_multi_socket_action$", text, re.M):
        return ROLES[2]
    return ROLES[3]


def instructions(up):
    """The throughput case under callgrind, instrumented only while the jobs run
    (callgrind_control turns it on, then dumps each thread's counts)."""
    n = INSTR_JOBS
    with Tmpfs() as fs:
        out = os.path.join(fs.dir, "callgrind.out")
        wrapper = ["valgrind", "--tool=callgrind", "--separate-threads=yes", "--instr-atstart=no",
                   "--compress-strings=no", f"--callgrind-out-file={out}", "-q"]
        with Run(up, fs.spool("instr"), CONCURRENCY, wrapper=wrapper) as r:
            subprocess.run(["callgrind_control", "-i", "on", str(r.pid)], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            r.jobs(n, prefix="i", timeout=1800)
            subprocess.run(["callgrind_control", "-d", str(r.pid)], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        by_role, job_reads = {}, 0
        keep = os.environ.get("BENCH_CALLGRIND_KEEP")
        if keep:
            os.makedirs(keep, exist_ok=True)
        for name in sorted(os.listdir(fs.dir)):
            if not name.startswith("callgrind.out.1-"):
                continue
            with open(os.path.join(fs.dir, name), errors="replace") as f:
                text = f.read()
            m = re.search(r"^summary: (\d+)", text, re.M)
            ir = int(m.group(1)) if m else 0
            allocs = sum(int(c) for c in CALLGRIND_ALLOC.findall(text))
            job_reads += sum(int(c) for c in CALLGRIND_JOB_READ.findall(text))
            role = by_role.setdefault(callgrind_role(text), [0, 0, 0])
            role[0] += ir
            role[1] += allocs
            role[2] += 1
            if keep:
                shutil.copy(os.path.join(fs.dir, name), keep)
    total = [sum(v[i] for v in by_role.values()) for i in range(2)]
    print(f"user-space instructions per job, {n} jobs on tmpfs, concurrency {CONCURRENCY} "
          f"(callgrind; deterministic within a few percent: how claims fall into turns):")
    row("instructions per job, all threads", f"{total[0] / n:,.0f}", "")
    row("allocations per job (malloc, calloc, realloc)", f"{total[1] / n:.0f}", "")
    row("job file reads per job (spool_read_keep)", f"{job_reads / n:.2f}", "", "1")
    for role in ROLES:
        if role in by_role:
            ir, allocs, threads = by_role[role]
            print(f"    on {role} ({threads} thread{'s' if threads > 1 else ''}): "
                  f"{ir / n:,.0f} instructions, {allocs / n:.0f} allocations")


STRACE_LINE = re.compile(r"(\d+)\s+(?:<\.\.\. (\w+) resumed>|(\w+)\()")
STRACE_FAILED = re.compile(r"= -1 E[A-Z]+")


ROLES = ("the loop thread", "the I/O helpers", "libcurl's transfer thread", "other threads",
         "threads born during the run")
IO_THREAD = "imgspool-io"


def thread_role(pid, tid, at_attach):
    """The loop is the main thread; the I/O helpers and the transfer thread go by their names;
    threads born after the trace began are libcurl's resolver's."""
    if tid == pid:
        return ROLES[0]
    if tid not in at_attach:
        return ROLES[4]
    return {IO_THREAD: ROLES[1], HTTP_THREAD: ROLES[2]}.get(at_attach[tid], ROLES[3])


def thread_names(pid):
    names = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                names[int(tid)] = f.read().strip()
        except FileNotFoundError:
            pass
    return names


def syscalls(up):
    """strace -f attached to the running daemon (all its threads) over one run; every call
    traced (not -c) so that calls are counted per thread as well as per name."""
    n = SYSCALL_JOBS
    keep = os.environ.get("BENCH_SYSCALLS_TRACE")
    with Tmpfs() as fs, Run(up, fs.spool("strace"), CONCURRENCY) as r:
        out = keep or os.path.join(fs.dir, "strace.txt")   # removed with the tmpfs
        at_attach = thread_names(r.pid)
        tracer = subprocess.Popen(["strace", "-f", "-s", "48", "-o", out, "-p", str(r.pid)],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True)
        tracer.stderr.readline()   # "Process N attached with M threads"
        try:
            r.jobs(n, prefix="s")
        finally:
            tracer.send_signal(signal.SIGINT)
            tracer.wait(120)
        counts, errors, by_role = {}, {}, {}
        with open(out) as f:
            for line in f:
                m = STRACE_LINE.match(line)
                if not m:
                    continue
                # A call another thread interrupted in the trace is counted where it began,
                # its failure where it ended.
                name = m.group(2) or m.group(3)
                if STRACE_FAILED.search(line):
                    errors[name] = errors.get(name, 0) + 1
                if m.group(2):
                    continue
                role = thread_role(r.pid, int(m.group(1)), at_attach)
                counts[name] = counts.get(name, 0) + 1
                by_role.setdefault(role, {})
                by_role[role][name] = by_role[role].get(name, 0) + 1
    total = sum(counts.values())
    syncs = sum(counts.get(c, 0) for c in SYNC_CALLS)

    def listing(table, limit=None):
        top = sorted(table.items(), key=lambda kv: -kv[1])
        return ", ".join(f"{name} {count / n:.2f}" + (
            f" ({errors[name] / n:.2f} failed)" if errors.get(name) and table is counts else "")
            for name, count in (top if limit is None else top[:limit]))
    print(f"system calls, {n} jobs on tmpfs, concurrency {CONCURRENCY}, all threads (strace -f; "
          f"deterministic but for polling and batching):")
    row("system calls per job", f"{total / n:.1f}", "", "<= 25")
    row("fsync+fdatasync+syncfs per job", f"{syncs / n:.2f}", "", "<= 3")
    print(f"      {'every call' if SYSCALLS_ALL else 'top ten'} per job: " +
          listing(counts, None if SYSCALLS_ALL else 10))
    for role in ROLES:
        if role in by_role:
            print(f"    on {role}: {sum(by_role[role].values()) / n:.1f}: "
                  f"{listing(by_role[role], None if SYSCALLS_ALL else 10)}")


def ext4(up):
    """The same case, fsync on, on a private tmpfs, (a) a fresh journaled ext4 of our own on a
    loop device and (b) the disk the bench runs on (BENCH_DISK_DIR, or /var/tmp's), their runs
    alternated and as many jobs each, so that a neighbour's burst weighs on all three."""
    cases = {"tmpfs": [], "loop": [], "disk": []}
    loop_error = None
    with contextlib.ExitStack() as stack:
        tmpfs = stack.enter_context(Tmpfs())
        try:
            loop = stack.enter_context(LoopExt4())
        except RuntimeError as e:   # no loop device here, say: the disk is measured anyway
            loop, loop_error = None, str(e)
        disk = stack.enter_context(Disk())
        for i in range(RUNS):
            cases["tmpfs"].append(one_run(up, tmpfs, f"run{i}", EXT4_JOBS, True))
            if loop:
                cases["loop"].append(one_run(up, loop, f"run{i}", EXT4_JOBS, True))
            cases["disk"].append(one_run(up, disk, f"run{i}", EXT4_JOBS, True))
        alone = one_at_a_time(up, loop, EXT4_ALONE_JOBS) if loop else None
    print(f"the same with {EXT4_JOBS} jobs, fsync on, on tmpfs and on ext4 (medians of {RUNS}; "
          f"the file systems' runs alternated; a ratio is the median of the ratios to the tmpfs "
          f"run just before):")
    print(f"  on {tmpfs.where}:")
    ext4_rows(cases["tmpfs"])
    if loop:
        print(f"  (a) on a fresh ext4 made by the bench (mkfs.ext4 and mount defaults), on a loop "
              f"device over a file on the VM's disk:\n      {loop.fs['text']}\n      backing "
              f"file on {loop.backing['text']}")
        ext4_rows(cases["loop"], cases["tmpfs"])
        print(f"      {EXT4_ALONE_JOBS} jobs one at a time (each finished before the next is "
              f"submitted: calls that take minutes):")
        row("  journal commits per job", f"{alone['commits']:.2f}", "")
        row("  device flushes per job", f"{alone['flushes']:.2f}", "")
        row("  from submission to done/", f"{alone['seconds'] * 1000:.1f}", "ms")
    else:
        print(f"  (a) a fresh journaled ext4 on a loop device: NOT MEASURED: {loop_error}")
    print(f"  (b) on the disk itself, {disk.dir}:\n      {disk.fs['text']}")
    if disk.fs["journal"] is False:
        print("      without a journal ext4 skips, at each inode allocation, every inode freed "
              "in the last 60-360 s (recently_deleted()): this figure depends on what was "
              "deleted on this disk in the last minutes, by anyone")
    ext4_rows(cases["disk"], cases["tmpfs"])


def one_at_a_time(up, fs, n):
    """n jobs on fs, each submitted once the one before is in done/: the journal commits and
    device flushes per job (fs.io_counts), and the mean time from rename into new/ to done/."""
    with Run(up, fs.spool("alone"), CONCURRENCY) as r:
        new = os.path.join(r.spool_dir, "new")
        io, took = fs.io_counts(), 0.0
        for i in range(n):
            name = r.prepare(1, prefix=f"a{i:04d}-")[0]
            start = time.time()
            os.rename(os.path.join(r.spool_dir, "tmp", name), os.path.join(new, name))
            harness.wait_for(lambda: r.finished() > i, 60, f"job {i} alone")
            took += time.time() - start
        res = {k: (v - io[k]) / n for k, v in fs.io_counts().items()}
    res["seconds"] = took / n
    return res


def ext4_rows(daemon, tmpfs=None):
    jobs_s = [x["jobs_s"] for x in daemon]
    if tmpfs:
        row("daemon", f"{median(jobs_s):.0f}", "jobs/s", ">= 0.5 of tmpfs",
            paired(jobs_s, [x["jobs_s"] for x in tmpfs]))
    else:
        row("daemon", f"{median(jobs_s):.0f}", "jobs/s")
    print(f"      {spread(jobs_s)}")
    row("daemon CPU per job, all threads", f"{median([x['cpu_ms'] for x in daemon]):.3f}", "ms")
    row("  of it in the kernel", f"{median([x['sys_ms'] for x in daemon]):.3f}", "ms")
    syncs = [x["syncs"] for x in daemon]
    row("fsync+fdatasync+syncfs per job", f"{median(syncs):.2f}", "", "<= 3")
    print(f"      {spread(syncs, '{:.2f}')}")
    writebacks = [x["writebacks"] for x in daemon]
    if any(writebacks):
        row("  sync_file_range per job (no commit)", f"{median(writebacks):.2f}", "")
    if all("io" in x for x in daemon):
        io = {k: median([x["io"][k] for x in daemon]) for k in daemon[0]["io"]}
        row("journal commits per job", f"{io['commits']:.3f}", "")
        row("device flushes per job", f"{io['flushes']:.3f}", "")
        row("device writes per job", f"{io['writes']:.2f}", f"{io['sectors'] / 2:.0f} KiB")
    if any(x["failed"] for x in daemon):
        print(f"  NOTE: failed jobs in the runs: {[x['failed'] for x in daemon]}")


def inflight():
    up = FastUpstream(KEY, delay_ms=1000)
    try:
        n = INFLIGHT_WAVES * INFLIGHT
        daemon, raw, curl, held, mean_held, ramp = [], [], [], [], [], []
        with Tmpfs() as fs:
            for i in range(RUNS):
                with Run(up, fs.spool(f"inflight{i}"), INFLIGHT) as r:
                    up.counters()
                    samples = []   # (seconds, calls waiting at the fake, most since the last)

                    def sample():
                        c = up.counters()
                        samples.append((time.monotonic(), c["held_now"], c["held_max"]))
                    daemon.append(r.jobs(n, sample=sample))
                    held.append(max(x[2] for x in samples + [(0, 0, up.counters()["held_max"])]))
                    t0 = samples[0][0]
                    mean_held.append(in_flight_mean(samples))
                    ramp.append(next((t - t0 for t, _, m in samples if m >= INFLIGHT), 0))
                raw.append(loadgen(up, INFLIGHT, n))
                curl.append(curlgen(up, INFLIGHT, n, reuse=True))
    finally:
        up.close()
    jobs_s = [x["jobs_s"] for x in daemon]
    print(f"1 s upstream, {INFLIGHT} calls in flight, {n} jobs (medians of {RUNS}):")
    row("daemon", f"{median(jobs_s):.0f}", "jobs/s", ">= 0.97 of loadgen",
        paired(jobs_s, raw))
    print(f"      {spread(jobs_s, '{:.1f}')}; most calls waiting at once: "
          f"{' '.join(map(str, held))}")
    row(f"raw client (loadgen -c{INFLIGHT})", f"{median(raw):.0f}", "req/s")
    print(f"      {spread(raw, '{:.1f}')}")
    # The floor of a daemon built on libcurl on one thread: libcurl alone, the daemon's way
    # (multi socket API, handles kept), as many calls at once; its ratio is to loadgen.
    curl_rate = [x[0] for x in curl]
    row(f"libcurl client (curlgen -c{INFLIGHT})", f"{median(curl_rate):.0f}", "req/s",
        ratio=paired(curl_rate, raw))
    print(f"      {spread(curl_rate, '{:.1f}')}; {median([x[1] for x in curl]):.3f} ms of CPU "
          f"per request; the daemon's ratio to it {paired(jobs_s, curl_rate):.2f}")
    row("daemon CPU per job, all threads", f"{median([x['cpu_ms'] for x in daemon]):.3f}", "ms")
    row("  of it on the loop thread", f"{median([x['loop_ms'] for x in daemon]):.3f}", "ms")
    row("  on the transfer thread (libcurl)", f"{median([x['http_ms'] for x in daemon]):.3f}", "ms")
    # Why the daemon falls short: each wave of answers arrives at once, and the next calls go
    # out only as fast as the loop turns answers into publications and new claims into calls.
    row("calls in flight, mean over the run", f"{median(mean_held):.0f}", "",
        ratio=median(mean_held) / INFLIGHT)
    print(f"      {spread(mean_held)}")
    row(f"all {INFLIGHT} first in flight after", f"{median(ramp):.2f}", "s")
    print(f"      {spread(ramp, '{:.2f}')}")


def in_flight_mean(samples):
    """The time-weighted mean of the calls waiting at the fake, from the first sample to the
    last that saw one waiting."""
    last = max((i for i, x in enumerate(samples) if x[1]), default=0)
    span = samples[:last + 1]
    if len(span) < 2:
        return 0.0
    area = sum((b[0] - a[0]) * a[1] for a, b in zip(span, span[1:]))
    return area / (span[-1][0] - span[0][0])


# Descriptors the daemon needs beside a socket per call in flight: what src/slots.c keeps for
# everything else (64 + 256 + a sixteenth of the limit); a call's running/.ID@HOST.partial is
# kept open only within what is left. The daemon's limit is its hard RLIMIT_NOFILE.
def calls_that_fit(limit):
    return limit - (64 + 256 + limit // 16)


def rss():
    """Every call held at the fake until all RSS_INFLIGHT are in flight at once, then let go."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    fits = RSS_INFLIGHT if hard == resource.RLIM_INFINITY else calls_that_fit(hard)
    n = min(RSS_INFLIGHT, fits)
    print(f"{n} jobs at once, concurrency {n}, the fake answering once all {n} calls are in "
          f"flight:")
    if n < RSS_INFLIGHT:
        print(f"  NOTE: not {RSS_INFLIGHT}: the hard limit of open files here is {hard}, and the "
              f"daemon needs a socket per call in flight and {hard - fits} files for the rest")
    up = FastUpstream(KEY, hold=True)
    try:
        with Tmpfs() as fs, Run(up, fs.spool("rss"), n) as r:
            started = time.monotonic()
            ramp = []

            def release_when_all_in_flight():
                if not ramp and up.counters()["held_now"] >= n:
                    ramp.append(time.monotonic() - started)
                    up.release()
            res = r.jobs(n, sample=release_when_all_in_flight, timeout=300)
    except AssertionError as e:     # the daemon refused the configuration, or never finished
        print(f"  NOT MEASURED: {str(e).strip().splitlines()[-1][:300]}")
        return
    finally:
        up.close()
    up = FastUpstream(KEY, hold=True)
    try:
        def release():
            harness.wait_for(lambda: up.counters()["held_now"] >= n, 600, "curlgen's calls")
            up.release()
        _, _, curl_rss = curlgen(up, n, n, meanwhile=release)
    finally:
        up.close()
    row("peak RSS (VmHWM)", f"{res['rss']:.1f}", "MiB", "<= 256 MiB")
    row(f"libcurl alone, {n} calls (curlgen)", f"{curl_rss:.1f}", "MiB")
    row(f"all {n} calls in flight after", f"{ramp[0]:.2f}" if ramp else "never", "s")
    row("all jobs done in", f"{res['seconds']:.2f}", "s")
    if res["failed"]:
        print(f"  NOTE: {res['failed']} jobs failed")
    heap_per_call(min(HEAP_INFLIGHT, n))


def heap_per_call(n):
    """The heap per call in flight: n calls held at the fake under valgrind's dhat, whose count
    at the heap's peak (t-gmax: the calls in flight, before many answers are in) is divided by
    n. Deterministic to a few bytes, where the RSS above moves with the load."""
    up = FastUpstream(KEY, hold=True)
    try:
        with Tmpfs() as fs:
            out = os.path.join(fs.dir, "dhat.out")
            wrapper = ["valgrind", "--tool=dhat", f"--dhat-out-file={out}", "-q"]
            with Run(up, fs.spool("heap"), n, wrapper=wrapper) as r:
                released = []

                def release_when_all_in_flight():
                    if not released and up.counters()["held_now"] >= n:
                        released.append(True)
                        up.release()
                r.jobs(n, sample=release_when_all_in_flight, timeout=1800)
            with open(out) as f:
                pps = json.load(f)["pps"]
    except AssertionError as e:
        print(f"  heap per call NOT MEASURED: {str(e).strip().splitlines()[-1][:300]}")
        return
    finally:
        up.close()
    row(f"heap per call in flight ({n} under dhat)",
        f"{sum(p.get('gb', 0) for p in pps) / n:,.0f}", "bytes")
    row("… in blocks", f"{sum(p.get('gbk', 0) for p in pps) / n:.1f}", "")


def main():
    unknown = [s for s in ONLY if s not in SECTIONS + ("parse", "cli", "keyshare", "gate", "cancel",
                                                       "rescan", "results")]
    if unknown:
        sys.exit(f"bench.py: unknown section(s) {unknown}; sections: {', '.join(SECTIONS)}")
    if not any(wanted(s) for s in SECTIONS):
        return
    print(f"imgspoold benchmark against build/fastup; {os.cpu_count()} CPUs, load "
          f"{os.getloadavg()[0]:.2f}", flush=True)
    up = FastUpstream(KEY)
    try:
        if wanted("idle"):
            idle_cpu(up)
        if wanted("throughput"):
            throughput(up)
        if wanted("instructions"):
            instructions(up)
        if wanted("syscalls"):
            syscalls(up)
        if wanted("ext4"):
            ext4(up)
    finally:
        up.close()
    if wanted("inflight"):
        inflight()
    if wanted("rss"):
        rss()


if __name__ == "__main__":
    main()
