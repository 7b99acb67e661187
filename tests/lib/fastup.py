"""fastup.py - drives build/fastup (tests/bench/fastup.c), the fast fake upstream of make bench,
and the clients measured against it: build/loadgen (raw HTTP) and build/curlgen (libcurl the
way src/http.c uses it).

    up = FastUpstream(key, delay_ms=0)     # listening on 127.0.0.1:up.port when it returns
    harness.Daemon(up, ...)                # Daemon only needs up.base_url
    up.counters()                          # {"requests": .., "ok": .., "unauthorized": ..,
                                           #  "held_max": .., "held_now": ..}; starts new ones
    up.close()

FastUpstream(key, hold=True) answers nothing until up.release(): wait for
up.counters()["held_now"] to reach N, and N calls are in flight at once.

All are optimized builds in build/, made by `make build/fastup build/loadgen build/curlgen`
(make test, make check-fastup and make bench do it); require_built() stops a test run without
them with a message saying so."""
import os
import re
import resource
import signal
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
BUILD = os.path.join(os.path.dirname(os.path.dirname(HERE)), "build")
FASTUP = os.path.join(BUILD, "fastup")
LOADGEN = os.path.join(BUILD, "loadgen")
CURLGEN = os.path.join(BUILD, "curlgen")


ANSWERS = ("ok", "bad_request", "unauthorized", "not_found", "other")


def missing_binaries():
    """The rig's binaries not built yet (paths relative to the project), [] when all are."""
    return [os.path.relpath(p, os.path.dirname(BUILD)) for p in (FASTUP, LOADGEN, CURLGEN)
            if not os.access(p, os.X_OK)]


def require_built(test_name):
    """A test run alone before they are built stops at once, saying what to run (TAP
    "Bail out!": prove counts it as a failure); no test builds anything itself."""
    missing = missing_binaries()
    if missing:
        print(f"Bail out! {', '.join(missing)} not built: run `make check-{test_name}` (builds what "
              f"the test needs, then runs it) or `make build/fastup build/loadgen build/curlgen` "
              f"first", flush=True)
        raise SystemExit(1)


class FastUpstream:
    def __init__(self, key, delay_ms=0, hold=False):
        assert os.access(FASTUP, os.X_OK), f"{FASTUP} is missing: make build/fastup"
        self.proc = subprocess.Popen([FASTUP, "--key", key, "--delay-ms", str(delay_ms)] +
                                     (["--hold"] if hold else []),
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        m = re.search(r"listening on (\d+)", line)
        if not m:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"fastup did not start: {line!r}")
        self.key = key
        self.port = int(m.group(1))
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.answered = 0   # every answer since start, whoever asked for the counters
        self.asked = 0      # calls of counters()

    def counters(self):
        """Its counters since start or the last call (SIGUSR1 prints them and starts anew)."""
        self.proc.send_signal(signal.SIGUSR1)
        line = self.proc.stdout.readline()
        c = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}
        self.answered += sum(c.get(k, 0) for k in ANSWERS)
        self.asked += 1
        return c

    def release(self):
        """Answers what --hold held, and from now on after the delay only."""
        self.proc.send_signal(signal.SIGUSR2)

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.communicate(timeout=10)


def loadgen(upstream, connections, requests, key=None):
    """Requests/s of build/loadgen: exactly `requests` POSTs like the daemon's, over
    `connections` keep-alive connections, timed from the first connect to the last answer."""
    assert os.access(LOADGEN, os.X_OK), f"{LOADGEN} is missing: make build/loadgen"
    out = subprocess.run([LOADGEN, "--port", str(upstream.port), "--key", key or upstream.key,
                          "--connections", str(connections), "--requests", str(requests)],
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600)
    m = re.search(r"req_per_s=(\d+)", out.stdout)
    if out.returncode or not m:
        raise RuntimeError(f"loadgen failed: {out.stdout}{out.stderr}")
    return float(m.group(1))


def curlgen(upstream, parallel, requests, key=None, meanwhile=None, reuse=False):
    """(requests/s, CPU ms per request, peak RSS MiB) of build/curlgen: exactly `requests` POSTs,
    `parallel` at once, through libcurl's multi socket interface with src/http.c's options, no
    jobs. meanwhile(), if given, runs while curlgen does (e.g. to release a held upstream);
    reuse keeps one easy handle per slot (as http.c keeps its handles) instead of a new one per
    request."""
    assert os.access(CURLGEN, os.X_OK), f"{CURLGEN} is missing: make build/curlgen"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen([CURLGEN, "--port", str(upstream.port), "--key", key or upstream.key,
                             "--connections", str(parallel), "--requests", str(requests)] +
                            (["--reuse"] if reuse else []),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        if meanwhile:
            meanwhile()
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    m = re.search(r"req_per_s=(\d+)", out)
    if proc.returncode or not m:
        raise RuntimeError(f"curlgen failed: {out}{err}")
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    rss = int(re.search(r"maxrss_kib=(\d+)", out).group(1)) / 1024
    return float(m.group(1)), cpu * 1000 / requests, rss
