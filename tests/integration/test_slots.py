#!/usr/bin/env python3
"""Call slots (src/slots.c): [spool] concurrency counts calls in flight; while calls end often, the
next job is claimed ahead and waits in running/ for a slot, with no call; an operator's cancel or
hold, or a shutdown, takes it back without one."""
import json
import os
import re
import signal
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import cli, run_tests, wait_for  # noqa: E402


def running_jobs(d):
    return [n.split("@")[0] for n in d.listdir("running")]


def start_with_one_ahead(env, long_call=3, long_answer=None, concurrency=1, **settings):
    """Concurrency 1: "first" ends quickly, "long" then calls for long_call s, and "ahead" (submitted
    after them) is claimed meanwhile: a call ended within the last second, so one job may wait
    for the slot. Returns the daemon once "ahead" is in running/ with no call made for it.
    With concurrency 2 and provider__concurrency=1, "ahead" waits for its provider instead,
    beside a free slot."""
    env.fake.script("first call", {"kind": "b64", "delay": 0.2})
    env.fake.script("long call", long_answer or {"kind": "b64", "delay": long_call})
    d = env.daemon(spool__concurrency=concurrency, **settings).start()
    os.makedirs(d.path("tmp"), exist_ok=True)
    cli(d.spool, "pause")   # the three are in new/, in order, before anything starts
    for i, (task_id, prompt) in enumerate((("first", "first call"), ("long", "long call"),
                                           ("ahead", "claimed ahead"))):
        tmp = d.path("tmp", task_id + ".json")
        with open(tmp, "w") as f:
            json.dump({"prompt": prompt}, f)
        os.utime(tmp, (1_700_000_001 + i,) * 2)   # its place in line, before it is seen
        os.rename(tmp, d.path("new", task_id + ".json"))
    cli(d.spool, "resume")
    wait_for(lambda: env.fake.inflight == 1 and env.fake.calls("long call") == 1 and
             "ahead" in running_jobs(d), 20, "'ahead' claimed while 'long' is called")
    assert env.fake.calls("claimed ahead") == 0
    return d


def test_a_job_is_claimed_ahead_and_called_when_the_slot_frees(env):
    d = start_with_one_ahead(env, long_call=1.5)   # ends before "ahead" has waited 2 s
    assert d.wait_finished("ahead") == "done"
    assert d.wait_finished("long") == "done"   # its slot went to "ahead" before its publication
    assert env.fake.max_inflight == 1, "one call at a time, as concurrency says"
    for prompt in ("first call", "long call", "claimed ahead"):
        assert env.fake.calls(prompt) == 1, prompt


def test_a_job_claimed_ahead_is_cancelled_without_a_call(env):
    d = start_with_one_ahead(env)
    r = cli(d.spool, "cancel", "ahead")
    assert r.returncode == 0, r
    assert d.wait_finished("ahead") == "failed"
    res = d.result("ahead")
    assert res["error"]["code"] == "cancelled" and res["attempts"] == [], res
    assert "before its call" in res["error"]["message"], res["error"]
    assert d.wait_finished("long") == "done"
    assert env.fake.calls("claimed ahead") == 0


def test_a_job_claimed_ahead_is_held_without_a_call(env):
    d = start_with_one_ahead(env)
    r = cli(d.spool, "hold", "ahead")
    assert r.returncode == 0, r
    wait_for(lambda: os.path.exists(d.path("hold", "ahead.json")), 20, "'ahead' in hold/")
    assert d.wait_finished("long") == "done"
    assert env.fake.calls("claimed ahead") == 0
    with open(d.path("hold", "ahead.json")) as f:
        assert "imgspool" not in f.read(), "no attempt, no records"


def test_shutdown_puts_a_job_claimed_ahead_back_in_new(env):
    d = start_with_one_ahead(env)
    d.send_signal(signal.SIGTERM)
    wait_for(lambda: d.state("ahead") == "new", 10, "'ahead' back in new/ at once")
    d.proc.wait(30)   # one signal: the call in flight has its grace period
    assert d.stop() == 0
    assert d.state("long") == "done", "the call in flight finished in the grace period"
    assert env.fake.calls("claimed ahead") == 0
    assert os.stat(d.path("new", "ahead.json")).st_mtime == 1_700_000_003, "its place in line"


def test_a_job_claimed_ahead_goes_back_to_new_for_an_idle_host(env):
    """No call ends on this host for the rest of "long": "ahead" waits about two seconds, then
    goes back to new/, where a host with room calls it long before "long" ends."""
    d = start_with_one_ahead(env, long_call=30)
    other = env.daemon(spool_dir=d.spool, spool__host_id="otherhost", spool__concurrency=4).start()
    wait_for(lambda: d.state("ahead") == "done", 15, "'ahead' done by the other host")
    assert d.state("long") == "running", "well before the long call ends"
    assert env.fake.calls("claimed ahead") == 1
    d.wait_logged("back to new/")
    other.wait_logged("ahead", what="the call by the other host")


def test_a_job_claimed_ahead_is_no_crash_when_the_daemon_dies(env):
    """A job in the ready line made no call: a daemon killed then counts no crash for it, so
    even with max_crash_requeues = 0 it is called after the restart (the call in flight, cut,
    does count)."""
    d = start_with_one_ahead(env, retry__max_crash_requeues=0)
    d.kill()
    d.start()
    assert d.wait_finished("ahead") == "done", d.result("ahead")
    assert env.fake.calls("claimed ahead") == 1
    assert d.wait_finished("long") == "failed"
    assert d.result("long")["error"]["code"] == "crashed"


def test_a_job_claimed_ahead_leaves_a_long_paused_provider_at_once(env):
    """"long" is answered 429 with Retry-After 30: its provider pauses for 30 s. "ahead", waiting
    in the line for it, goes back to new/ at once, keeping its place, for a host that may have
    another way to it; not after 2 s in the line for want of a slot."""
    d = start_with_one_ahead(
        env, long_answer={"kind": "429_retry_after", "retry_after": "30", "delay": 1})
    wait_for(lambda: d.state("ahead") == "new", 10, "'ahead' back in new/")
    d.wait_logged("ahead back to new/ (its provider is paused)")
    assert os.stat(d.path("new", "ahead.json")).st_mtime == 1_700_000_003, "its place in line"
    assert env.fake.calls("claimed ahead") == 0


def test_another_hosts_pause_sends_a_job_claimed_ahead_back_at_once(env):
    """Another host's 429 pauses the provider for 30 s (providers/apiyi/pause, seen at a rescan):
    "ahead", waiting in the line for it, goes back to new/ at once, keeping its place, not
    after its 2 s in the line for want of a slot."""
    d = start_with_one_ahead(env, long_call=8)
    pause = d.path("providers", "apiyi", "pause")
    os.makedirs(os.path.dirname(pause), exist_ok=True)
    with open(pause + ".tmp", "w"):
        pass
    until = time.time() + 30
    os.utime(pause + ".tmp", (until, until))
    os.rename(pause + ".tmp", pause)
    wait_for(lambda: d.state("ahead") == "new", 10, "'ahead' back in new/")
    d.wait_logged("paused by another host's 429")
    d.wait_logged("ahead back to new/ (its provider is paused)")
    assert os.stat(d.path("new", "ahead.json")).st_mtime == 1_700_000_003, "its place in line"
    assert env.fake.calls("claimed ahead") == 0


def test_an_operator_pause_sends_a_job_claimed_ahead_back_at_once(env):
    """"imgspool pause" sends "ahead", waiting in the line, back to new/ at once (keeping its
    place), not after its 2 s in the line for want of a slot; after "resume" it runs."""
    d = start_with_one_ahead(env)
    assert cli(d.spool, "pause").returncode == 0
    wait_for(lambda: d.state("ahead") == "new", 10, "'ahead' back in new/")
    d.wait_logged("ahead back to new/ (its provider is paused by an operator)")
    assert os.stat(d.path("new", "ahead.json")).st_mtime == 1_700_000_003, "its place in line"
    assert cli(d.spool, "resume").returncode == 0
    assert d.wait_finished("ahead") == "done"
    assert d.state("long") == "done"
    assert env.fake.calls("claimed ahead") == 1


def test_a_reload_that_adds_a_slot_calls_a_job_claimed_ahead_at_once(env):
    """A reload raises [spool] concurrency from 1 to 2: "ahead", waiting in the line, is called
    at once, beside "long", not sent back to new/ after its 2 s in the line."""
    d = start_with_one_ahead(env, long_call=8)
    with open(d.config_path) as f:
        spool, rest = f.read().split("[retry]\n", 1)
    assert "concurrency = 1\n" in spool, spool
    with open(d.config_path, "w") as f:
        f.write(spool.replace("concurrency = 1\n", "concurrency = 2\n") + "[retry]\n" + rest)
    d.send_signal(signal.SIGHUP)
    wait_for(lambda: env.fake.calls("claimed ahead") == 1, 10, "'ahead' called")
    assert d.state("long") == "running", "called beside 'long'"
    d.assert_not_logged("ahead back to new/")
    assert d.wait_finished("ahead") == "done"
    assert d.wait_finished("long") == "done"


def test_a_retry_in_memory_takes_no_shared_ticket_without_a_slot(env):
    """"r" is answered 429 (Retry-After 3) with deferred/ gone: its retry waits in memory.
    Meanwhile "hog" takes this host's one slot with provider b for 8 s. When r is due, its
    provider (concurrency 2, kept with other hosts) has room but this host has no slot: r must
    wait for the slot without a ticket among every host's calls, not park in the ready line with
    one (and leave it after 2 s)."""
    d = env.daemon(spool__concurrency=1, provider__concurrency=2,
                   **{"provider b__base_url": env.fake.base_url,
                      "provider b__api_key_env": "IMGSPOOL_TEST_KEY"}).start()
    os.rmdir(d.path("deferred"))
    env.fake.script("hog", {"kind": "b64", "delay": 8})
    d.submit("r", {"prompt": "retried [fake:429_retry_after retry_after=3|b64]"})
    wait_for(lambda: "r warning: cannot move to deferred/" in d.log(), 20,
             f"the retry in memory:\n{d.log()[-2000:]}")
    d.submit("hog", {"prompt": "hog", "provider": "b"})
    assert d.wait_finished("r", 30) == "done", d.log()[-2000:]
    # r's retry went out only once hog's 8 s call was over (by the fake's clock: hog's result may
    # be published after r's on a loaded machine).
    calls = env.fake.snapshot()
    hog = [c for c in calls if c["prompt"] == "hog"]
    r = [c for c in calls if (c["prompt"] or "").startswith("retried")]
    assert len(hog) == 1 and len(r) == 2, (len(hog), len(r))
    assert r[1]["started"] - hog[0]["started"] > 7.0, \
        f"r's retry went out {r[1]['started'] - hog[0]['started']:.2f} s into hog's 8 s call"
    d.assert_not_logged("r back to new/")
    assert env.fake.max_inflight == 1
    os.mkdir(d.path("deferred"))
    assert d.stop() == 0


def test_a_backlog_for_a_shared_provider_is_read_once(env):
    """A provider whose concurrency is kept with other hosts gets no job claimed ahead. The
    claims ahead that the idle loop tries while its calls end must not read the backlog's files
    only to leave them waiting (each was read there, waited, and was read again at its claim):
    every job file in new/ is opened once, at its claim."""
    env.fake.default = {"kind": "b64", "delay": 0.3}
    d = env.daemon(spool__concurrency=2, provider__concurrency=4)
    for sub in ("new", "tmp"):
        os.makedirs(d.path(sub), exist_ok=True)
    names = [f"b{i:02d}" for i in range(12)]
    for i, name in enumerate(names):
        tmp = d.path("tmp", name + ".json")
        with open(tmp, "w") as f:
            json.dump({"prompt": f"backlog {i}"}, f)
        os.utime(tmp, (1_700_000_000 + i,) * 2)
        os.rename(tmp, d.path("new", name + ".json"))
    log = os.path.join(d.dir, "strace.log")
    d.wrapper = ["strace", "-f", "-qq", "-y", "-o", log, "-e", "trace=openat"]
    d.start()
    for name in names:
        assert d.wait_finished(name, 60) == "done", d.log()[-2000:]
    assert env.fake.max_inflight == 2
    d.stop()
    with open(log, errors="replace") as f:
        opened = re.findall(r'openat\(\d+<[^>]*/new>, "(b\d+)\.json", O_RDONLY', f.read())
    assert sorted(set(opened)) == names, opened
    twice = sorted({name for name in opened if opened.count(name) > 1})
    assert not twice, f"read more than once: {twice} ({len(opened)} reads of {len(names)} jobs)"


if __name__ == "__main__":
    run_tests([
        test_a_job_is_claimed_ahead_and_called_when_the_slot_frees,
        test_a_job_claimed_ahead_is_cancelled_without_a_call,
        test_a_job_claimed_ahead_is_held_without_a_call,
        test_shutdown_puts_a_job_claimed_ahead_back_in_new,
        test_a_job_claimed_ahead_goes_back_to_new_for_an_idle_host,
        test_a_job_claimed_ahead_is_no_crash_when_the_daemon_dies,
        test_a_job_claimed_ahead_leaves_a_long_paused_provider_at_once,
        test_another_hosts_pause_sends_a_job_claimed_ahead_back_at_once,
        test_an_operator_pause_sends_a_job_claimed_ahead_back_at_once,
        test_a_reload_that_adds_a_slot_calls_a_job_claimed_ahead_at_once,
        test_a_retry_in_memory_takes_no_shared_ticket_without_a_slot,
        test_a_backlog_for_a_shared_provider_is_read_once,
    ])
