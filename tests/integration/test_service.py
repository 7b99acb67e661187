#!/usr/bin/env python3
"""The daemon as a service (issue 9): journald priorities, systemd notify and watchdog,
reload, cost-safe stop, metrics."""
import json
import os
import re
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import IMGSPOOLD, SCRATCH, TEST_KEY, cut_while_held, run_tests, wait_for  # noqa: E402
from sdnotify import NotifyListener  # noqa: E402


def test_journal_lines_carry_their_priority(env):
    d = env.daemon(key=None).start(journal=True)
    # A hold needs an operator but is not an error: a warning.
    d.wait_logged(re.compile(r"^<4>imgspoold: warning: provider 'apiyi' is on hold"))
    raw = d.raw_log()
    assert re.search(r"^<6>imgspoold: ready", raw, re.M), raw
    assert not re.search(r"^\d{4}-", raw, re.M), "the journal stamps lines itself"
    lines = [line for line in raw.splitlines() if line]
    assert all(re.match(r"<[3-7]>", line) for line in lines), lines


def test_lines_elsewhere_carry_a_timestamp(env):
    d = env.daemon(key=None).start()
    raw = d.raw_log()
    lines = [line for line in raw.splitlines() if line]
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d "
    assert lines and all(re.match(stamp, line) for line in lines), raw
    assert not re.search(r"^<\d>", raw, re.M), raw


def test_notify_ready_status_watchdog_stopping(env):
    listener = NotifyListener()
    try:
        d = env.daemon(key=None)
        watchdog_usec = 2_000_000
        d.start(extra_env=listener.env(watchdog_usec))
        wait_for(lambda: listener.first("READY", "1"), 10, "READY=1")
        ready = listener.seen("READY", "1")[0][1]
        assert "STATUS" in ready and "pending" in ready["STATUS"] and "deferred" in ready["STATUS"], ready
        wait_for(lambda: len(listener.seen("WATCHDOG", "1")) >= 5, 20, "five watchdog pings")
        # The status follows the spool: a job waiting for the held provider.
        d.submit("waits", {"prompt": "waits for a key"})
        wait_for(lambda: any("1 pending" in m["STATUS"] and "held: apiyi" in m["STATUS"]
                             for _, m in listener.seen("STATUS")), 20, "STATUS= with the job")
        d.stop()
        stop = listener.first("STOPPING", "1")
        assert stop, listener.messages
        pings = [t for t, _ in listener.seen("WATCHDOG", "1")]
        assert listener.first("READY", "1") < pings[0], "a ping before READY=1"
        assert pings[-1] < stop or len(pings) > 5
        gaps = [b - a for a, b in zip(pings, pings[1:])]
        # Every half WATCHDOG_USEC (1 s), with room for a shared machine; systemd's own limit
        # is the whole 2 s.
        assert max(gaps) < 1.5, gaps
        stopping = listener.seen("STOPPING", "1")[0][1]
        assert "EXTEND_TIMEOUT_USEC" in stopping, stopping
        assert listener.first("READY", "1") <= listener.first("STATUS") <= stop
    finally:
        listener.close()


def test_status_counts_a_due_deferred_job_once(env):
    # A deferred job that is due waits in the pending queue too: STATUS= counted it twice, as
    # pending and as deferred, where the metrics count it once (dispatch_counts).
    listener = NotifyListener()
    try:
        d = env.daemon(key=None).start()
        d.stop()
        with open(d.path("deferred", "due.json"), "w") as f:
            json.dump({"prompt": "due while the provider is held"}, f)
        old = time.time() - 60
        os.utime(d.path("deferred", "due.json"), (old, old))
        d.start(extra_env=listener.env(2_000_000))
        wait_for(lambda: any("1 deferred" in m["STATUS"] for _, m in listener.seen("STATUS")), 20,
                 "STATUS= with the deferred job")
        statuses = [m["STATUS"] for _, m in listener.seen("STATUS") if "1 deferred" in m["STATUS"]]
        assert all(s.startswith("0 pending") for s in statuses), statuses
        d.stop()
    finally:
        listener.close()


def test_restart_with_calls_in_flight_pays_once(env):
    # The default grace period is the longest call the config allows: calls longer than the
    # old 30 s default finish before the daemon exits, and a restart does not call again.
    listener = NotifyListener()
    try:
        env.fake.default = {"kind": "b64", "delay": 33}
        d = env.daemon(spool__grace_period=None, provider__timeout=60)
        d.start(extra_env=listener.env())
        for i in range(2):
            d.submit(f"long{i}", {"prompt": f"long call {i}"})
        wait_for(lambda: env.fake.inflight >= 2, 10, "2 calls in flight")
        d.send_signal(signal.SIGTERM)
        wait_for(lambda: "waiting for 2 job(s): long" in d.log(), 10, "the calls it waits for")
        stopping = wait_for(lambda: listener.seen("STOPPING", "1"), 10, "STOPPING=1")
        extend = int(stopping[0][1]["EXTEND_TIMEOUT_USEC"])
        assert extend >= 900 * 1_000_000, f"EXTEND_TIMEOUT_USEC={extend}: less than timeout_max"
        assert d.proc.wait(60) == 0, d.log()
        assert d.state("long0") == "done" and d.state("long1") == "done", d.log()
        d.start()   # as systemd does: start again at once
        env.fake.default = {"kind": "b64"}
        d.submit("after", {"prompt": "after the restart"})
        assert d.wait_finished("after") == "done"
        for i in range(2):
            assert env.fake.calls(f"long call {i}") == 1, f"long call {i} was paid twice"
    finally:
        listener.close()


def test_second_sigterm_cuts_and_records(env):
    env.fake.default = {"kind": "b64", "delay": 60}
    d = env.daemon(spool__grace_period=None, provider__timeout=120).start()
    d.submit("cut", {"prompt": "cut short"})
    wait_for(lambda: env.fake.inflight >= 1, 10, "the call")
    d.send_signal(signal.SIGTERM)
    wait_for(lambda: "waiting for 1 job(s)" in d.log(), 10, "the drain")
    d.send_signal(signal.SIGTERM)
    assert d.proc.wait(20) == 0, d.log()
    assert "second signal: cutting" in d.log(), d.log()
    assert d.state("cut") == "new"
    records = json.load(open(d.path("new", "cut.json")))["imgspool"]
    assert [a["outcome"] for a in records["attempts"]] == ["interrupted"], records


def test_cut_exits_while_a_body_write_is_stuck(env):
    """The grace cut while libcurl's transfer thread is stuck writing a body into the job's
    .partial (the stop point http:body-write: a spool on an NFS server that stopped answering):
    the daemon exits within the bound it gives that thread (2 s), where it used to wait for the
    write (here: for ever), and what it left on disk tells the restart what was done: the cut
    call is on record as interrupted, and the restart calls again."""
    env.fake.script("stuck at its write", [{"kind": "tail_stall", "stall": 60}, {"kind": "b64"}])
    d = env.daemon()
    fifo = d.start_held_at("http:body-write")
    d.submit("stuckw", {"prompt": "stuck at its write"})
    rc = cut_while_held(d, fifo, "the transfer thread stuck")
    assert rc == 0, (rc, d.log()[-2000:])
    assert "transfer thread has not ended" in d.log(), d.log()[-2000:]
    assert d.state("stuckw") == "new"
    records = json.load(open(d.path("new", "stuckw.json")))["imgspool"]
    assert [a["outcome"] for a in records["attempts"]] == ["interrupted"], records
    assert not [n for n in os.listdir(d.path("running")) if n.startswith(".stuckw@")]
    d.start()
    assert d.wait_finished("stuckw", 30) == "done", d.log()[-2000:]
    assert env.fake.calls("stuck at its write") == 2
    assert d.stop() == 0


def write_config(d, text):
    """Replaces the daemon's config with the harness's own plus text (sections of a test's)."""
    with open(d.config_path, "w") as f:
        f.write(text)


def base_config(d, concurrency=4, extra=""):
    return (f"[spool]\ndir = {d.spool}\nconcurrency = {concurrency}\npoll_interval = 1\n"
            f"grace_period = 10\nsettle_time = 2\nhost_id = testhost\nmin_free_mb = 1\n"
            f"[retry]\nbackoff_base_ms = 50\nbackoff_cap_ms = 1000\nhold_probe_interval = 1\n"
            f"[provider apiyi]\nbase_url = {d.fake.base_url}\napi_key_env = IMGSPOOL_TEST_KEY\n"
            f"timeout = 30\nconnect_timeout = 5\n" + extra)


def test_sighup_reloads_everything_mid_calls(env):
    listener = NotifyListener()
    try:
        d = env.daemon()
        other = (f"[provider old]\nbase_url = {env.fake.base_url}\n"
                 f"api_key_env = IMGSPOOL_TEST_KEY\ntimeout = 30\n")
        write_config(d, base_config(d, 4, other))
        d.start(extra_env=listener.env())
        env.fake.script("mid", {"kind": "b64", "delay": 3})
        for i in range(3):
            d.submit(f"mid{i}", {"prompt": f"mid {i}"})
        d.submit("gone", {"prompt": "mid on a provider the reload removes", "provider": "old"})
        wait_for(lambda: env.fake.inflight >= 4, 10, "4 calls in flight")
        # Concurrency 1, provider "old" gone: nothing in flight is cut or repeated.
        write_config(d, base_config(d, 1))
        d.send_signal(signal.SIGHUP)
        wait_for(lambda: "reloaded" in d.log(), 10, "the reload")
        assert "provider 'old' is no longer configured: its 1 job(s) finish first" in d.log()
        for task_id in ("mid0", "mid1", "mid2", "gone"):
            assert d.wait_finished(task_id) == "done", d.log()
        for prompt in ("mid 0", "mid 1", "mid 2", "mid on a provider the reload removes"):
            assert env.fake.calls(prompt) == 1, prompt
        assert d.result("gone")["provider"] == "old"
        # The lower concurrency holds for what comes next.
        env.fake.max_inflight = 0
        env.fake.script("after reload", {"kind": "b64", "delay": 0.3})
        for i in range(3):
            d.submit(f"next{i}", {"prompt": f"after reload {i}"})
        for i in range(3):
            assert d.wait_finished(f"next{i}") == "done"
        assert env.fake.max_inflight == 1, env.fake.max_inflight
        reloading = listener.first("RELOADING", "1")
        assert reloading and any(t > reloading for t, _ in listener.seen("READY", "1")), \
            listener.messages
    finally:
        listener.close()


def test_broken_reload_keeps_the_running_config(env):
    d = env.daemon()
    write_config(d, base_config(d, 2))
    d.start()
    write_config(d, base_config(d, 2) + "[limits]\nmax_n = lots\n")
    lines = open(d.config_path).read().count("\n")
    d.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload failed" in d.log(), 10, "the failed reload")
    assert f"the running configuration goes on: {d.config_path}:{lines}: " in d.log(), d.log()
    # A provider's default model that no call could use: refused at the reload, not job by job.
    write_config(d, base_config(d, 2, "model = gpt image 2\n"))
    lines = open(d.config_path).read().count("\n")
    d.send_signal(signal.SIGHUP)
    wait_for(lambda: d.log().count("reload failed") == 2, 10, "the second failed reload")
    assert (f"the running configuration goes on: {d.config_path}:{lines}: [provider apiyi] "
            f"model \"gpt image 2\" has ' ' at byte offset 3: a model is 1 to 128") in d.log(), d.log()
    d.submit("still", {"prompt": "still served"})
    assert d.wait_finished("still") == "done"
    assert d.result("still")["model"] == "gpt-image-2", d.result("still")
    assert not d.exited()


def test_sighup_says_why_a_provider_is_still_held(env):
    # The key comes from the environment, which a running process cannot see change.
    d = env.daemon(key=None).start()
    d.send_signal(signal.SIGHUP)
    wait_for(lambda: "still on hold" in d.log(), 10, "the reason after SIGHUP")
    line = [x for x in d.log().splitlines() if "still on hold" in x][0]
    assert "IMGSPOOL_TEST_KEY" in line and "api_key_file" in line and "restart" in line, line


def check(config_text, tmp):
    path = os.path.join(tmp, "check.ini")
    with open(path, "w") as f:
        f.write(config_text)
    res = subprocess.run([IMGSPOOLD, "-n", "-c", path], capture_output=True, text=True)
    return res.returncode, res.stderr, path


def test_config_check_looks_at_meaning(env):
    tmp = os.path.join(SCRATCH, "check")
    os.makedirs(tmp)
    try:
        spool = os.path.join(tmp, "spool")
        open(os.path.join(tmp, "a-file"), "w").close()
        head = f"[spool]\ndir = {spool}\n"
        rows = [
            (head + "[provider a]\napi_key_file = missing.key\n", 4, "missing.key"),
            (f"[spool]\ndir = {tmp}/a-file/spool\n", 2, "Not a directory"),
            (head + "concurrency = 2\n[spool]\nconcurrency = 3\n", 4, "section [spool] is given twice"),
            (head + "concurrency = 2\nconcurrency = 3\n", 4, "given twice"),
            (head + "[provider a]\ntimeout = 60 # a minute\n", 4, "comment"),
            (head + "[limits]\ntimeout_min = 100\ntimeout_max = 50\n", 4, "timeout_min"),
            (head + "default_provider = nobody\n", 3, "nobody"),
            (head + "[provider a]\nbase_url = ftp://x\n", 4, "base_url"),
            (head + "[provider a]\nmodel = gemini-3-pro-image-preview:beta\n", 4,
             "[provider a] model \"gemini-3-pro-image-preview:beta\" is a Gemini model with ':'"),
        ]
        for text, line, needle in rows:
            rc, err, path = check(text, tmp)
            assert rc != 0, f"accepted:\n{text}"
            assert f"{path}:{line}: " in err and needle in err, (text, err)
        with open(os.path.join(tmp, "good.key"), "w") as f:
            f.write("sk-x\n")
        os.chmod(os.path.join(tmp, "good.key"), 0o600)
        rc, err, _ = check(head + "[provider a]\napi_key_file = good.key\n", tmp)
        assert rc == 0, err
    finally:
        subprocess.run(["rm", "-rf", tmp])


def parse_prom(text):
    """{(name, frozenset of label pairs): value} from the Prometheus text format."""
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r'([a-z_]+)(?:\{(.*)\})? (\S+)', line)
        assert m, f"not a sample line without a timestamp: {line!r}"
        labels = frozenset(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        samples[(m.group(1), labels)] = float(m.group(3))
    return samples


def metric(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())))


def test_metrics_textfile_matches_the_spool(env):
    prom_dir = os.path.join(SCRATCH, "textfile")
    os.makedirs(prom_dir)
    prom = os.path.join(prom_dir, "imgspool.prom")
    try:
        env.fake.prices = [("gpt-image-2", 0.04)]
        env.fake.script("ok", "b64")
        env.fake.script("refused", "400_moderation")
        env.fake.script("later", {"kind": "429_retry_after", "retry_after": 300})
        d = env.daemon(metrics__textfile=prom, metrics__interval=1, **{
            "prices__gpt-image-2": "0.04",
            "provider nokey__base_url": env.fake.base_url,
            "provider nokey__api_key_env": "IMGSPOOL_NO_SUCH_KEY"}).start()
        for i in range(3):
            d.submit(f"ok{i}", {"prompt": f"ok {i}"})
        d.submit("refused", {"prompt": "refused"})
        for task_id in ("ok0", "ok1", "ok2", "refused"):
            d.wait_finished(task_id)
        d.submit("wait0", {"prompt": "waits", "provider": "nokey"})
        d.submit("wait1", {"prompt": "waits too", "provider": "nokey"})
        d.submit("later", {"prompt": "later"})
        wait_for(lambda: d.state("later") == "deferred", 20, "the 429 to defer the job")

        def settled():
            try:
                samples = parse_prom(open(prom).read())
            except FileNotFoundError:
                return None
            ok = metric(samples, "imgspool_jobs", state="deferred") == 1 and \
                metric(samples, "imgspool_jobs", state="new") == 2
            return samples if ok else None
        samples = wait_for(settled, 20, "the metrics to show the spool")
        # The figures are the spool's.
        assert metric(samples, "imgspool_jobs", state="new") == len(d.listdir("new"))
        assert metric(samples, "imgspool_jobs", state="running") == len(d.listdir("running")) == 0
        assert metric(samples, "imgspool_jobs_finished_total", state="done") == \
            len([n for n in d.listdir("done") if n.endswith(".result.json")]) == 3
        assert metric(samples, "imgspool_jobs_finished_total", state="failed") == \
            len([n for n in d.listdir("failed") if n.endswith(".result.json")]) == 1
        calls = {o: metric(samples, "imgspool_calls_total", provider="apiyi", outcome=o)
                 for o in ("succeeded", "retry", "failed", "hold", "interrupted")}
        assert calls == {"succeeded": 3, "retry": 1, "failed": 1, "hold": 0, "interrupted": 0}, calls
        assert sum(calls.values()) == len(env.fake.snapshot())
        assert metric(samples, "imgspool_call_duration_seconds_count", provider="apiyi") == 5
        assert metric(samples, "imgspool_call_duration_seconds_bucket", provider="apiyi",
                      le="+Inf") == 5
        assert metric(samples, "imgspool_retries_total", provider="apiyi") == 1
        assert metric(samples, "imgspool_provider_pauses_total", provider="apiyi") == 1
        assert metric(samples, "imgspool_provider_paused", provider="apiyi") == 1
        assert metric(samples, "imgspool_provider_held", provider="nokey") == 1
        assert metric(samples, "imgspool_provider_holds_total", provider="nokey") == 1
        assert metric(samples, "imgspool_calls_in_flight", provider="apiyi") == 0
        billed = sum(r["billed_attempts"] for r in (d.result(t) for t in ("ok0", "ok1", "ok2", "refused")))
        assert metric(samples, "imgspool_billed_calls_total", provider="apiyi", billed="yes") == billed
        spent = sum(d.result(t)["cost"]["amount"] for t in ("ok0", "ok1", "ok2", "refused"))
        assert abs(metric(samples, "imgspool_spent_total", provider="apiyi", currency="USD") - spent) < 1e-9
        assert metric(samples, "imgspool_oldest_pending_seconds") > 0
        check = subprocess.run(["promtool", "check", "metrics"], stdin=open(prom),
                               capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        assert os.listdir(prom_dir) == ["imgspool.prom"], os.listdir(prom_dir)
    finally:
        subprocess.run(["rm", "-rf", prom_dir])


def test_metrics_count_jobs_without_listing_the_spool(env):
    # With a backlog, a listing of new/ per metrics write is a full directory read per interval:
    # the counts come from what the daemon knows. Another host's jobs (running/, deferred/),
    # planted before the start, are seen by the first rescan; then, with no rescan due
    # (poll_interval 3600 s), three more writes of the file open no spool directory at all.
    prom_dir = os.path.join(SCRATCH, "textfile-memory")
    os.makedirs(prom_dir)
    prom = os.path.join(prom_dir, "imgspool.prom")
    trace = os.path.join(SCRATCH, "metrics-openat.log")
    try:
        d = env.daemon(metrics__textfile=prom, metrics__interval=1, spool__poll_interval=3600, **{
            "provider nokey__base_url": env.fake.base_url,
            "provider nokey__api_key_env": "IMGSPOOL_NO_SUCH_KEY"})
        for sub in ("new", "running", "deferred"):
            os.makedirs(d.path(sub))
        with open(d.path("running", "other1@elsewhere.json"), "w") as f:
            f.write('{"prompt": "another host runs it"}')
        with open(d.path("deferred", "later1.json"), "w") as f:
            f.write('{"prompt": "another host deferred it"}')
        hour = time.time() + 3600
        os.utime(d.path("deferred", "later1.json"), (hour, hour))
        os.symlink("/etc/hostname", d.path("new", "junk.json"))   # not a job: never counted
        for i in range(3):
            with open(d.path("new", f"held{i}.json"), "w") as f:
                json.dump({"prompt": f"waits for a key {i}", "provider": "nokey"}, f)
        d.wrapper = ["strace", "-f", "-qq", "-y", "-o", trace, "-e", "trace=openat,rename"]
        d.start()

        def figures():
            try:
                samples = parse_prom(open(prom).read())
            except FileNotFoundError:
                return None
            got = {s: metric(samples, "imgspool_jobs", state=s) for s in ("new", "running", "deferred")}
            return got if got == {"new": 3, "running": 1, "deferred": 1} else None
        wait_for(figures, 20, "the metrics to count new/ 3, running/ 1, deferred/ 1")
        inodes = set()

        def writes():
            try:
                inodes.add(os.stat(prom).st_ino)
            except FileNotFoundError:
                pass
            return len(inodes) >= 5
        wait_for(writes, 30, "four more writes of the metrics file")
        check = subprocess.run(["promtool", "check", "metrics"], stdin=open(prom),
                               capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        d.stop()   # the wrapper's status: strace gets the SIGTERM too
        with open(trace) as f:
            lines = f.read().splitlines()
        renames = [i for i, line in enumerate(lines) if "rename(" in line and ".prom" in line]
        assert len(renames) >= 5, f"{len(renames)} writes of the metrics file traced"
        listing = re.compile(r'openat\(\d+<([^>]*)>, "\."')
        spool_dirs = {d.path(sub) for sub in ("new", "running", "deferred")}
        listings = [line for line in lines[renames[1]:]
                    if (m := listing.search(line)) and m.group(1) in spool_dirs]
        assert not listings, f"{len(renames) - 1} metrics writes listed the spool:\n" + \
            "\n".join(listings[:6])
    finally:
        subprocess.run(["rm", "-rf", prom_dir, trace])


if __name__ == "__main__":
    run_tests([
        test_journal_lines_carry_their_priority,
        test_lines_elsewhere_carry_a_timestamp,
        test_notify_ready_status_watchdog_stopping,
        test_status_counts_a_due_deferred_job_once,
        test_restart_with_calls_in_flight_pays_once,
        test_second_sigterm_cuts_and_records,
        test_cut_exits_while_a_body_write_is_stuck,
        test_sighup_reloads_everything_mid_calls,
        test_broken_reload_keeps_the_running_config,
        test_sighup_says_why_a_provider_is_still_held,
        test_config_check_looks_at_meaning,
        test_metrics_textfile_matches_the_spool,
        test_metrics_count_jobs_without_listing_the_spool,
    ])
