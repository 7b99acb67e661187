"""harness.py - drives the real imgspoold binary in a scratch spool against the fake upstream.

Each test is a plain function; run_tests() prints TAP so `prove` can run the file. Every wait is
a condition polled against a deadline, never a fixed sleep. After each test the daemon's log is
checked for sanitizer reports and for the API key, which must never appear, and so are the files
it published (done/, failed/, outbox/), for the key however JSON may spell it.
"""
import contextlib
import atexit
import errno
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "fake"))

from upstream import FakeUpstream  # noqa: E402  (path set above)

IMGSPOOLD = os.environ.get("IMGSPOOLD", os.path.join(ROOT, "build", "test", "imgspoold"))
IMGSPOOL = os.path.join(os.path.dirname(IMGSPOOLD), "imgspool")

# Every temporary file of a test file's run (its own, the daemons', the helpers') goes below one
# private directory, so run_tests() can tell that nothing was left behind, whatever other
# processes on the machine do with /tmp.
SCRATCH = tempfile.mkdtemp(prefix="imgspool-run-")
tempfile.tempdir = SCRATCH
os.environ["TMPDIR"] = SCRATCH
# imgspool and imgspoold take a spool and a configuration from these when no flag names one: a
# developer's own would change what the tests' commands act on.
os.environ.pop("IMGSPOOL_DIR", None)
os.environ.pop("IMGSPOOL_CONFIG", None)


def _drop_empty_scratch():
    """A script that imports this module without run_tests() (make bench) leaves no empty
    directory behind; run_tests() itself removes SCRATCH when everything passed."""
    try:
        os.rmdir(SCRATCH)
    except OSError:
        pass


atexit.register(_drop_empty_scratch)
TEST_KEY = "sk-test-9f2c7e1d5b3a4c6e8f0a1b2c3d4e5f60"


def key_spellings(key):
    """A bytes pattern for key however JSON may spell it: each character as itself or as a \\u
    escape (any case of hex), '/' also as "\\/". An upstream may quote the key back spelt so."""
    def one(c):
        hexes = "".join(f"[{h.lower()}{h.upper()}]" if h.isalpha() else h for h in f"{ord(c):04x}")
        alts = [re.escape(c), r"\\u" + hexes] + ([r"\\/"] if c == "/" else [])
        return "(?:" + "|".join(alts) + ")"
    return re.compile("".join(one(c) for c in key).encode())


PUBLISHED = ("done", "failed", "outbox")   # what clients, webhooks and hooks get of the spool


def files_holding(root, pattern, dirs=None):
    """The regular files under root (or under root's dirs) whose bytes pattern matches."""
    hits = []
    for top in [os.path.join(root, d) for d in dirs] if dirs else [root]:
        for dirpath, _, names in os.walk(top):
            for name in names:
                path = os.path.join(dirpath, name)
                try:
                    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
                except OSError:
                    continue
                try:
                    if stat.S_ISREG(os.fstat(fd).st_mode):
                        with os.fdopen(os.dup(fd), "rb") as f:
                            if pattern.search(f.read()):
                                hits.append(path)
                finally:
                    os.close(fd)
    return hits


def wait_for(pred, timeout=20.0, what="condition"):
    """Polls pred() until it returns something truthy; fails the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def cli(spool, *args, **kw):
    """Runs `imgspool -d spool ARGS...` and returns its CompletedProcess, output as text; no stdin
    unless input= is given; kw goes to subprocess.run (timeout: 60 s unless given)."""
    kw.setdefault("timeout", 60)
    if "input" not in kw:
        kw.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.run([IMGSPOOL, "-d", spool, *args], capture_output=True, text=True, **kw)


def process_stopped(pid):
    """Whether process pid is stopped (state T: it stopped itself at IMGSPOOLD_STOP_AT)."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "T"


def held_at_stop(fifo, d):
    """Waits for a thread of daemon d to wait at its stop point (IMGSPOOLD_STOP_AT with
    IMGSPOOLD_STOP_FIFO=fifo, util.c stop_point) and returns the FIFO's write end: the thread
    reads on until it is closed, which lets it go."""
    fd = []

    def opened():
        assert not d.exited(), d.log()[-2000:]
        try:
            fd.append(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            return True
        except OSError as e:
            if e.errno != errno.ENXIO:   # no reader yet
                raise
            return False
    wait_for(opened, 20, "a thread to wait at its stop point")
    return fd[0]


def exit_within(d, timeout, what, since, after):
    """Daemon d's exit status, once it exits within timeout s; prints how long after since
    (time.monotonic) it came, since `after`."""
    try:
        rc = d.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the daemon did not exit while {what}")
    print(f"# exited {time.monotonic() - since:.2f} s after {after}, {what}")
    return rc


def cut_while_held(d, fifo, what, jobs=1, held_after_cut=None, timeout=20):
    """The drain (of jobs in flight), then the second SIGTERM while a thread waits at d's stop
    point (fifo; None: no thread held before), and, with held_after_cut (a FIFO), while the one
    that reaches that point after the cut waits there too; returns the exit status, every FIFO
    let go of once the daemon is gone (or the test's deadline passed)."""
    writers = [held_at_stop(fifo, d)] if fifo else []
    try:
        d.send_signal(signal.SIGTERM)
        wait_for(lambda: f"waiting for {jobs} job(s)" in d.log(), 10, "the drain")
        cut_at = time.monotonic()
        d.send_signal(signal.SIGTERM)
        if held_after_cut:
            writers.append(held_at_stop(held_after_cut, d))
        rc = exit_within(d, timeout, what, cut_at, "the second SIGTERM")
    finally:
        for w in writers:
            os.close(w)
    d.logf.close()
    return rc


LEDGER_NAME = re.compile(r"(.+)\.([0-9a-f]{16}|legacy)\.json(\.carried-(.+))?")


def ledger_names(root):
    """The names of this month's ledger files of the spool at root (spool-layout §17), as paths
    under ledger/: MONTH/NAME and MONTH/ended/NAME, with LEDGER_NAME's match of NAME."""
    ledger = os.path.join(root, "ledger")
    months = sorted(m for m in os.listdir(ledger) if re.fullmatch(r"\d{4}-\d\d", m)) \
        if os.path.isdir(ledger) else []
    out = []
    for sub in ([months[-1], os.path.join(months[-1], "ended")] if months else []):
        for name in os.listdir(os.path.join(ledger, sub)) if os.path.isdir(os.path.join(ledger, sub)) else []:
            m = LEDGER_NAME.fullmatch(name)
            if m:
                out.append((os.path.join(sub, name), m))
    return out


def ledger_runs(root, provider="apiyi"):
    """What this month's ledger/ of the spool at root says each run of each host spent today on
    provider (None: on all) (spool-layout §17): {(host, run): day_micros}, the largest of the
    run's own file (ledger/MONTH/HOST.RUN.json, or in its ended/) and the copies other hosts
    carried back."""
    out = {}
    for path, m in ledger_names(root):
        with open(os.path.join(root, "ledger", path)) as f:
            provs = json.load(f)["providers"]
        v = sum(p["day_micros"] for name, p in provs.items() if provider in (None, name))
        out[(m.group(1), m.group(2))] = max(out.get((m.group(1), m.group(2)), 0), v)
    return out


def ledger_spent(root, provider="apiyi"):
    """{host: what its runs spent today on provider} by ledger_runs (a host whose runs spent
    nothing has 0)."""
    out = {}
    for (host, _), v in ledger_runs(root, provider).items():
        out[host] = out.get(host, 0) + v
    return out


def ledger_files(root, host, copies=False):
    """The paths under ledger/ of this month's files of host's runs (or, copies: of the copies
    other hosts carried back of them)."""
    return sorted(path for path, m in ledger_names(root)
                  if m.group(1) == host and bool(m.group(3)) == copies)


def fill(path):
    """Fills the file system at path with one file, path/filler (returned): every later write
    there fails (ENOSPC, root or not) until it is removed."""
    filler = os.path.join(path, "filler")
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as e:
        assert e.errno == errno.ENOSPC, e
    finally:
        os.close(fd)
    return filler


class Daemon:
    """One imgspoold process with its own spool, config and log."""

    def __init__(self, fake=None, key=TEST_KEY, key_file=False, verbose=False, spool_dir=None,
                 extra_env=None, wrapper=None, **settings):
        self.dir = tempfile.mkdtemp(prefix="imgspool-test-")
        self.spool = spool_dir or os.path.join(self.dir, "spool")
        self.log_path = os.path.join(self.dir, "daemon.log")
        self.config_path = os.path.join(self.dir, "imgspool.ini")
        self.key = key
        self.key_file = os.path.join(self.dir, "api.key") if key_file else None
        self.proc = None
        self.faked_pids = []   # processes started under libfaketime (their /dev/shm files)
        self.log_elsewhere = False
        self.verbose = verbose
        self.fake = fake
        self.extra_env = extra_env or {}     # e.g. libfaketime's, for a host whose clock is off
        self.wrapper = wrapper or []         # e.g. strace, to slow a system call down
        spool = {"dir": self.spool, "concurrency": 4, "poll_interval": 1, "grace_period": 10,
                 "settle_time": 2, "host_id": "testhost", "min_free_mb": 1}
        retry = {"backoff_base_ms": 50, "backoff_cap_ms": 1000, "hold_probe_interval": 1}
        provider = {"base_url": fake.base_url if fake else "http://127.0.0.1:9",
                    "api_key_env": "IMGSPOOL_TEST_KEY", "timeout": 30, "connect_timeout": 5}
        if self.key_file:
            provider["api_key_file"] = "api.key"
        # The fake hands out image URLs on loopback, which the daemon refuses by default.
        limits = {"allow_private_downloads": "yes"}
        sections = {"spool": spool, "retry": retry, "limits": limits, "provider apiyi": provider}
        # section__key=value; a section of its own ("prices", "provider b", "route r") is
        # added after these; a list value writes the key once per item, in order.
        for name, value in settings.items():
            section, key = name.split("__", 1)
            section = "provider apiyi" if section == "provider" else section
            sections.setdefault(section, {})[key] = value
        with open(self.config_path, "w") as f:
            for section, values in sections.items():
                f.write(f"[{section}]\n")
                for k, v in values.items():
                    if v is None:   # leave the key out: its default applies
                        continue
                    for item in v if isinstance(v, list) else [v]:
                        f.write(f"{k} = {item}\n")

    # -- process ------------------------------------------------------------------------------
    def start(self, wait_ready=True, journal=False, extra_env=None, stderr=None):
        """journal=True: the log file poses as the journal's stream (JOURNAL_STREAM names it).
        stderr: a descriptor for the daemon's stdout and stderr instead of the log file (then
        nothing is read from its log: wait_ready must be False)."""
        assert stderr is None or not wait_ready
        env = dict(os.environ)
        env.pop("JOURNAL_STREAM", None)
        env.pop("NOTIFY_SOCKET", None)
        env.pop("WATCHDOG_USEC", None)
        env.update(extra_env or {})
        env.pop("IMGSPOOL_TEST_KEY", None)
        if self.key and not self.key_file:
            env["IMGSPOOL_TEST_KEY"] = self.key
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
        env["IMGSPOOLD_LOG_MARK"] = "1"   # SIGUSR1 logs a mark (log_barrier)
        env.update(self.extra_env)
        self.log_offset = len(self.log())
        self.log_elsewhere = stderr is not None
        self.logf = open(self.log_path, "a")
        if journal:
            st = os.fstat(self.logf.fileno())
            env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        self.proc = subprocess.Popen(self.wrapper + [IMGSPOOLD, "-c", self.config_path] + (["-v"] if self.verbose else []), stdin=subprocess.DEVNULL,
                                     stdout=stderr or self.logf, stderr=stderr or self.logf,
                                     env=env,
                                     start_new_session=bool(self.wrapper))
        if "FAKETIME" in env:
            self.faked_pids.append(self.proc.pid)
        if wait_ready:
            wait_for(lambda: "imgspoold: ready" in self.log()[self.log_offset:] or self.exited(),
                     10, "the daemon to be ready")
            assert not self.exited(), f"daemon exited at start-up:\n{self.log()}"
        return self

    def start_held_at(self, point, wait_ready=True):
        """Starts it with IMGSPOOLD_STOP_AT=point and IMGSPOOLD_STOP_FIFO (util.c stop_point):
        the thread that reaches point waits there (held_at_stop). Returns the FIFO's path."""
        fifo = os.path.join(self.dir, "stop.fifo")
        if not os.path.exists(fifo):
            os.mkfifo(fifo)
        self.start(wait_ready=wait_ready,
                   extra_env={"IMGSPOOLD_STOP_AT": point, "IMGSPOOLD_STOP_FIFO": fifo})
        return fifo

    def start_to_crash(self, point, timeout=20):
        """Starts it with IMGSPOOLD_CRASH_AT=point (util.c crash_point: POINT or POINT#N) and
        waits for it to kill itself there (SIGKILL)."""
        self.start(wait_ready=False, extra_env={"IMGSPOOLD_CRASH_AT": point})
        wait_for(self.exited, timeout, f"the daemon to kill itself at {point}")
        assert self.proc.returncode == -9, (point, self.proc.returncode, self.log()[-2000:])
        return self

    def answers_arrived(self, ids):
        """Of ids, those whose first answer was logged (attempt 1: HTTP 200), and those whose
        answer is saved in running/ (.ID@HOST.response.STATUS): after a kill, a restart must
        not call again for either."""
        log = self.log()
        logged = {t for t in ids if re.search(rf"^{re.escape(t)} attempt 1: HTTP 200", log, re.M)}
        saved = {n.split("@")[0][1:] for n in os.listdir(self.path("running")) if ".response." in n}
        return logged, saved & set(ids)

    def crash_and_restart(self, point, ids):
        """Runs until it kills itself at point (start_to_crash), then starts it again; returns
        the ids whose answer had arrived by then (answers_arrived), which must not be called
        again."""
        self.start_to_crash(point)
        logged, saved = self.answers_arrived(ids)
        print(f"# {point}: {len(logged)} answers logged, {len(saved)} saved before the kill")
        self.start()
        return logged | saved

    def wait_rescans(self, count, timeout=20):
        """Waits for count full rescans of new/ from now (needs verbose=True)."""
        assert self.verbose, "rescans are logged at debug level: start with verbose=True"
        marker = "imgspoold: debug: rescan"
        seen = self.log().count(marker)
        wait_for(lambda: self.log().count(marker) >= seen + count, timeout, f"{count} rescans")

    def exited(self):
        return self.proc is not None and self.proc.poll() is not None

    def stopped(self):
        """Whether it stopped itself (IMGSPOOLD_STOP_AT); fails, with the log's tail, when it
        has exited instead."""
        assert not self.exited(), self.log()[-2000:]
        return process_stopped(self.proc.pid)

    def send_signal(self, sig):
        if self.wrapper:    # the daemon too, not only the wrapper (strace detaches and exits)
            os.killpg(self.proc.pid, sig)
        else:
            self.proc.send_signal(sig)

    def _reap_group(self):
        """A wrapper's daemon may outlive the wrapper: nothing of the group survives a test."""
        if self.wrapper and self.proc:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def stop(self, sig=signal.SIGTERM, timeout=30):
        """Stops the daemon and returns its exit status."""
        if not self.proc or self.exited():
            return self.proc.returncode if self.proc else None
        self.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self._reap_group()
            raise AssertionError(f"daemon did not exit within {timeout}s of signal {sig}")
        self._reap_group()
        self.logf.close()
        return self.proc.returncode

    def kill(self):
        if self.proc and not self.exited():
            self.proc.kill()
            self.proc.wait()
        self._reap_group()

    def remove_faketime_files(self):
        """libfaketime makes /dev/shm/faketime_shm_PID and sem.faketime_sem_PID for each process
        started under it and removes them only at a clean exit: a killed daemon leaves them."""
        for pid in self.faked_pids:
            for name in (f"faketime_shm_{pid}", f"sem.faketime_sem_{pid}"):
                try:
                    os.unlink(os.path.join("/dev/shm", name))
                except FileNotFoundError:
                    pass
        self.faked_pids = []

    def log_size(self):
        try:
            return os.path.getsize(self.log_path)
        except OSError:
            return 0

    STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d ", re.M)

    def raw_log(self):
        """The log file as written: each line starts with its time."""
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def log(self):
        """The log without the time at the start of each line, so tests can match "^ID ...", and
        without the marks of log_barrier."""
        text = self.STAMP.sub("", self.raw_log())
        return self.MARK_LINE.sub("", text) if self.MARK in text else text

    # -- waiting for the log --------------------------------------------------------------------
    # The daemon's lines reach its log through a writer thread of its own (log.c), a little after
    # what they tell: a file in done/ or a request at the fake may come first. So a test waits for
    # a line it expects (wait_logged), and says a line never came only after a mark that the
    # daemon logged after it (log_barrier, assert_not_logged). Once the daemon has exited its log
    # is complete (it writes what it held at exit) and nothing needs waiting for.
    MARK = "imgspoold: log mark"
    MARK_LINE = re.compile(r"^(?:<\d>)?imgspoold: log mark\n", re.M)

    def logged(self, pattern, since=0):
        """The lines of the log (log()[since:], since an offset such as log_offset) that pattern
        matches: a compiled regex (searched in each line) or a substring."""
        lines = self.log()[since:].splitlines()
        if isinstance(pattern, str):
            return [line for line in lines if pattern in line]
        return [line for line in lines if pattern.search(line)]

    def wait_logged(self, pattern, timeout=20, count=1, since=0, what=None):
        """Waits for count lines (at least) that pattern matches (logged()) and returns them all.
        Fails at the deadline, or at once if the daemon has exited without them, with the log's
        tail."""
        deadline = time.monotonic() + timeout
        while True:
            ended = self.exited()   # before the read: an exited daemon's log is complete
            lines = self.logged(pattern, since)
            if len(lines) >= count:
                return lines
            if ended or time.monotonic() > deadline:
                why = "the daemon exited" if ended else f"timed out after {timeout}s"
                raise AssertionError(
                    f"{why} waiting for {what or ''}{' (' if what else ''}{count} line(s) "
                    f"matching {getattr(pattern, 'pattern', pattern)!r}{')' if what else ''}, "
                    f"{len(lines)} logged; log's tail:\n{self.log()[since:][-3000:]}")
            time.sleep(0.02)

    def _daemon_pid(self):
        """The daemon's pid: the process started, or under a wrapper that forks (strace) the
        imgspoold of its process group."""
        if not self.wrapper:
            return self.proc.pid
        exe = os.path.realpath(IMGSPOOLD)
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                if os.getpgid(int(name)) == self.proc.pid and \
                        os.readlink(f"/proc/{name}/exe") == exe:
                    return int(name)
            except OSError:
                pass
        return None

    def _marks_blocked(self, pid):
        """Whether the daemon reads SIGUSR1 from its signalfd yet (main.c): before that the
        signal would end it."""
        try:
            with open(f"/proc/{pid}/status") as f:
                blocked = next(line for line in f if line.startswith("SigBlk:"))
        except (OSError, StopIteration):
            return False
        return int(blocked.split()[1], 16) >> (signal.SIGUSR1 - 1) & 1

    def log_barrier(self, timeout=20):
        """Returns once every line the daemon made before the call is in its log: it is sent
        SIGUSR1 (IMGSPOOLD_LOG_MARK, main.c) and logs a mark, which log.c writes after every line
        made before it."""
        if self.proc is None or self.exited():
            return
        assert not self.log_elsewhere, "started with stderr elsewhere: no mark reaches its log"
        pid = []

        def ready():
            if self.exited():
                return True
            if not pid and self._daemon_pid():
                pid.append(self._daemon_pid())
            return pid and self._marks_blocked(pid[0])
        wait_for(ready, timeout, "the daemon to read SIGUSR1 (IMGSPOOLD_LOG_MARK)")
        if self.exited():
            return
        marks = self.raw_log().count(self.MARK)
        try:
            os.kill(pid[0], signal.SIGUSR1)
        except ProcessLookupError:
            return
        wait_for(lambda: self.raw_log().count(self.MARK) > marks or self.exited(), timeout,
                 f"the daemon's log mark (log's tail:\n{self.log()[-3000:]})")

    def last_lines(self):
        """Before the kill -9 that ends a test: the lines made so far into the log, which cleanup
        reads for the API key (a line the writer had not written yet would go unread). Best
        effort: nothing for a daemon stopped (SIGSTOP), not yet reading SIGUSR1, or whose log is
        elsewhere; 2 s at most for one whose loop is stuck."""
        pid = self.proc is not None and not self.exited() and not self.log_elsewhere and \
            self._daemon_pid()
        if not pid or not self._marks_blocked(pid):
            return
        try:
            if process_stopped(pid):
                return
            self.log_barrier(timeout=2)
        except (OSError, AssertionError):
            pass

    def flushed_log(self):
        """The log with every line made before the call (log_barrier): for counting lines, or
        saying one is not there."""
        self.log_barrier()
        return self.log()

    def assert_not_logged(self, pattern, since=0, what=None):
        """Fails if a line that pattern matches (logged()) was made before the call (log_barrier)."""
        self.log_barrier()
        lines = self.logged(pattern, since)
        assert not lines, (f"{what or 'logged'}: {len(lines)} line(s) matching "
                           f"{getattr(pattern, 'pattern', pattern)!r}:\n" + "\n".join(lines[:20]))

    def write_key_file(self, key):
        with open(self.key_file, "w") as f:
            f.write(key + "\n")
        os.chmod(self.key_file, 0o600)

    # -- spool ---------------------------------------------------------------------------------
    def path(self, *parts):
        return os.path.join(self.spool, *parts)

    def submit(self, task_id, job):
        """The documented way: write tmp/ID.json, then rename it into new/."""
        os.makedirs(self.path("tmp"), exist_ok=True)
        os.makedirs(self.path("new"), exist_ok=True)
        tmp = self.path("tmp", task_id + ".json")
        with open(tmp, "w" if isinstance(job, (dict, str)) else "wb") as f:
            if isinstance(job, dict):
                json.dump(job, f)
            else:
                f.write(job)
        os.rename(tmp, self.path("new", task_id + ".json"))

    def state(self, task_id):
        """The directory a job is in, read from the file system alone."""
        for d in ("done", "failed", "new", "deferred"):
            if os.path.exists(self.path(d, task_id + ".json")):
                return d
        if any(n.startswith(task_id + "@") for n in self.listdir("running")):
            return "running"
        return None

    def listdir(self, d):
        try:
            return sorted(n for n in os.listdir(self.path(d)) if not n.startswith("."))
        except FileNotFoundError:
            return []

    def wait_finished(self, task_id, timeout=20):
        return wait_for(lambda: self.state(task_id) in ("done", "failed") and self.state(task_id),
                        timeout, f"job {task_id} to finish (log:\n{self.log()[-3000:]})")

    def result(self, task_id):
        state = self.state(task_id)
        assert state in ("done", "failed"), f"{task_id} is in {state}, not finished"
        with open(self.path(state, task_id + ".result.json")) as f:
            return json.load(f)

    def read(self, d, name):
        with open(self.path(d, name), "rb") as f:
            return f.read()

    def cleanup(self, passed):
        self.kill()
        self.remove_faketime_files()
        log = self.log()
        problems = []
        for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
            if marker in log:
                problems.append(f"sanitizer report in the daemon log ({marker})")
        if self.key and self.key in log:
            problems.append("the API key appears in the daemon log")
        if self.key and self.spool:
            leaked = files_holding(self.spool, key_spellings(self.key), PUBLISHED)
            if leaked:
                problems.append(f"the API key is in published files: {leaked[:5]}")
        if passed and not problems:
            shutil.rmtree(self.dir, ignore_errors=True)
        elif problems:
            raise AssertionError("; ".join(problems) + f"\nlog:\n{log[-4000:]}")


class Tmpfs:
    """A small file system of our own (a test that fills it up hurts nobody; syncfs is a barrier
    on it whatever /tmp is), mounted below the test's scratch directory, or on at (an empty
    directory the test made; removed too once unmounted)."""

    def __init__(self, size, at=None):
        self.path = at or tempfile.mkdtemp(prefix="imgspool-tmpfs-")
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", self.path],
                       check=True)

    def close(self):
        subprocess.run(["umount", "-l", self.path], check=False)
        os.rmdir(self.path)


class BindMount:
    """source mounted on at too (the same file system through another mount), for
    env.mounted."""

    def __init__(self, source, at):
        self.at = at
        subprocess.run(["mount", "--bind", source, at], check=True)

    def close(self):
        subprocess.run(["umount", "-l", self.at], check=False)


class LoopExt4:
    """A fresh ext4 with a journal (mkfs.ext4 with its defaults; mounted with them, or with the
    mount options given, e.g. "nobarrier") on a loop device over a sparse file in a directory of
    our own (under top, else SCRATCH: tempfile's default directory once this module is
    imported), mounted there at .path. close() unmounts it, detaches the device and removes the
    directory."""

    def __init__(self, size_mb=256, top=None, options=None):
        self.top = tempfile.mkdtemp(prefix="imgspool-ext4-", dir=top)
        self.image = os.path.join(self.top, "ext4.img")
        self.path = os.path.join(self.top, "mnt")
        self.options = ["-o", options] if options else []
        try:
            with open(self.image, "wb") as f:
                f.truncate(size_mb << 20)
            os.mkdir(self.path)
            self.device = _run(["losetup", "--find", "--show", self.image]).strip()
            _run(["mkfs.ext4", "-q", self.device])
            _run(["mount"] + self.options + [self.device, self.path])
        except BaseException:
            self.close()
            raise

    def _umount(self):
        # A daemon just stopped may hold the file system for a moment.
        wait_for(lambda: subprocess.run(["umount", self.path],
                                        stderr=subprocess.DEVNULL).returncode == 0, 30,
                 f"umount {self.path}")

    def remount(self):
        """Unmounted and mounted again (after a shutdown: the journal replayed)."""
        self._umount()
        _run(["mount"] + self.options + [self.device, self.path])

    def close(self):
        if os.path.ismount(self.path):
            # Past 30 s, a lazy umount takes it out of sight and the kernel lets go of it with
            # its last user.
            try:
                self._umount()
            except AssertionError:
                subprocess.run(["umount", "-l", self.path], check=False)
        # Every device on our image, also one attached before an interruption named it.
        found = subprocess.run(["losetup", "-n", "-O", "NAME", "-j", self.image],
                               capture_output=True, text=True).stdout.split()
        for device in found:
            subprocess.run(["losetup", "-d", device], check=False)
        shutil.rmtree(self.top, ignore_errors=True)


def _run(argv):
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def clock_off_by(seconds):
    """extra_env for a daemon whose wall clock is off by seconds (libfaketime): its monotonic
    clock and the file times it reads stay true, as on a host with a wrong clock."""
    lib = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1"
    assert os.path.exists(lib), "libfaketime is missing: contrib/install-deps.sh installs it"
    return {"LD_PRELOAD": lib, "FAKETIME": f"{seconds:+d}", "FAKETIME_DONT_FAKE_MONOTONIC": "1",
            "NO_FAKE_STAT": "1", "FAKETIME_NO_CACHE": "1",
            "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:verify_asan_link_order=0"}


class Env:
    """What a test gets: a fake upstream and a factory for daemons, all cleaned up after it."""

    def __init__(self):
        self.fake = FakeUpstream(api_keys={TEST_KEY})
        self.fake.start()
        self.daemons = []
        self.peers = []   # servers of tests/lib/peers.py, closed with the test

    def peer(self, server):
        self.peers.append(server)
        return server

    def daemon(self, **settings):
        d = Daemon(self.fake, **settings)
        self.daemons.append(d)
        return d

    @contextlib.contextmanager
    def two_mounts(self):
        """Two sshfs mounts of one scratch directory (tests/lib/sshfs.py), a stand-in for two
        hosts on NFS. The daemons are killed before the mounts go."""
        from sshfs import SshfsUnavailable, TwoMounts
        base = tempfile.mkdtemp(prefix="imgspool-nfs-")
        try:
            mounts = TwoMounts(base).open()
        except SshfsUnavailable as e:
            shutil.rmtree(base, ignore_errors=True)
            raise AssertionError(f"no network file system for the test: {e}")
        try:
            yield mounts
        finally:
            for d in self.daemons:
                d.kill()
            mounts.close()
            shutil.rmtree(base, ignore_errors=True)

    @contextlib.contextmanager
    def mounted(self, fs):
        """Yields fs (a Tmpfs or LoopExt4 just made); on the way out, whatever happened, the
        test's daemons are killed (they hold it) and fs is unmounted and removed."""
        try:
            yield fs
        finally:
            try:
                for d in self.daemons:
                    d.kill()
            finally:
                fs.close()

    def close(self, passed):
        try:
            # Every daemon dies before any directory goes: a second host on a first one's
            # spool would make its shared directories again while that spool is removed.
            for d in self.daemons:
                d.last_lines()
            for d in self.daemons:
                d.kill()
            for d in self.daemons:
                d.cleanup(passed)
        finally:
            self.fake.stop()
            for p in self.peers:
                p.close(keep=not passed)


def keep_outside_tmp(path, test_name):
    """Moves a failed test's daemon directory (its log, configuration and spool) below build/,
    where it can be read after the run without anything being left in /tmp."""
    dest_dir = os.path.join(ROOT, "build", "failed-tests", test_name)
    try:
        os.makedirs(dest_dir, exist_ok=True)
        dest = os.path.join(dest_dir, os.path.basename(path))
        shutil.move(path, dest)
        return dest
    except OSError as e:
        return f"{path} (not moved: {e})"


def run_tests(tests):
    """Runs test functions (each takes an Env) and prints TAP."""
    only = os.environ.get("ONLY")
    failed = 0
    n = 0
    for test in tests:
        if only and only not in test.__name__:
            continue
        n += 1
        env = Env()
        passed = False
        started = time.monotonic()
        try:
            test(env)
            passed = True
        except Exception:
            message = traceback.format_exc()
        try:
            env.close(passed)
        except Exception:
            if passed:
                passed = False
                message = traceback.format_exc()
        took = time.monotonic() - started
        if passed:
            print(f"ok {n} - {test.__name__} ({took:.1f}s)", flush=True)
        else:
            failed += 1
            print(f"not ok {n} - {test.__name__} ({took:.1f}s)")
            # Also on stderr: prove shows it without -v, so a CI log says why a test failed.
            report = [f"{sys.argv[0]}: {test.__name__} failed:"]
            report += ["#   " + line for line in message.rstrip().splitlines()]
            for d in env.daemons:
                tail = ["#   log: " + line for line in d.log().splitlines()[-15:]]
                report.append(f"#   daemon dir kept: {keep_outside_tmp(d.dir, test.__name__)}")
                report += tail
            print("\n".join(report[1:]))
            print("\n".join(report), file=sys.stderr)
            sys.stdout.flush()
    n += 1
    left = sorted(os.listdir(SCRATCH))
    if left:
        failed += 1
        print(f"not ok {n} - the tests left nothing in the temporary directory")
        print(f"#   left behind in {SCRATCH}: {', '.join(left)}")
    else:
        print(f"ok {n} - the tests left nothing in the temporary directory")
        shutil.rmtree(SCRATCH, ignore_errors=True)
    print(f"1..{n}")
    sys.exit(1 if failed else 0)
