#!/usr/bin/env python3
"""Retries waiting in memory (src/deferral.c): when deferred/ cannot be written (here: removed
under the daemon), a retry waits out its backoff in memory, its job in running/. Once due, a
retry whose provider is blocked until an event (an operator's pause, its own calls in flight,
answers recovered from before a restart not yet billed) waits for that event: it looks again
when the event comes (slots.c walks the waiting retries at a call's end and at slots_recheck),
never on a poll. Each look that finds it blocked is logged at debug level, so the tests count
them: one at the due time, none until the event, then the call.

At shutdown such a retry goes to deferred/ with its due time as mtime, as a deferral writes it,
so no host (nor this one, restarted) calls it before its backoff is over; where no records can
be written at all, it stays in running/ with its saved response, for the restart."""
import json
import os
import signal
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import Tmpfs, cli, fill, held_at_stop, run_tests, wait_for  # noqa: E402


def looks(d, task_id, why, provider="apiyi"):
    """How many looks of task_id's retry found its provider blocked for why."""
    return d.log().count(f"{task_id} debug: its retry waits for provider '{provider}' ({why})")


def retry_in_memory(env, d, task_id, prompt, **job):
    """Submits task_id, answered 429 first: deferred/ is gone, so its retry waits in memory."""
    if os.path.isdir(d.path("deferred")):
        os.rmdir(d.path("deferred"))
    d.submit(task_id, {"prompt": prompt, **job})
    wait_for(lambda: f"{task_id} warning: cannot move to deferred/" in d.log(), 20,
             f"the retry in memory:\n{d.log()[-2000:]}")


def quiet_until_event(d, task_id, why, provider="apiyi"):
    """The retry has looked once and found its provider blocked for why; three rescans later
    (two seconds at least, two looks of the old one-second poll) it has not looked again."""
    wait_for(lambda: looks(d, task_id, why, provider) >= 1, 20,
             f"{task_id}'s retry to wait ({why}):\n{d.log()[-2000:]}")
    d.wait_rescans(3)
    assert looks(d, task_id, why, provider) == 1, (looks(d, task_id, why, provider),
                                                   d.log()[-3000:])


def started_after(env, prompt, t0, what, slack=0.0):
    """Waits for the retry's call and prints how long after t0 (time.monotonic(), the fake's
    clock) the fake received it: a figure, not a bound (none in a timed test). That it came
    after the event with no look in between (quiet_until_event) is what shows the event
    started it. slack: t0 may be noted a little after the event (the fake notes a call's end
    after its answer is sent)."""
    wait_for(lambda: env.fake.calls(prompt) == 2, 10, f"the retry's call after {what}")
    started = [r["started"] for r in env.fake.snapshot() if r["prompt"] == prompt][1]
    print(f"# the retry's call reached the fake {(started - t0) * 1000:.0f} ms after {what}")
    assert started >= t0 - slack, (started, t0)


def test_a_retry_in_memory_waits_for_an_operators_resume(env):
    """Paused by an operator (control/pause.apiyi) when its retry comes due: the retry looks
    once, then nothing until `imgspool resume`, whose control/ change starts it at once."""
    d = env.daemon(verbose=True).start()
    prompt = "paused retry [fake:429_retry_after retry_after=2|b64]"
    retry_in_memory(env, d, "r", prompt)
    assert cli(d.spool, "pause", "apiyi").returncode == 0
    quiet_until_event(d, "r", "paused by an operator")
    assert env.fake.calls(prompt) == 1
    t0 = time.monotonic()
    assert cli(d.spool, "resume", "apiyi").returncode == 0
    started_after(env, prompt, t0, "the resume")
    assert d.wait_finished("r") == "done", d.log()[-2000:]
    d.log_barrier()   # no look on its way to the log
    assert looks(d, "r", "paused by an operator") == 1, d.log()[-3000:]
    os.mkdir(d.path("deferred"))
    assert d.stop() == 0


def test_a_retry_in_memory_waits_for_a_call_of_its_provider_to_end(env):
    """"r" is answered 429 (Retry-After 2) while "hog" calls for 6 s: after the pause the
    provider ramps up from one call at a time, and "hog" is that call, so r's retry finds the
    provider full. It looks once, then nothing until hog's call ends, which starts it."""
    d = env.daemon(verbose=True, spool__concurrency=2).start()
    env.fake.script("the long call", {"kind": "b64", "delay": 6})
    d.submit("hog", {"prompt": "the long call"})
    wait_for(lambda: env.fake.inflight == 1, 20, "hog's call")
    prompt = "retried behind it [fake:429_retry_after retry_after=2|b64]"
    retry_in_memory(env, d, "r", prompt)
    why = "full: its calls in flight"
    wait_for(lambda: looks(d, "r", why) >= 1, 20, f"r's retry to wait:\n{d.log()[-2000:]}")
    assert d.state("hog") == "running" and env.fake.calls(prompt) == 1
    wait_for(lambda: env.fake.calls(prompt) == 2, 20, "the retry's call")
    hog_end = [r["finished"] for r in env.fake.snapshot() if r["prompt"] == "the long call"][0]
    started_after(env, prompt, hog_end, "hog's answer", slack=0.1)
    assert d.wait_finished("r") == "done", d.log()[-2000:]
    assert d.wait_finished("hog") == "done"
    # hog's call lasted about 4 s past r's due time: the old poll looked 3-4 times.
    d.log_barrier()   # no look on its way to the log
    assert looks(d, "r", why) == 1, d.log()[-3000:]
    assert env.fake.max_inflight == 2
    os.mkdir(d.path("deferred"))
    assert d.stop() == 0


def test_a_retry_in_memory_waits_for_recovered_answers_to_be_billed(env):
    """After a restart, calls under a budget wait until the answers saved before it are in the
    ledger (here the judgement of "saved", under apiyi's budget, is held at its stop point).
    "r" was called on provider b before b had a budget; a reload gives it one, so r's retry,
    due meanwhile, waits for that judgement: it looks once, then nothing until the last
    recovered answer is billed."""
    d = env.daemon(verbose=True, spool__concurrency=1, provider__budget_daily="100",
                   **{"provider b__base_url": env.fake.base_url,
                      "provider b__api_key_env": "IMGSPOOL_TEST_KEY"})
    d.submit("saved", {"prompt": "answered before the kill"})
    d.start_to_crash("save:response")
    fifo = d.start_held_at("recovery:judge")
    writer = held_at_stop(fifo, d)
    prompt = "retried under a new budget [fake:429_retry_after retry_after=2|b64]"
    retry_in_memory(env, d, "r", prompt, provider="b")
    with open(d.config_path) as f:
        config = f.read()
    assert "[provider b]\n" in config, config
    with open(d.config_path, "w") as f:
        f.write(config.replace("[provider b]\n", "[provider b]\nbudget_daily = 100\n"))
    d.send_signal(signal.SIGHUP)
    wait_for(lambda: "reloaded" in d.log(), 10, "the reload")
    quiet_until_event(d, "r", "recovered answers not yet in the ledger", "b")
    assert env.fake.calls(prompt) == 1
    t0 = time.monotonic()
    os.close(writer)
    started_after(env, prompt, t0, "the recovered answer's judgement was let go")
    assert d.wait_finished("r") == "done", d.log()[-2000:]
    assert d.wait_finished("saved") == "done"
    assert env.fake.calls("answered before the kill") == 1
    os.mkdir(d.path("deferred"))
    assert d.stop() == 0


def retry_in_memory_on_a_full_disk(env, fs, prompt):
    """Starts a daemon on the tmpfs fs; "r" is answered 429 (Retry-After 600) once fs is full,
    so its retry waits in memory. Returns the daemon, the filler and when r was submitted."""
    d = env.daemon(spool_dir=os.path.join(fs.path, "spool"), verbose=True).start()
    env.fake.script(prompt, {"kind": "429_retry_after", "retry_after": "600", "delay": 1})
    submitted = time.time()
    d.submit("r", {"prompt": prompt})
    wait_for(lambda: env.fake.inflight == 1, 20, "r's call")
    filler = fill(fs.path)
    wait_for(lambda: "r warning: cannot move to deferred/" in d.log(), 20,
             f"the retry in memory:\n{d.log()[-2000:]}")
    return d, filler, submitted


def test_shutdown_moves_a_retry_in_memory_to_deferred_with_its_due_time(env):
    """"r" is answered 429 (Retry-After 600) on a full file system: its retry waits ten minutes
    in memory. Room comes back, and the daemon is stopped: r goes to deferred/ with its due time
    as mtime, as a deferral writes it, not to new/, where any host, or this one restarted,
    would call it at once."""
    with env.mounted(Tmpfs("16m")) as fs:
        prompt = "a ten-minute backoff"
        d, filler, submitted = retry_in_memory_on_a_full_disk(env, fs, prompt)
        os.unlink(filler)
        assert d.stop() == 0
        assert d.state("r") == "deferred", (d.state("r"), d.log()[-2000:])
        mtime = os.stat(d.path("deferred", "r.json")).st_mtime
        assert mtime > submitted + 300, (mtime - submitted, d.log()[-2000:])
        assert "r deferred (shutdown): retry 1 at " in d.log(), d.log()[-2000:]
        with open(d.path("deferred", "r.json")) as f:
            records = json.load(f)["imgspool"]
        assert records["retry_count"] == 1 and len(records["attempts"]) == 1, records
        d.start()
        d.wait_rescans(2)
        assert d.state("r") == "deferred" and env.fake.calls(prompt) == 1, d.log()[-2000:]
        assert d.stop() == 0


def test_shutdown_leaves_a_retry_in_running_when_no_records_can_be_written(env):
    """"r" is answered 429 (Retry-After 600) on a full file system, and the daemon is stopped
    with the disk still full: neither deferred/ nor new/ can take its records. It stays in
    running/ with its saved response, its lease running to its due time, rather than going to
    new/ without its attempt, its response and its backoff. Room comes back: the restart
    finishes the saved answer without calling again, and defers the retry."""
    with env.mounted(Tmpfs("16m")) as fs:
        prompt = "a ten-minute backoff, no room at shutdown"
        d, filler, submitted = retry_in_memory_on_a_full_disk(env, fs, prompt)
        assert d.stop() == 0
        assert d.state("r") == "running", (d.state("r"), d.log()[-2000:])
        assert "r warning: shutdown: cannot write its records (No space left on device): left " \
            "in running/" in d.log(), d.log()[-2000:]
        running = [n for n in os.listdir(d.path("running")) if n.startswith(".r@")] + \
            [n for n in os.listdir(d.path("running")) if n.startswith("r@")]
        assert any(n.endswith(".response.429") for n in running), running
        lease = os.stat(d.path("running", "r@testhost.json")).st_mtime
        assert lease > submitted + 300, (lease - submitted, d.log()[-2000:])
        os.unlink(filler)
        d.start()
        wait_for(lambda: d.state("r") == "deferred", 20, f"r deferred:\n{d.log()[-2000:]}")
        assert os.stat(d.path("deferred", "r.json")).st_mtime > submitted + 300
        with open(d.path("deferred", "r.json")) as f:
            records = json.load(f)["imgspool"]
        assert records["retry_count"] == 1 and len(records["attempts"]) == 1, records
        assert records["attempts"][0]["http_status"] == 429, records
        assert records.get("crashes", 0) == 0, records   # a clean stop is no death
        d.wait_rescans(2)
        assert env.fake.calls(prompt) == 1, d.log()[-2000:]
        assert d.stop() == 0


def test_shutdown_moves_a_retry_in_memory_to_new_when_deferred_stays_unwritable(env):
    """deferred/ is still gone at shutdown: the retry falls back to new/, keeping its due time
    as mtime, and the log says why. That deferred/ cannot be listed is said once, not at every
    rescan."""
    d = env.daemon(verbose=True).start()
    prompt = "deferred/ never comes back [fake:429_retry_after retry_after=600|b64]"
    submitted = time.time()
    retry_in_memory(env, d, "r", prompt)
    unreadable = f"imgspoold: error: cannot read '{d.spool}/deferred': No such file or directory"
    wait_for(lambda: unreadable in d.log(), 20, f"deferred/ unreadable:\n{d.log()[-2000:]}")
    d.wait_rescans(3)
    assert d.log().count(unreadable) == 1, d.log()[-3000:]
    assert d.stop() == 0
    assert d.state("r") == "new", (d.state("r"), d.log()[-2000:])
    assert os.stat(d.path("new", "r.json")).st_mtime > submitted + 300
    assert "r warning: cannot move to deferred/ (No such file or directory): to new/ instead" \
        in d.log(), d.log()[-2000:]
    os.mkdir(d.path("deferred"))


def test_a_deferral_never_replaces_another_version_of_its_id_in_deferred(env):
    """Two hosts each run a version of one id; one's deferral moves its job into deferred/ while
    the other's version already waits there. The move was a plain rename, over the other's file
    and its records: that version was never called. It is now RENAME_NOREPLACE (tmpfs, ext4 have
    it): the retry waits in memory instead (EEXIST), and both versions run."""
    d = env.daemon()
    prompt = "deferred onto another version [fake:429_retry_after retry_after=1|b64]"
    other = "another host's version of it, waiting in deferred/"
    env.fake.script(other, ["b64"])
    fifo = d.start_held_at("move:pinned")
    d.submit("dv", {"prompt": prompt})
    held = held_at_stop(fifo, d)   # the deferral, before its rename into deferred/
    with open(d.path("tmp", "dv.json"), "w") as f:
        json.dump({"prompt": other}, f)
    past = time.time() - 60
    os.utime(d.path("tmp", "dv.json"), (past, past))
    os.rename(d.path("tmp", "dv.json"), d.path("deferred", "dv.json"))
    os.close(held)

    def both_ran():
        try:   # a later move waits at the stop point too: let each go on
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass
        return (env.fake.calls(prompt) == 2 and env.fake.calls(other) == 1 and
                d.state("dv") == "done" and not d.listdir("deferred"))
    wait_for(both_ran, 30, f"both versions to run:\n{d.log()[-3000:]}")
    d.wait_logged("dv warning: cannot move to deferred/ (File exists); retrying from memory")
    assert d.stop() == 0


if __name__ == "__main__":
    run_tests([
        test_a_retry_in_memory_waits_for_an_operators_resume,
        test_a_retry_in_memory_waits_for_a_call_of_its_provider_to_end,
        test_a_retry_in_memory_waits_for_recovered_answers_to_be_billed,
        test_shutdown_moves_a_retry_in_memory_to_deferred_with_its_due_time,
        test_shutdown_moves_a_retry_in_memory_to_new_when_deferred_stays_unwritable,
        test_shutdown_leaves_a_retry_in_running_when_no_records_can_be_written,
        test_a_deferral_never_replaces_another_version_of_its_id_in_deferred,
    ])
