#!/usr/bin/env python3
"""What the daemon trusts: secrets quoted back by an upstream, the daemon's records in job files,
sidecars in running/, responses that carry more than was asked for (issue 8)."""
import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import SCRATCH, TEST_KEY, files_holding, key_spellings, run_tests, wait_for  # noqa: E402
from upstream import png_for, png_prompt_sha256  # noqa: E402


def without_lock(names):
    """A running daemon holds running/.host.HOST (its host id's lock): not a sidecar."""
    return [n for n in names if not n.startswith(".host.")]


def test_key_quoted_back_is_redacted_everywhere(env):
    env.fake.script("echo my key", ["400_key_echo"])
    env.fake.script("echo it escaped", ["400_key_echo_escaped"])
    env.fake.script("name usage by it", ["200_key_in_usage"])
    d = env.daemon().start()
    d.submit("echo", {"prompt": "echo my key"})
    d.submit("escaped", {"prompt": "echo it escaped"})
    d.submit("usage", {"prompt": "name usage by it"})
    for task_id in ("echo", "escaped"):
        assert d.wait_finished(task_id) == "failed"
        r = d.result(task_id)
        assert r["error"]["code"] == "invalid_request", r["error"]
        message = r["error"]["upstream_message"]
        assert "[redacted]" in message and "unsupported size" in message, message
    assert d.wait_finished("usage") == "done"
    usage = d.result("usage")["usage"]
    assert usage["[redacted]"] == 1 and usage["total_tokens"] > 0, usage
    # Stopped first: a running daemon's temporary files (a ledger rewrite, a heartbeat) may
    # vanish between the listing and the read; a stopped one's spool and log are complete.
    assert d.stop() == 0
    assert not files_holding(d.spool, key_spellings(TEST_KEY)), "the key is in the spool"
    d.assert_not_logged(TEST_KEY)


NOBODY = 65534


def test_key_from_the_environment_is_kept_out_of_proc_and_cores(env):
    """The key's variable leaves the daemon's environment, its bytes too (/proc/PID/environ
    shows the start-up ones), yet a reload still calls with the key kept from the start; and the
    daemon is not dumpable (no core file), so /proc/PID/environ is root's: a process of the
    daemon's own user cannot read it. The daemon runs as nobody here, or root could read it all."""
    as_nobody = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    d = env.daemon(wrapper=as_nobody)
    os.chmod(SCRATCH, 0o711)   # nobody passes through to its own directory
    try:
        for dirpath, dirs, names in os.walk(d.dir):
            for name in [dirpath] + [os.path.join(dirpath, n) for n in dirs + names]:
                os.chown(name, NOBODY, NOBODY)
        d.start()
        pid = d.proc.pid
        with open(f"/proc/{pid}/environ", "rb") as f:
            environ = f.read()
        assert TEST_KEY.encode() not in environ, "the key is in /proc/PID/environ"
        assert b"IMGSPOOL_TEST_KEY" not in environ, "its variable is in /proc/PID/environ"
        assert b"IMGSPOOLD_LOG_MARK=1" in environ, "the rest of the environment stays"
        assert os.stat(f"/proc/{pid}/environ").st_uid == 0, "dumpable: /proc/PID is nobody's"
        peek = subprocess.run(as_nobody + ["cat", f"/proc/{pid}/environ"], capture_output=True)
        assert peek.returncode != 0 and b"Permission denied" in peek.stderr, peek
        d.submit("before", {"prompt": "the key kept"})
        assert d.wait_finished("before") == "done", d.log()[-2000:]
        d.send_signal(signal.SIGHUP)
        d.wait_logged("reloaded")
        d.submit("after", {"prompt": "the key kept, reloaded"})
        assert d.wait_finished("after") == "done", d.log()[-2000:]
        assert all(r["headers"]["authorization"] == "Bearer " + TEST_KEY
                   for r in env.fake.snapshot()), "a call went without the key"
        assert d.stop() == 0, d.log()[-2000:]
    finally:
        os.chmod(SCRATCH, 0o700)


CDN_524 = (b"<!DOCTYPE html><html><head><title>api-cf.apiyi.com | 524: A timeout occurred</title>"
           b"</head><body><h1>A timeout occurred</h1><p>Error code 524</p></body></html>")


def sidecar(task_id, attempt, body):
    """A response as the daemon saves it: its header line (spool-layout.md §10), then the body."""
    return f"imgspool-sidecar id={task_id} attempt={attempt}\n".encode() + body


def plant_dead_hosts_job(d, task_id, job, sidecars, host="deadhost"):
    """What a daemon that died leaves in running/: its job file and its saved sidecars, with a
    lease that ran out long ago."""
    os.makedirs(d.path("running"), exist_ok=True)
    path = d.path("running", f"{task_id}@{host}.json")
    with open(path, "w") as f:
        json.dump(job, f)
    for suffix, body in sidecars.items():
        with open(d.path("running", f".{task_id}@{host}.{suffix}"), "wb") as f:
            f.write(body)
    old = time.time() - 600
    os.utime(path, (old, old))


def test_reclaim_carries_every_saved_response(env):
    env.fake.script("reclaimed after a 524", ["b64"])
    d = env.daemon(spool__lease_timeout=2)
    plant_dead_hosts_job(d, "r524", {"prompt": "reclaimed after a 524"},
                         {"response.524": sidecar("r524", 1, CDN_524)})
    d.start()
    assert d.wait_finished("r524") == "done", d.log()
    r = d.result("r524")
    assert [a["http_status"] for a in r["attempts"]] == [524, 200], r["attempts"]
    assert r["billed_attempts"] == 2 and r["retry_count"] == 1, r
    assert env.fake.calls("reclaimed after a 524") == 1
    wait_for(lambda: without_lock(os.listdir(d.path("running"))) == [], 10,
             "the sidecars to be removed")


def test_more_images_than_asked_are_dropped(env):
    env.fake.script("one wanted", [{"kind": "url", "images": 10}])
    env.fake.script("two wanted", [{"kind": "b64", "images": 5}])
    d = env.daemon().start()
    d.submit("one", {"prompt": "one wanted"})
    d.submit("two", {"prompt": "two wanted", "n": 2})
    assert d.wait_finished("one") == "done" and d.wait_finished("two") == "done"
    r = d.result("one")
    assert r["images"] == ["one.png"] and r["images_dropped"] == 9, r
    assert len(env.fake.downloads) == 1, f"{len(env.fake.downloads)} images were downloaded"
    r = d.result("two")
    assert r["images"] == ["two.1.png", "two.2.png"] and r["images_dropped"] == 3, r
    assert sorted(n for n in d.listdir("done") if n.startswith(("one", "two"))) == [
        "one.json", "one.png", "one.result.json", "two.1.png", "two.2.png", "two.json",
        "two.result.json"], d.listdir("done")


def test_image_urls_on_private_addresses_are_refused(env):
    env.fake.script("internal url", [{"kind": "url"}])
    d = env.daemon(limits__allow_private_downloads="no").start()
    d.submit("internal", {"prompt": "internal url"})
    assert d.wait_finished("internal") == "failed"
    r = d.result("internal")
    assert r["error"]["code"] == "download_failed", r["error"]
    assert "127.0.0.1" in r["error"]["message"] and "allow_private_downloads" in r["error"]["message"]
    assert env.fake.downloads == [], "a loopback URL was fetched"
    assert env.fake.calls("internal url") == 1


NOBODY = 65534


def test_records_in_a_job_file_cannot_buy_calls(env):
    env.fake.script("always down", ["503"])
    d = env.daemon(retry__max_retries=2).start()
    d.submit("greedy", {"prompt": "always down",
                        "imgspool": {"retry_count": -1000, "billed_retries": -1000,
                                     "crashes": -5, "attempts": []}})
    assert d.wait_finished("greedy", 30) == "failed"
    assert env.fake.calls("always down") == 3, f"{env.fake.calls('always down')} calls, fresh makes 3"
    r = d.result("greedy")
    assert r["retry_count"] == 2 and len(r["attempts"]) == 3, r


def test_crash_count_at_int_max_does_not_overflow(env):
    d = env.daemon(retry__max_crash_requeues=3)
    os.makedirs(d.path("running"), exist_ok=True)
    with open(d.path("running", "ovf@testhost.json"), "w") as f:
        json.dump({"prompt": "overflow", "imgspool": {"crashes": 2147483647}}, f)
    d.start()
    assert d.wait_finished("ovf") == "failed"
    assert d.result("ovf")["error"]["code"] == "crashed"
    assert env.fake.calls("overflow") == 0


def test_records_written_by_another_user_are_ignored(env):
    d = env.daemon().start()
    fake_attempt = {"started_at": "2026-01-01T00:00:00.000+00:00", "latency_ms": 1,
                    "http_status": 200, "transport": "done", "outcome": "retry", "billed": "yes",
                    "error_code": "bad_response", "request_id": None}
    os.makedirs(d.path("tmp"), exist_ok=True)
    tmp = d.path("tmp", "forged.json")
    with open(tmp, "w") as f:
        json.dump({"prompt": "forged history", "imgspool": {"attempts": [fake_attempt] * 5,
                                                            "retry_count": 1}}, f)
    os.chown(tmp, NOBODY, NOBODY)
    os.rename(tmp, d.path("new", "forged.json"))
    assert d.wait_finished("forged") == "done"
    r = d.result("forged")
    assert len(r["attempts"]) == 1 and r["billed_attempts"] == 1, r["attempts"]
    d.wait_logged("ignoring the \"imgspool\" records")


def test_a_response_the_daemon_did_not_save_is_never_published(env):
    forged = b'{"data":[{"b64_json":"' + base64.b64encode(png_for("FORGED")) + b'"}]}'
    d = env.daemon()
    os.makedirs(d.path("running"), exist_ok=True)
    cases = {"nohead": forged,                             # not the daemon's format
             "otheruser": sidecar("otheruser", 1, forged),  # right format, another user wrote it
             "otherjob": sidecar("somebody-else", 1, forged)}  # another job's response
    for task_id, body in cases.items():
        with open(d.path("running", f"{task_id}@testhost.json"), "w") as f:
            json.dump({"prompt": f"real {task_id}"}, f)
        path = d.path("running", f".{task_id}@testhost.response.200")
        with open(path, "wb") as f:
            f.write(body)
        if task_id == "otheruser":
            os.chown(path, NOBODY, NOBODY)
    d.start()
    for task_id in cases:
        assert d.wait_finished(task_id) == "done", task_id
        (image,) = d.result(task_id)["images"]
        got = png_prompt_sha256(d.read("done", image))
        assert got == hashlib.sha256(f"real {task_id}".encode()).hexdigest(), f"{task_id}: forged image published"
        assert env.fake.calls(f"real {task_id}") == 1


def test_a_kill_at_each_step_ends_as_no_kill(env):
    """kill -9 (IMGSPOOLD_CRASH_AT: the daemon sends itself SIGKILL there) at each step of a
    deferral and of a publication; after a restart the job ends exactly as without the kill."""
    deferral = ["claim:claimed", "save:response", "move:rewritten", "move:timed", "move:moved",
                "adopt:counted", "claim:claimed#2"]
    publication = ["publish:images", "publish:result", "publish:rewritten", "publish:moved"]
    cases = [(p, ["503", "503", "b64"]) for p in deferral] + [(p, ["b64"]) for p in publication]
    cases += [("move:rewritten#2", ["503", "503", "b64"]), ("move:timed#2", ["503", "503", "b64"])]
    for i, (point, steps) in enumerate(cases):
        prompt = f"kill {i} at {point}."
        env.fake.script(prompt, steps)
        d = env.daemon(retry__max_retries=2, retry__backoff_base_ms=10)
        task_id = "k-" + point.replace(":", "-").replace("#", "-")
        d.submit(task_id, {"prompt": prompt})
        crash = point if point != "adopt:counted" else "move:rewritten"
        d.start(wait_ready=False, extra_env={"IMGSPOOLD_CRASH_AT": crash})
        wait_for(d.exited, 20, f"the daemon to kill itself at {crash}")
        assert d.proc.returncode == -9, (point, d.proc.returncode)
        if point == "adopt:counted":      # a second kill, while recovering from the first
            d.start(wait_ready=False, extra_env={"IMGSPOOLD_CRASH_AT": point})
            wait_for(d.exited, 20, f"the daemon to kill itself at {point}")
        d.start()
        assert d.wait_finished(task_id, 30) == "done", (point, d.log()[-2000:])
        r = d.result(task_id)
        statuses = [a["http_status"] for a in r["attempts"]]
        want = [503, 503, 200] if len(steps) == 3 else [200]
        assert statuses == want, (point, statuses)
        assert r["retry_count"] == len(want) - 1 and r["billed_attempts"] == 1, (point, r)
        assert env.fake.calls(prompt) == len(want), (point, env.fake.calls(prompt))
        record = json.loads(d.read("done", task_id + ".json"))["imgspool"]
        assert len(record["attempts"]) == len(want) and record["finished"] == "succeeded", record
        wait_for(lambda: without_lock(os.listdir(d.path("running"))) == [], 10, "no sidecars left")
        d.stop()


def test_a_call_cut_in_flight_is_recorded_once_whatever_the_kills(env):
    """A kill -9 with a call in flight, then a second one while the restart moves the job back
    to new/ with that interrupted attempt in its records: the attempt is recorded once."""
    env.fake.script("cut once.", [{"kind": "b64", "delay": 30}, "b64"])
    d = env.daemon()
    d.submit("cut", {"prompt": "cut once."})
    d.start()
    wait_for(lambda: env.fake.calls("cut once.") == 1, 10, "the call to be in flight")
    d.kill()
    d.start(wait_ready=False, extra_env={"IMGSPOOLD_CRASH_AT": "move:rewritten"})
    wait_for(d.exited, 20, "the daemon to kill itself while requeueing")
    assert d.proc.returncode == -9, d.proc.returncode
    d.start()
    assert d.wait_finished("cut") == "done", d.log()[-2000:]
    r = d.result("cut")
    assert [a["outcome"] for a in r["attempts"]] == ["interrupted", "succeeded"], r["attempts"]
    assert r["billed_attempts"] == 2 and env.fake.calls("cut once.") == 2, r


def test_a_call_cut_by_a_crash_counts_against_billed_retries(env):
    """A kill -9 with a call in flight: the restart records it interrupted, billed unknown, and
    counts it against [retry] max_billed_retries as the shutdown path does, so a later call of
    unknown billing (a 524) is not retried: no extra call is bought."""
    env.fake.script("cut then 524.", [{"kind": "b64", "delay": 30}, "524", "b64"])
    d = env.daemon(retry__max_billed_retries=1, retry__backoff_base_ms=10)
    d.submit("cut524", {"prompt": "cut then 524."})
    d.start()
    wait_for(lambda: env.fake.calls("cut then 524.") == 1, 10, "the call to be in flight")
    d.kill()
    d.start()
    assert d.wait_finished("cut524") == "failed", d.log()[-2000:]
    r = d.result("cut524")
    assert [(a["transport"], a["http_status"]) for a in r["attempts"]] == [
        ("interrupted", None), ("done", 524)], r["attempts"]
    assert r["error"]["code"] == "timeout", r["error"]
    assert env.fake.calls("cut then 524.") == 2, env.fake.calls("cut then 524.")
    record = json.loads(d.read("failed", "cut524.json"))["imgspool"]
    assert record["billed_retries"] == 1, record


def test_a_failed_job_resubmitted_by_hand_runs_again_with_a_fresh_budget(env):
    env.fake.script("fails then works", ["503", "503", "503", "b64"])
    d = env.daemon(retry__max_retries=1).start()
    d.submit("again", {"prompt": "fails then works"})
    assert d.wait_finished("again") == "failed"
    first = json.loads(d.read("failed", "again.json"))["imgspool"]
    assert len(first["attempts"]) == 2 and first["finished"] == "failed", first
    assert first["error_code"] == "upstream_unavailable", first
    os.rename(d.path("failed", "again.json"), d.path("new", "again.json"))
    assert d.wait_finished("again") == "done", d.log()[-2000:]
    r = d.result("again")
    assert [a["http_status"] for a in r["attempts"]] == [503, 200], r["attempts"]
    assert r["retry_count"] == 1, r
    record = json.loads(d.read("done", "again.json"))["imgspool"]
    assert record["finished"] == "succeeded" and len(record["attempts"]) == 2, record
    (run,) = record["runs"]
    assert run["run"] == 1 and run["status"] == "failed" and len(run["attempts"]) == 2, run
    d.wait_logged("again attempt 1:", count=2)
    d.wait_logged("again attempt 2:", count=2)
    log = d.flushed_log()
    assert log.count("again attempt 1:") == 2 and log.count("again attempt 2:") == 2, log
    assert "again attempt 3:" not in log


if __name__ == "__main__":
    run_tests([
        test_key_quoted_back_is_redacted_everywhere,
        test_key_from_the_environment_is_kept_out_of_proc_and_cores,
        test_reclaim_carries_every_saved_response,
        test_more_images_than_asked_are_dropped,
        test_image_urls_on_private_addresses_are_refused,
        test_records_in_a_job_file_cannot_buy_calls,
        test_crash_count_at_int_max_does_not_overflow,
        test_records_written_by_another_user_are_ignored,
        test_a_response_the_daemon_did_not_save_is_never_published,
        test_a_kill_at_each_step_ends_as_no_kill,
        test_a_call_cut_in_flight_is_recorded_once_whatever_the_kills,
        test_a_call_cut_by_a_crash_counts_against_billed_retries,
        test_a_failed_job_resubmitted_by_hand_runs_again_with_a_fresh_budget,
    ])
