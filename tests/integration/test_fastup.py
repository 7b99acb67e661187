#!/usr/bin/env python3
"""build/fastup, the fake upstream of make bench, answers real daemon jobs in the wire format
the daemon accepts (the daemon publishes its PNG), refuses a wrong key as the gateway does, and
build/loadgen and build/curlgen get exactly the answers they asked for. Keeps the bench rig from rotting; times
nothing. Also: a daemon started with systemd's small soft limit of open files still holds more
calls at once than that limit (it raises the limit itself).

Run alone with `make check-fastup`: it builds build/fastup, build/loadgen and build/curlgen (not
part of the test build) first; without them the test stops at once and says so."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import TEST_KEY, Daemon, run_tests, wait_for  # noqa: E402
from fastup import FastUpstream, curlgen, loadgen, require_built  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def with_fastup(test):
    """Runs test(env, up) against a fastup of its own, closed afterwards."""
    def run(env):
        up = FastUpstream(TEST_KEY)
        try:
            test(env, up)
        finally:
            up.close()
    run.__name__ = test.__name__
    return run


def daemon(env, up, **settings):
    d = Daemon(up, **settings)
    env.daemons.append(d)      # cleaned up (and its log checked) with the test
    return d


@with_fastup
def test_openai_and_gemini_jobs_are_published(env, up):
    d = daemon(env, up).start()
    d.submit("fast-openai", {"prompt": "a lighthouse at dusk"})
    d.submit("fast-gemini", {"prompt": "a lighthouse at dawn", "model": "gemini-3-pro-image-preview"})
    for task_id, dialect in (("fast-openai", "openai"), ("fast-gemini", "gemini")):
        assert d.wait_finished(task_id) == "done", d.log()[-2000:]
        result = d.result(task_id)
        assert result["status"] == "succeeded" and result["dialect"] == dialect, result
        image = d.read("done", task_id + ".png")
        assert image.startswith(PNG_MAGIC), image[:16]
    counts = up.counters()
    assert counts["ok"] == 2 and counts["requests"] == 2, counts


@with_fastup
def test_a_wrong_key_gets_the_gateways_401(env, up):
    d = daemon(env, up, key="sk-not-the-fakes-key-0123456789abcdef").start()
    d.submit("fast-badkey", {"prompt": "never drawn"})
    wait_for(lambda: "on hold" in d.log() and d.state("fast-badkey") == "new", 20,
             f"the provider to go on hold, its job back in new/:\n{d.log()}")
    counts = up.counters()
    assert counts["unauthorized"] >= 1 and counts["ok"] == 0, counts


def assert_refused(run_client):
    """A client run with a wrong key fails and counts all 4 requests as errors."""
    try:
        run_client()
    except RuntimeError as e:
        assert "errors=4" in str(e), e
        return
    raise AssertionError("a client took 401 answers for success")


@with_fastup
def test_the_clients_count_every_answer(env, up):
    assert loadgen(up, connections=4, requests=40) > 0
    counts = up.counters()
    assert counts["ok"] == 40 and counts["connections"] == 4, counts
    assert_refused(lambda: loadgen(up, connections=2, requests=4, key="sk-wrong"))
    up.counters()
    assert curlgen(up, parallel=3, requests=30)[0] > 0
    counts = up.counters()
    assert counts["ok"] == 30 and counts["connections"] == 3, counts
    assert_refused(lambda: curlgen(up, parallel=2, requests=4, key="sk-wrong"))


def soft_limit(pid):
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                return int(line.split()[3])
    return None


def test_more_calls_at_once_than_the_soft_limit_of_open_files(env):
    """Under systemd the soft limit is 1024 and the hard one far higher: here 256 and 4096."""
    up = FastUpstream(TEST_KEY, hold=True)      # answers once all the calls are in flight
    try:
        calls = 300
        d = daemon(env, up, spool__concurrency=calls, wrapper=["prlimit", "--nofile=256:4096"])
        d.start()
        assert soft_limit(d.proc.pid) == 4096, soft_limit(d.proc.pid)
        for i in range(calls):
            d.submit(f"many-{i:03d}", {"prompt": f"one of many {i}"})
        wait_for(lambda: up.counters()["held_now"] == calls, 120,
                 f"{calls} calls in flight at once:\n{d.log()[-3000:]}")
        up.release()
        wait_for(lambda: len([n for n in d.listdir("done") if n.endswith(".result.json")]) == calls,
                 120, f"{calls} jobs done:\n{d.log()[-3000:]}")
        assert not d.listdir("failed"), d.log()[-3000:]
        d.assert_not_logged("Too many open files")
    finally:
        up.close()


def test_more_calls_at_once_than_half_the_limit_of_open_files(env):
    """A call holds a socket and, while the open files allow, its .partial: past that, the
    .partial gets its header and is closed till the answer, which is written to it then."""
    up = FastUpstream(TEST_KEY, hold=True)
    try:
        calls = 500    # 1 000 descriptors if each call held two
        d = daemon(env, up, spool__concurrency=calls, wrapper=["prlimit", "--nofile=1024:1024"])
        d.start()
        for i in range(calls):
            d.submit(f"half-{i:03d}", {"prompt": f"one of half {i}"})
        wait_for(lambda: up.counters()["held_now"] == calls, 120,
                 f"{calls} calls in flight at once:\n{d.log()[-3000:]}")
        partials = [n for n in os.listdir(d.path("running")) if n.endswith(".partial")]
        assert len(partials) == calls, f"{len(partials)} .partial files for {calls} calls"
        up.release()
        wait_for(lambda: len([n for n in d.listdir("done") if n.endswith(".result.json")]) == calls,
                 120, f"{calls} jobs done:\n{d.log()[-3000:]}")
        assert not d.listdir("failed"), d.log()[-3000:]
        d.assert_not_logged("Too many open files")
        d.assert_not_logged("memory only")
    finally:
        up.close()


def test_the_open_files_warning_counts_a_socket_a_call_and_the_reserve(env):
    # slots.c keeps a socket a call beside one call's reference images (17) and a reserve of
    # 320 + limit/16, and other calls' images and a call's .partial open only above that: 500
    # calls fit in 1024 open files, 1000 need 1426.
    for calls, warning in ((500, None), (1000, "concurrency 1000 needs 1426 open files")):
        d = env.daemon(spool__concurrency=calls, wrapper=["prlimit", "--nofile=1024:1024", "--"])
        d.start()
        log = d.log()
        assert d.stop() == 0
        if warning:
            assert warning + " (a socket a call, one call's reference images and a reserve), " \
                "more than the limit of 1024" \
                in log, log[-3000:]
        else:
            assert "open files, more than the limit" not in log, log[-3000:]


if __name__ == "__main__":
    require_built("fastup")
    run_tests([test_openai_and_gemini_jobs_are_published, test_a_wrong_key_gets_the_gateways_401,
               test_the_clients_count_every_answer,
               test_more_calls_at_once_than_the_soft_limit_of_open_files,
               test_more_calls_at_once_than_half_the_limit_of_open_files,
               test_the_open_files_warning_counts_a_socket_a_call_and_the_reserve])
