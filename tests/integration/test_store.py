#!/usr/bin/env python3
"""Object storage (issue 13): every image of every succeeded job lands in a real S3-compatible
server (s3rver) before the job is published, each PUT signed (checked by the AWS SDK's signer,
not by our code); a store that is down delays publication without a second upstream call; and
kill -9 during uploads loses nothing and repeats no billed call."""
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import held_at_stop, run_tests, wait_for  # noqa: E402
from peers import S3Server  # noqa: E402
from test_putback import in_trace, traced  # noqa: E402

PREFIX = "renders/2026/"


def store_daemon(env, s3, **settings):
    base = {"store__endpoint": s3.endpoint, "store__bucket": s3.bucket, "store__prefix": PREFIX,
            "store__region": "eu-west-3", "store__access_key_id_env": "T_S3_ACCESS",
            "store__secret_access_key_env": "T_S3_SECRET", "store__retry_base_ms": 200,
            "store__retry_cap_ms": 2000}
    base.update(settings)
    return env.daemon(extra_env={"T_S3_ACCESS": S3Server.ACCESS_KEY, "T_S3_SECRET": S3Server.SECRET_KEY},
                      **base)


def check_stored(d, s3, task_id):
    """The result's urls point at objects holding exactly the bytes of the images in done/."""
    r = d.result(task_id)
    assert r["status"] == "succeeded", r
    assert len(r["urls"]) == len(r["images"]) >= 1, r
    assert r["output_url"] == r["urls"][0], r
    for name, url in zip(r["images"], r["urls"]):
        key = PREFIX + name
        assert url == f"{s3.endpoint}/{s3.bucket}/{key}", (url, key)
        stored = s3.get(key)
        assert stored is not None, f"{key} is not in the bucket"
        assert stored == d.read("done", name), f"{key}: bytes differ from done/{name}"
    return r


def check_signed(s3, d):
    """Every PUT carried a valid SigV4 signature and the SHA-256 of the bytes it stored."""
    puts = [q for q in s3.requests() if q.get("method") == "PUT"]
    assert puts, "no PUT reached the store"
    for q in puts:
        assert q["signature"] == "ok", q
    stored = {q["url"]: q["sha256"] for q in puts if q.get("status") == 200}
    for url, sha in stored.items():
        name = url.rsplit("/", 1)[1]
        assert hashlib.sha256(d.read("done", name)).hexdigest() == sha, url


def test_every_image_in_the_bucket(env):
    s3 = env.peer(S3Server()).start()
    d = store_daemon(env, s3).start()
    jobs = {f"st{i}": {"prompt": f"store job {i}", "n": 1 + i % 3} for i in range(6)}
    jobs["st-jpeg"] = {"prompt": "store jpeg", "output_format": "jpeg"}
    for task_id, job in jobs.items():
        d.submit(task_id, job)
    d.submit("st-refused", {"prompt": "store refused [fake:400_moderation]"})
    for task_id in list(jobs) + ["st-refused"]:
        d.wait_finished(task_id, 30)
    for task_id, job in jobs.items():
        r = check_stored(d, s3, task_id)
        assert len(r["images"]) == job.get("n", 1), r
        assert env.fake.calls(job["prompt"]) == 1
    refused = d.result("st-refused")
    assert refused["status"] == "failed" and refused["urls"] == [] and refused["output_url"] is None
    check_signed(s3, d)
    assert d.stop() == 0


def test_store_down_delays_publication(env):
    """The store is down across several retries (30 s with these backoffs): the paid job waits
    in running/, leased, and is published once the store is back; the upstream is called once."""
    s3 = env.peer(S3Server())
    d = store_daemon(env, s3, store__retry_base_ms=2000, store__retry_cap_ms=16000,
                     spool__lease_timeout=4).start()
    d.submit("down1", {"prompt": "while the store is down", "n": 2})
    failures = lambda: d.log().count("down1 warning: upload of image") + d.log().count(  # noqa: E731
        "down1 upload of image")
    wait_for(lambda: failures() >= 5, 60, "five failed uploads")
    assert d.state("down1") == "running"
    d.wait_logged("upload of image 1 to the store failed (not_sent")
    running = [n for n in d.listdir("running") if n.startswith("down1@")][0]
    age = time.time() - os.stat(d.path("running", running)).st_mtime
    assert age < 4, f"the lease was not kept fresh ({age:.1f}s old)"
    s3.start()
    d.wait_finished("down1", 40)
    check_stored(d, s3, "down1")
    check_signed(s3, d)
    assert env.fake.calls("while the store is down") == 1
    assert d.stop() == 0


def test_kill_9_during_uploads(env):
    s3 = env.peer(S3Server(put_delay_ms=800)).start()
    d = store_daemon(env, s3, spool__concurrency=8)
    ids = [f"k{i}" for i in range(8)]
    for i, task_id in enumerate(ids):
        d.submit(task_id, {"prompt": f"kill during upload {i}", "n": 1 + i % 2})
    kills = 0
    while kills < 3 and not all(d.state(t) == "done" for t in ids):
        held = len([q for q in s3.requests() if "holding" in q])
        d.start()
        if kills == 0:
            # Every paid call has answered: from here a kill can only hit uploads or publication.
            wait_for(lambda: all(f"{t} attempt 1: HTTP 200" in d.log() for t in ids), 30,
                     "every call to answer")
        wait_for(lambda: len([q for q in s3.requests() if "holding" in q]) > held
                 or all(d.state(t) == "done" for t in ids), 30, "an upload in flight")
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait()
        d.logf.close()
        kills += 1
    d.start()
    for task_id in ids:
        d.wait_finished(task_id, 60)
    for i, task_id in enumerate(ids):
        r = check_stored(d, s3, task_id)
        assert r["billed_attempts"] == 1, r
        assert env.fake.calls(f"kill during upload {i}") == 1, task_id
    check_signed(s3, d)
    assert kills >= 1
    assert d.stop() == 0


def test_grace_cut_during_upload(env):
    """A second SIGTERM while a job's images are being stored: the daemon exits cleanly, the job
    stays in running/ with its saved response, and the restart stores and publishes it without
    a second call."""
    s3 = env.peer(S3Server(put_delay_ms=5000)).start()
    d = store_daemon(env, s3).start()
    d.submit("cut1", {"prompt": "cut during upload", "n": 2})
    wait_for(lambda: any("holding" in q for q in s3.requests()), 30, "an upload in flight")
    d.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: "shutting down" in d.log(), 10, "the first signal")
    d.proc.send_signal(signal.SIGTERM)
    d.proc.wait(30)
    d.logf.close()
    assert d.proc.returncode == 0, (d.proc.returncode, d.log()[-2000:])
    assert d.state("cut1") == "running", d.state("cut1")
    d.start()
    d.wait_finished("cut1", 60)
    r = check_stored(d, s3, "cut1")
    assert r["billed_attempts"] == 1, r
    assert env.fake.calls("cut during upload") == 1
    assert d.stop() == 0


def cut_twice(d):
    """SIGTERM, then a second one that cuts what is left (the grace cut); the daemon exits 0."""
    d.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: "shutting down" in d.log()[d.log_offset:], 10, "the first signal")
    d.proc.send_signal(signal.SIGTERM)
    d.proc.wait(30)
    d.logf.close()
    assert d.proc.returncode == 0, (d.proc.returncode, d.log()[-2000:])


def uploading(d, task_id):
    """Since d's last start: a failed upload of task_id's image (the store is down), or its end."""
    return (f"{task_id} warning: upload of image 1 to the store failed" in d.log()[d.log_offset:]
            or d.state(task_id) in ("done", "failed"))


def crashes(d, task_id):
    """The deaths counted in the job's records (0 when none is)."""
    state = d.state(task_id)
    name = task_id + ".json" if state != "running" else \
        [n for n in d.listdir("running") if n.startswith(task_id + "@")][0]
    with open(d.path(state, name)) as f:
        return json.load(f).get("imgspool", {}).get("crashes", 0)


def test_clean_restarts_are_no_crashes(env):
    """A paid job waiting for the store is left in running/ at each grace cut, to be finished by
    the restart: more clean restarts than max_crash_requeues never fail it as crashed, and the
    upstream is called once."""
    s3 = env.peer(S3Server())   # down until the end
    d = store_daemon(env, s3, retry__max_crash_requeues=1).start()
    d.submit("left1", {"prompt": "restarted while the store is down"})
    for restart in range(3):
        if restart:
            d.start()
        wait_for(lambda: uploading(d, "left1"), 30, "an upload to fail")
        assert d.state("left1") == "running", (restart, d.state("left1"), d.log()[-2000:])
        cut_twice(d)
        assert d.state("left1") == "running", (restart, d.state("left1"))
        assert "crashed" not in d.log() and crashes(d, "left1") == 0, d.log()[-2000:]
        assert ".left1@testhost.left.1" in os.listdir(d.path("running"))
    s3.start()
    d.start()
    d.wait_finished("left1", 60)
    r = check_stored(d, s3, "left1")
    assert r["billed_attempts"] == 1, r
    assert crashes(d, "left1") == 0
    assert env.fake.calls("restarted while the store is down") == 1
    assert not [n for n in os.listdir(d.path("running")) if n.startswith(".left1@testhost.left.")]
    assert d.stop() == 0


def test_left_job_reclaimed_by_another_host(env):
    """A job one host left in running/ at a grace cut, and that host never came back: another
    host takes it over once its lease ran out and finishes it from the saved response, counting
    no death (with max_crash_requeues = 0 one would fail it)."""
    s3 = env.peer(S3Server())
    a = store_daemon(env, s3).start()
    a.submit("left2", {"prompt": "left for another host"})
    wait_for(lambda: uploading(a, "left2"), 30, "an upload to fail")
    cut_twice(a)
    assert a.state("left2") == "running"
    s3.start()
    b = store_daemon(env, s3, spool_dir=a.spool, spool__host_id="otherhost",
                     spool__lease_timeout=2, retry__max_crash_requeues=0).start()
    b.wait_finished("left2", 60)
    b.wait_logged("reclaimed from 'testhost'")
    r = check_stored(b, s3, "left2")
    assert r["billed_attempts"] == 1, r
    assert crashes(b, "left2") == 0
    assert env.fake.calls("left for another host") == 1
    assert b.stop() == 0


def test_a_mark_that_cannot_be_removed_says_why(env):
    """A job left at a grace cut, its mark running/.ID@HOST.left.1 beside it; at the restart the
    removal of the mark fails (EACCES). The log said "not a mark the daemon left" of the daemon's
    own mark; it says the removal's error. The mark is not believed (one not removed could be
    believed again), and the job is finished all the same."""
    s3 = env.peer(S3Server())
    d = store_daemon(env, s3).start()
    d.submit("lu", {"prompt": "its mark cannot be removed"})
    wait_for(lambda: uploading(d, "lu"), 30, "an upload to fail")
    cut_twice(d)
    mark = ".lu@testhost.left.1"
    assert mark in os.listdir(d.path("running")), os.listdir(d.path("running"))
    s3.start()
    trace = traced(d, mark, "-e", "trace=unlinkat", "-e", "inject=unlinkat:error=EACCES:when=1")
    d.start()
    assert d.wait_finished("lu", 60) == "done", d.log()[-2000:]
    assert in_trace(trace, "(INJECTED)"), "the removal of the mark did not fail"
    d.wait_logged(f"lu warning: ignoring 'running/{mark}': cannot remove it: Permission denied")
    d.assert_not_logged("not a mark the daemon left")
    check_stored(d, s3, "lu")
    assert d.stop() == 0


def test_cut_before_the_upload_starts(env):
    """A job whose saved answer is still being judged at the grace cut (after a restart, held at
    the stop point recovery:judge: under a budget) reaches its upload only after the cut, with the
    store down: it is left for the next restart, as one cut during its upload, and the daemon
    exits (it used to try the upload for ever)."""
    s3 = env.peer(S3Server())   # down until the end
    d = store_daemon(env, s3, provider__budget_daily="100", retry__max_crash_requeues=0)
    d.start()
    d.submit("late", {"prompt": "judged after the cut"})
    wait_for(lambda: uploading(d, "late"), 30, "an upload to fail")
    cut_twice(d)
    fifo = d.start_held_at("recovery:judge")
    writer = held_at_stop(fifo, d)
    try:
        d.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: "shutting down" in d.log()[d.log_offset:], 10, "the first signal")
        d.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: "second signal" in d.log()[d.log_offset:], 10, "the cut")
    finally:
        os.close(writer)
    try:
        d.proc.wait(20)
    except subprocess.TimeoutExpired:
        raise AssertionError("the daemon did not exit: " + d.log()[-1500:])
    d.logf.close()
    assert d.proc.returncode == 0, (d.proc.returncode, d.log()[-2000:])
    assert d.state("late") == "running" and crashes(d, "late") == 0, d.log()[-2000:]
    s3.start()
    d.start()
    d.wait_finished("late", 60)
    assert check_stored(d, s3, "late")["billed_attempts"] == 1
    assert env.fake.calls("judged after the cut") == 1
    assert d.stop() == 0


if __name__ == "__main__":
    run_tests([test_every_image_in_the_bucket, test_store_down_delays_publication,
               test_kill_9_during_uploads,
               test_grace_cut_during_upload, test_clean_restarts_are_no_crashes,
               test_left_job_reclaimed_by_another_host, test_a_mark_that_cannot_be_removed_says_why,
               test_cut_before_the_upload_starts])
