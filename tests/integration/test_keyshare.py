#!/usr/bin/env python3
"""Many hosts, one API key: two daemons on two sshfs mounts of one spool keep one provider's
concurrency, rate, 429 pause, hold and daily budget together (spool-layout.md §17)."""
import datetime
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import cli, ledger_files, ledger_runs, ledger_spent, run_tests, wait_for  # noqa: E402
from sshfs import SshfsUnavailable, TwoMounts  # noqa: E402

POLL = 1          # [spool] poll_interval of both daemons
LEASE = 4         # [spool] lease_timeout


class TwoHosts:
    """A spool on an sshfs export, mounted twice, with daemon hostA on one mount and hostB on
    the other; jobs are submitted on the file server itself."""

    def __init__(self, env, **settings):
        self.env = env
        self.base = tempfile.mkdtemp(prefix="imgspool-keyshare-")
        try:
            self.mounts = TwoMounts(self.base).open()
        except SshfsUnavailable as e:
            shutil.rmtree(self.base, ignore_errors=True)
            raise AssertionError(f"no network file system for the test: {e}")
        self.export = os.path.join(self.mounts.export, "spool")
        for sub in ("tmp", "new"):
            os.makedirs(os.path.join(self.export, sub), exist_ok=True)
        common = dict(spool__concurrency=16, spool__poll_interval=POLL,
                      spool__lease_timeout=LEASE, spool__grace_period=2)
        common.update(settings)
        self.a = env.daemon(spool_dir=os.path.join(self.mounts.mount_a, "spool"),
                            spool__host_id="hostA", **common)
        self.b = env.daemon(spool_dir=os.path.join(self.mounts.mount_b, "spool"),
                            spool__host_id="hostB", **common)

    def start(self):
        try:
            self.a.start()
            self.b.start()
        except BaseException:
            self.close()
            raise
        return self

    def submit(self, task_id, job):
        tmp = os.path.join(self.export, "tmp", task_id + ".json")
        with open(tmp, "w") as f:
            json.dump(job, f)
        os.rename(tmp, os.path.join(self.export, "new", task_id + ".json"))

    def count(self, d, prefix=""):
        return sum(1 for n in os.listdir(os.path.join(self.export, d))
                   if n.startswith(prefix) and n.endswith(".json") and not n.endswith(".result.json")
                   and not n.startswith("."))

    def tickets(self, host):
        d = os.path.join(self.export, "providers", "apiyi", "calls")
        return [n for n in os.listdir(d) if n.startswith(host + "~")] if os.path.isdir(d) else []

    def close(self):
        for d in self.env.daemons:
            d.kill()
        self.mounts.close()
        shutil.rmtree(self.base, ignore_errors=True)


def past_budget(h, prefix, jobs, within):
    """Submits jobs jobs; waits till within of them are done and both hosts say the provider is
    over its daily budget (each has read the other's ledger then)."""
    for i in range(jobs):
        h.submit(f"{prefix}{i:02d}", {"prompt": f"budget {prefix} {i}"})
    wait_for(lambda: h.count("done", prefix) == within, 60, f"{within} jobs done")
    wait_for(lambda: "over its daily budget" in h.a.log() and "over its daily budget" in h.b.log(),
             20, "both hosts to say the provider is over budget")


def nth_request(env, n):
    """A script match for the fake: true once, for the first request once n have arrived."""
    fired = []

    def match(rec):
        if not fired and len(env.fake.requests) >= n:
            fired.append(rec)
            return True
        return False
    return match


def stamped(daemon, pattern):
    """Wall-clock times of the log lines matching pattern."""
    times = []
    for line in daemon.raw_log().splitlines():
        if re.search(pattern, line):
            times.append(datetime.datetime.fromisoformat(line[:29]).timestamp())
    return times


def quiet_gap(calls, after, until):
    """Requests that started in the open interval (after, until), by the fake's clock."""
    return [r for r in calls if after < r["started"] < until]


def test_concurrency_is_shared_and_a_dead_hosts_share_comes_back(env):
    env.fake.default = {"kind": "b64", "delay": 1.0}
    h = TwoHosts(env, provider__concurrency=8).start()
    try:
        for i in range(80):
            h.submit(f"c{i:02d}", {"prompt": f"shared concurrency {i}"})
        wait_for(lambda: h.count("done", "c") >= 24, 90, "24 jobs done")
        assert env.fake.max_inflight <= 8, f"{env.fake.max_inflight} calls in flight, the key allows 8"
        assert env.fake.max_inflight >= 6, f"only {env.fake.max_inflight} in flight: the limit starves"
        for d in (h.a, h.b):   # each host claimed some (its log written a little later)
            d.wait_logged(re.compile(r"^c\d+ claimed"), what="a claim of each host")

        # Host A dies with calls in flight: its tickets stay until their lease runs out, then
        # host B alone runs 8 at once.
        wait_for(lambda: len(h.tickets("hostA")) >= 2, 30, "host A to hold tickets")
        h.a.kill()
        killed = time.monotonic()
        left = len(h.tickets("hostA"))
        wait_for(lambda: env.fake.inflight == 8, LEASE + 3 * POLL + 3,
                 f"host B to run 8 calls once host A's {left} ticket(s) expired")
        took = time.monotonic() - killed
        print(f"# host A's share came back to host B {took:.1f} s after the kill "
              f"(lease_timeout {LEASE} s)")
        assert not h.tickets("hostA"), h.tickets("hostA")
        wait_for(lambda: h.count("done", "c") == 80, 120, "all 80 jobs done")
        assert env.fake.max_inflight <= 8, f"{env.fake.max_inflight} calls in flight, the key allows 8"
        assert h.b.stop() == 0
    finally:
        h.close()


def test_rate_is_shared(env):
    # rpm 6 over a 5 s window (rate_window makes the test short; 60 s is the real minute).
    # Each host runs at most 3 calls at once and a call takes 2 s, so both hosts take part in
    # every burst of starts: alone, each would start 6 per window.
    env.fake.default = {"kind": "b64", "delay": 2.0}
    h = TwoHosts(env, provider__rpm=6, provider__rate_window=5, spool__concurrency=3).start()
    try:
        for i in range(15):
            h.submit(f"r{i:02d}", {"prompt": f"shared rate {i}"})
        wait_for(lambda: h.count("done", "r") == 15, 90, "15 jobs done")
        starts = sorted(r["started"] for r in env.fake.snapshot())
        assert len(starts) == 15, len(starts)
        worst = max(sum(1 for s in starts if t <= s < t + 5.0) for t in starts)
        assert worst <= 6, f"{worst} calls started within 5 s, the key allows 6"
        for d in (h.a, h.b):   # each host claimed some (its log written a little later)
            d.wait_logged(re.compile(r"^r\d+ claimed"), what="a claim of each host")
    finally:
        h.close()


def test_a_429_on_one_host_pauses_both(env):
    env.fake.default = {"kind": "b64", "delay": 0.1}
    env.fake.script(nth_request(env, 30), [{"kind": "429_retry_after", "retry_after": "4"}])
    h = TwoHosts(env).start()
    try:
        for i in range(150):
            h.submit(f"p{i:03d}", {"prompt": f"shared pause {i}"})
        wait_for(lambda: h.count("done", "p") == 150, 120, "150 jobs done")
        calls = sorted(env.fake.snapshot(), key=lambda r: r["started"])
        limited = [r for r in calls if r["status"] == 429]
        assert len(limited) == 1, len(limited)
        # The pause began when the 429 reached the host that got it: after the fake took the
        # request, and before that host logged the attempt (its helper judges the answer later,
        # by as much as a loaded machine adds). So it lasts at least until 4 s after the start
        # of that request, which bounds every window below; the fake's times are monotonic.
        wall = time.time() - time.monotonic()
        t429 = limited[0]["started"]
        # By the daemons' logs: the host that got it stops at once, the other sees the pause
        # within one poll_interval (plus what a loaded machine adds) and claims nothing after.
        wait_for(lambda: stamped(h.a, r"attempt \d+: HTTP 429") or
                 stamped(h.b, r"attempt \d+: HTTP 429"), 20, "the 429 in a host's log")
        got, other = (h.a, h.b) if stamped(h.a, r"attempt \d+: HTTP 429") else (h.b, h.a)
        t_got = stamped(got, r"attempt \d+: HTTP 429")[0]
        other.wait_logged("paused by another host's 429", what="the other host to see the pause")
        seen = stamped(other, r"paused by another host's 429")
        print(f"# the other host saw the pause {seen[0] - t_got:.2f} s after the 429 "
              f"(poll_interval {POLL} s)")
        assert seen[0] - t_got <= POLL + 0.5, f"{seen[0] - t_got:.2f} s to see the pause"
        still_paused = t429 + wall + 3.9
        for d, since in ((got, t_got), (other, seen[0])):
            d.flushed_log()   # every claim made so far in the log
            claims = [t for t in stamped(d, r"^\S+ p\d+ claimed") if since < t < still_paused]
            assert not claims, f"{len(claims)} claim(s) during the pause, {claims[0] - t_got:.2f} s after it"
        # And at the fake: nothing new from either host once both knew (requests already on
        # the wire may arrive a little later on a loaded machine).
        knew = max(limited[0]["finished"] + POLL + 1.0, seen[0] - wall + 1.0)
        early = quiet_gap(calls, knew, t429 + 3.9)
        assert not early, (f"{len(early)} request(s) {early[0]['started'] - t429:.2f} s and more "
                           f"after the 429, within its Retry-After of 4 s")
    finally:
        h.close()


def test_a_hold_on_one_host_holds_both_and_one_probe_releases_them(env):
    env.fake.default = {"kind": "b64", "delay": 0.1}
    env.fake.script(nth_request(env, 20), [{"kind": "429_quota"}])
    h = TwoHosts(env, retry__hold_probe_interval=4).start()
    try:
        for i in range(120):
            h.submit(f"q{i:03d}", {"prompt": f"shared hold {i}"})
        wait_for(lambda: h.count("done", "q") == 120, 120, "120 jobs done")
        calls = sorted(env.fake.snapshot(), key=lambda r: r["started"])
        held = [r for r in calls if r["behaviour"] == "429_quota"]
        assert len(held) == 1, len(held)
        t_hold = held[0]["finished"]
        # By the daemons' logs: neither host claims a job between seeing the hold and the
        # probe (hold_probe_interval 4 s).
        for d in (h.a, h.b):
            d.wait_logged("provider 'apiyi' is on hold", what="each host to see the hold")
            d.flushed_log()   # every claim made so far in the log
            seen = stamped(d, r"provider 'apiyi' is on hold")
            claimed = stamped(d, r"^\S+ q\d+ claimed")
            assert claimed, "no claim in a host's log"
            claims = [t for t in claimed if seen[0] < t < t_hold + 3.0]
            assert not claims, f"{len(claims)} claim(s) on hold, {claims[0] - t_hold:.2f} s after it"
        # At the fake: nothing between the hold reaching the other host and the probe (requests
        # already on the wire may arrive a little later on a loaded machine); the probe is alone
        # until it is answered.
        after = [r for r in calls if r["started"] > t_hold + POLL + 1.0]
        probe = after[0]
        assert probe["started"] - t_hold >= 3.0, f"a call {probe['started'] - t_hold:.2f} s after the hold"
        overlapping = [r for r in after[1:] if r["started"] < probe["finished"]]
        assert not overlapping, f"{len(overlapping)} call(s) alongside the probe"
        assert h.count("failed") == 0
        # The host that did not probe hears of the release at its next rescan, which may come
        # after the prober has finished every job alone.
        wait_for(lambda: "another host's probe worked" in h.a.log() + h.b.log(), POLL + 10,
                 "the probe to release the other host")
        assert "another host's word" in h.a.log() + h.b.log(), "the hold did not reach the other host"
    finally:
        h.close()


def test_daily_budget_is_shared_and_a_reload_raises_it(env):
    env.fake.default = {"kind": "b64", "delay": 0.2}
    env.fake.prices = [("*", 0.10)]
    h = TwoHosts(env, provider__budget_daily="1.00", verbose=True,
                 **{"prices__gpt-image-2": "0.10"})
    prom = os.path.join(h.a.dir, "imgspool.prom")
    with open(h.a.config_path, "a") as f:
        f.write(f"[metrics]\ntextfile = {prom}\ninterval = 1\n")
    h.start()
    try:
        past_budget(h, "b", 30, 10)
        h.a.wait_rescans(3)
        h.b.wait_rescans(3)
        wait_for(lambda: os.path.exists(prom) and
                 'imgspool_provider_over_budget{provider="apiyi"} 1' in open(prom).read(), 10,
                 "the over-budget gauge")
        billed = sum(1 for r in env.fake.snapshot() if r["billed"])
        # The stated bound: 0 over for per-image prices (every call reserves its price first).
        assert billed == 10, f"{billed} billed calls, the budget allows 10"
        assert h.count("new", "b") == 20 and h.count("failed") == 0
        spent = ledger_spent(h.export)
        assert sum(spent.values()) == 1000000, spent

        for d in (h.a, h.b):
            with open(d.config_path) as f:
                text = f.read()
            with open(d.config_path, "w") as f:
                f.write(text.replace("budget_daily = 1.00", "budget_daily = 5.00"))
            d.send_signal(signal.SIGHUP)
        wait_for(lambda: h.count("done", "b") == 30, 60, "the other 20 jobs after the reload")
        assert sum(1 for r in env.fake.snapshot() if r["billed"]) == 30
        wait_for(lambda: h.a.logged("within its budgets again") or
                 h.b.logged("within its budgets again"), 20, "a host to say it is within again")
        wait_for(lambda: 'imgspool_provider_over_budget{provider="apiyi"} 0' in open(prom).read(),
                 10, "the over-budget gauge back to 0")
    finally:
        h.close()


def test_total_budget_is_shared_across_providers_and_hosts(env):
    """[budget] daily over two providers on two hosts: every host counts every provider's calls
    in flight (each calls/ listed again only when it changed, judged on sshfs's whole-second
    mtimes) and every host's ledger, so the jobs of both providers stop at the total."""
    env.fake.default = {"kind": "b64", "delay": 0.3}
    env.fake.prices = [("*", 0.10)]
    b = {"provider b__base_url": env.fake.base_url, "provider b__api_key_env": "IMGSPOOL_TEST_KEY",
         "provider b__timeout": 30, "provider b__connect_timeout": 5}
    h = TwoHosts(env, budget__daily="1.00", **b, **{"prices__gpt-image-2": "0.10"})
    h.start()
    try:
        for i in range(24):
            h.submit(f"t{i:02d}", {"prompt": f"total budget {i}", "provider": "apiyi" if i % 2 else "b"})
        wait_for(lambda: h.count("done", "t") == 10, 60, "10 jobs done")
        wait_for(lambda: "over its total daily budget" in h.a.log() and
                 "over its total daily budget" in h.b.log(), 20, "both hosts to stop at the total")
        billed = sum(1 for r in env.fake.snapshot() if r["billed"])
        assert billed == 10, f"{billed} billed calls, the total budget allows 10"
        assert h.count("new", "t") == 14 and h.count("failed") == 0
        spent = {prov: sum(ledger_runs(h.export, prov).values()) for prov in ("apiyi", "b")}
        assert sum(spent.values()) == 1000000 and all(spent.values()), spent
    finally:
        h.close()


def test_a_host_restarted_without_its_ledger_keeps_what_it_spent(env):
    """A host restarted while ledger/ was cleared starts a new run, with a file of its own: the
    other host, which read its earlier run, carries that reading back (the run has ended: the
    restarted host's lock names its new run), and every host, the restarted one too, counts it,
    so the shared daily budget still holds."""
    env.fake.default = {"kind": "b64", "delay": 0.2}
    env.fake.prices = [("*", 0.10)]
    h = TwoHosts(env, provider__budget_daily="0.50", verbose=True,
                 **{"prices__gpt-image-2": "0.10"}).start()
    try:
        past_budget(h, "l", 8, 5)
        ledger = os.path.join(h.export, "ledger")
        before = ledger_spent(h.export)
        assert sum(before.values()) == 500000, before
        name = max(before, key=before.get)
        restarted, other = (h.a, h.b) if name == "hostA" else (h.b, h.a)
        assert cli(h.export, "pause", "apiyi").returncode == 0   # no call while it restarts
        h.a.wait_rescans(2)
        h.b.wait_rescans(2)
        assert restarted.stop() == 0
        shutil.rmtree(ledger)
        os.mkdir(ledger)
        restarted.start()
        fresh, = ledger_files(h.export, name)
        with open(os.path.join(ledger, fresh)) as f:
            assert not json.load(f)["providers"], fresh
        wait_for(lambda: ledger_files(h.export, name, copies=True), 30,
                 f"the other host to carry {name}'s earlier run back")
        assert cli(h.export, "resume", "apiyi").returncode == 0
        restarted.wait_rescans(3)
        other.wait_rescans(3)
        billed = sum(1 for r in env.fake.snapshot() if r["billed"])
        assert billed == 5, f"{billed} billed calls, the budget allows 5"
        assert h.count("new", "l") == 3 and h.count("failed") == 0
        after = ledger_spent(h.export)
        assert after == before, (before, after)
    finally:
        h.close()


if __name__ == "__main__":
    run_tests([test_concurrency_is_shared_and_a_dead_hosts_share_comes_back,
               test_rate_is_shared,
               test_a_429_on_one_host_pauses_both,
               test_a_hold_on_one_host_holds_both_and_one_probe_releases_them,
               test_daily_budget_is_shared_and_a_reload_raises_it,
               test_total_budget_is_shared_across_providers_and_hosts,
               test_a_host_restarted_without_its_ledger_keeps_what_it_spent])
