#!/usr/bin/env python3
"""Webhooks and the completion hook (issue 13): every event reaches a real receiver that checks
its signature with the standardwebhooks library (not our code), durably across a receiver that
is down and a daemon restart, with its original webhook-id; a 410 disables its endpoint until an
operator enables it again, redirects are failures,
private addresses are refused unless allowed; the hook runs once per terminal state with a clean
environment and is killed at its time limit without stalling jobs."""
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import IMGSPOOL, TEST_KEY, held_at_stop, run_tests, wait_for  # noqa: E402
from peers import S3Server, WebhookReceiver  # noqa: E402


def msg_id(task_id, event):
    return "msg_" + hashlib.sha256(f"{task_id}\n{event}".encode()).hexdigest()[:32]


def notify_daemon(env, rx, **settings):
    base = {"notify__url": rx.url("/ok"), "notify__secret_env": "T_WEBHOOK_SECRET",
            "notify__allow_private": "yes", "notify__retry_base_ms": 300,
            "notify__retry_cap_ms": 1500}
    base.update(settings)
    extra_env = {"T_WEBHOOK_SECRET": rx.secret, **base.pop("extra_env", {})}
    return env.daemon(extra_env=extra_env, **base)


def delivered(rx):
    """Verified events the receiver took (2xx) by task id: [(webhook-id, event), ...]."""
    out = {}
    for q in rx.requests():
        if q["verified"] and 200 <= q["status"] < 300:
            out.setdefault(q["event"]["data"]["task_id"], []).append((q["id"], q["event"]))
    return out


def test_every_event_signed_and_verified(env):
    rx = env.peer(WebhookReceiver()).start()
    d = notify_daemon(env, rx).start()
    ok_ids = [f"ev{i}" for i in range(5)]
    for i, t in enumerate(ok_ids):
        d.submit(t, {"prompt": f"event job {i}", "n": 1 + i % 2})
    d.submit("ev-refused", {"prompt": "refused [fake:400_moderation]"})
    d.submit("ev-invalid", {"prompt": "x", "quailty": "high"})
    # As large as a default daemon takes: its event is the same few fields.
    d.submit("ev-big", {"prompt": "big metadata", "metadata": [1.5e-7] * 100000})
    everything = ok_ids + ["ev-refused", "ev-invalid", "ev-big"]
    wait_for(lambda: set(delivered(rx)) >= set(everything), 30, "every event")
    got = delivered(rx)
    for t in everything:
        assert len(got[t]) == 1, (t, got[t])
        wid, ev = got[t][0]
        r = d.result(t)
        want_type = "job.succeeded" if r["status"] == "succeeded" else "job.failed"
        assert ev["type"] == want_type and wid == msg_id(t, want_type), (wid, ev)
        data = ev["data"]
        assert data["status"] == r["status"] and data["images"] == r["images"], (data, r)
        assert data["error_code"] == (r["error"] or {}).get("code"), (data, r)
        assert data["urls"] == r["urls"] and data["cost"] == r["cost"] and "timestamp" in ev
        assert data["task_id"] == t and list(data) == ["task_id", "status", "error_code", "images",
                                                        "urls", "cost"], data
    assert all(q["verified"] for q in rx.requests()), rx.requests()
    # The verifier can say no: a body signed with another secret is refused.
    forged = urllib.request.Request(rx.url("/ok"), data=b'{"type":"job.succeeded"}', headers={
        "webhook-id": "msg_x", "webhook-timestamp": str(int(time.time())),
        "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="})
    urllib.request.urlopen(forged, timeout=10).read()
    wait_for(lambda: any(not q["verified"] for q in rx.requests()), 10, "the forgery")
    wait_for(lambda: not d.listdir("outbox"), 10, "an empty outbox")
    d.assert_not_logged(rx.secret)
    d.assert_not_logged(rx.secret[6:])
    assert d.stop() == 0


def test_receiver_down_across_a_restart(env):
    """The receiver is down while several retries fail and the daemon restarts; afterwards every
    event arrives once, with its original webhook-id."""
    rx = env.peer(WebhookReceiver())
    d = notify_daemon(env, rx).start()
    ids = [f"down{i}" for i in range(20)]   # more than the 16 deliveries in flight at once
    for i, t in enumerate(ids):
        d.submit(t, {"prompt": f"receiver down {i}"})
    for t in ids:
        d.wait_finished(t, 30)
    wait_for(lambda: all(f"{t} warning: webhook job.succeeded failed" in d.log()
                         and d.log().count(f"{t} warning: webhook") >= 3 for t in ids), 30,
             "three failed attempts per event")
    assert d.stop() == 0
    assert len(d.listdir("outbox")) == len(ids), d.listdir("outbox")
    d.start()
    wait_for(lambda: d.log()[d.log_offset:].count("webhook job.succeeded failed") >= len(ids), 30,
             "retries after the restart")
    rx.start()
    wait_for(lambda: set(delivered(rx)) >= set(ids), 30, "every event after the outage")
    got = delivered(rx)
    for t in ids:
        assert [wid for wid, _ in got[t]] == [msg_id(t, "job.succeeded")], got[t]
    wait_for(lambda: not d.listdir("outbox"), 10, "an empty outbox")
    assert all(env.fake.calls(f"receiver down {i}") == 1 for i in range(len(ids)))
    assert d.stop() == 0


def test_gone_redirect_and_job_urls(env):
    rx = env.peer(WebhookReceiver()).start()
    d = notify_daemon(env, rx, notify__job_url_prefixes=rx.url("/")).start()
    d.submit("gone", {"prompt": "gone", "webhook_url": rx.url("/gone/1")})
    d.submit("moved", {"prompt": "moved", "webhook_url": rx.url("/redirect/1")})
    d.submit("elsewhere", {"prompt": "elsewhere", "webhook_url": "http://127.0.0.1:1/x"})
    for t in ("gone", "moved", "elsewhere"):
        d.wait_finished(t, 30)
    r = d.result("elsewhere")
    assert r["status"] == "failed" and r["error"]["field"] == "webhook_url", r
    assert env.fake.calls("elsewhere") == 0
    wait_for(lambda: "gone webhook job.succeeded waits: its endpoint answered 410 Gone" in d.log(),
             20, "the 410")
    wait_for(lambda: len([q for q in rx.requests() if q["path"].startswith("/redirect")]) >= 3,
             20, "the redirect retried")
    paths = [q["path"] for q in rx.requests()]
    assert paths.count("/gone/1") == 1, paths
    assert not [q for q in rx.requests() if q["path"] == "/ok" and q["verified"]
                and q["event"]["data"]["task_id"] == "moved"], "a redirect was followed"
    # Both wait: the 410'd one until its endpoint is enabled again, the redirected one retried.
    names = d.listdir("outbox")
    assert [n for n in names if n.startswith(msg_id("gone", "job.succeeded"))], names
    assert [n for n in names if n.startswith(msg_id("moved", "job.succeeded"))], names
    d.wait_logged("redirects are not followed")
    assert d.stop() == 0


def endpoint_key(url):
    return hashlib.sha256(url.encode()).hexdigest()[:32]


def read_text(path):
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def test_gone_endpoint_waits_until_enabled(env):
    """A 410 Gone disables its endpoint: none of its pending or later events is sent until an
    operator removes control/gone.KEY, or reloads; then every one arrives, once, verified."""
    rx = env.peer(WebhookReceiver()).start()
    rx.set_gone(True)
    # Credentials in the URL (userinfo, query) reach the endpoint, never a log, a file or stat.
    url = rx.url("/switch?sig=s3cret").replace("http://", "http://hook:t0ken@")
    shown = rx.url("/switch")
    prom = os.path.join(rx.dir, "imgspool.prom")
    d = notify_daemon(env, rx, notify__url=url, metrics__textfile=prom,
                      metrics__interval=1).start()
    marker = d.path("control", "gone." + endpoint_key(url))
    d.submit("g0", {"prompt": "gone 0"})
    wait_for(lambda: os.path.exists(marker), 20, "control/gone.KEY")
    assert read_text(marker) == shown + "\n"
    d.wait_logged(f"error: webhook endpoint '{shown}' answered 410 Gone")
    d.assert_not_logged("s3cret")
    d.assert_not_logged("t0ken")
    later = [f"g{i}" for i in range(1, 5)]
    for i, t in enumerate(later):
        d.submit(t, {"prompt": f"gone {i + 1}"})
    wait_for(lambda: all(f"{t} webhook job.succeeded waits: its endpoint answered 410 Gone"
                         in d.log() for t in later), 20, "the later events parked")
    assert [q["path"] for q in rx.requests()] == ["/switch?sig=s3cret"], rx.requests()
    assert len(d.listdir("outbox")) == 5, d.listdir("outbox")
    wait_for(lambda: "imgspool_webhook_endpoints_gone 1\n" in read_text(prom)
             and "imgspool_webhook_parked 5\n" in read_text(prom), 10, "the metrics")
    # imgspool stat tells the operator, with the way back: the command it prints is run.
    shown_stat = subprocess.run([IMGSPOOL, "-d", d.spool, "stat"], capture_output=True,
                                text=True, timeout=30)
    assert shown_stat.returncode == 0, shown_stat
    assert f"webhooks stopped: {shown} answered 410 Gone" in shown_stat.stdout, shown_stat
    command = shown_stat.stdout.split("to send again: ", 1)[1].split(" (or reload", 1)[0]
    assert command == f"rm '{marker}'", command
    gone = json.loads(subprocess.run([IMGSPOOL, "-d", d.spool, "stat", "-j"], capture_output=True,
                                     text=True, timeout=30).stdout)["webhooks_gone"]
    assert [(g["url"], g["key"], g["file"]) for g in gone] == \
        [(shown, endpoint_key(url), "control/gone." + endpoint_key(url))], gone
    # The operator's way back: the file goes, and so does every event, once.
    rx.set_gone(False)
    assert subprocess.run(["sh", "-c", command], timeout=30).returncode == 0
    assert not os.path.exists(marker)
    everything = ["g0"] + later
    wait_for(lambda: set(delivered(rx)) >= set(everything), 20, "the events once enabled")
    got = delivered(rx)
    for t in everything:
        assert [wid for wid, _ in got[t]] == [msg_id(t, "job.succeeded")], got[t]
    wait_for(lambda: not d.listdir("outbox"), 10, "an empty outbox")
    wait_for(lambda: "imgspool_webhook_endpoints_gone 0\n" in read_text(prom), 10, "gauge at 0")
    shown_stat = subprocess.run([IMGSPOOL, "-d", d.spool, "stat"], capture_output=True,
                                text=True, timeout=30)
    assert shown_stat.returncode == 0, shown_stat
    assert "webhooks stopped" not in shown_stat.stdout, shown_stat.stdout
    # Gone again; a reload enables it too.
    rx.set_gone(True)
    d.submit("g5", {"prompt": "gone 5"})
    wait_for(lambda: os.path.exists(marker), 20, "control/gone.KEY again")
    rx.set_gone(False)
    d.send_signal(signal.SIGHUP)
    wait_for(lambda: "g5" in delivered(rx), 20, "g5 after the reload")
    assert not os.path.exists(marker)
    d.wait_logged("1 webhook endpoint(s) that answered 410 Gone are enabled again")
    assert d.stop() == 0


def test_parked_events_given_up_in_time(env):
    """An event waiting for a gone endpoint is dropped give_up_after seconds after it was
    queued, as any event, and the daemon forgets it; the endpoint's marker goes once it is
    older than give_up_after and no event waits for it."""
    rx = env.peer(WebhookReceiver()).start()
    rx.set_gone(True)
    prom = os.path.join(rx.dir, "imgspool.prom")
    d = notify_daemon(env, rx, notify__url=rx.url("/switch"), notify__give_up_after=3,
                      notify__retry_cap_ms=500, metrics__textfile=prom,
                      metrics__interval=1).start()
    # An old marker whose endpoint an event of another host (due later) still waits for stays.
    kept_url = rx.url("/switch/kept")
    kept = d.path("control", "gone." + endpoint_key(kept_url))
    entry = d.path("outbox", msg_id("other", "job.succeeded") + ".webhook@otherhost.json")
    os.makedirs(d.path("outbox"), exist_ok=True)
    with open(entry, "w") as f:
        json.dump({"target": "webhook", "id": msg_id("other", "job.succeeded"),
                   "task_id": "other", "type": "job.succeeded", "url": kept_url, "body": "{}",
                   "created_at_ms": int(time.time() * 1000), "attempts": 1}, f)
    later = time.time() + 3600
    os.utime(entry, (later, later))
    with open(kept, "w") as f:
        f.write(kept_url + "\n")
    old = time.time() - 3600
    os.utime(kept, (old, old))
    d.submit("gu", {"prompt": "given up"})
    marker = d.path("control", "gone." + endpoint_key(rx.url("/switch")))
    wait_for(lambda: os.path.exists(marker), 20, "control/gone.KEY")
    wait_for(lambda: "gu error: webhook job.succeeded: giving up after 3s: its endpoint answered "
             "410 Gone" in d.log(), 20, "the give-up")
    wait_for(lambda: d.listdir("outbox") == [os.path.basename(entry)], 10, "only the other's")
    wait_for(lambda: "imgspool_webhook_parked 0\n" in read_text(prom), 10, "nothing parked")
    assert [q["path"] for q in rx.requests()] == ["/switch"], rx.requests()
    # Its marker outlived every event for it by give_up_after: it goes, not the one in use.
    wait_for(lambda: not os.path.exists(marker), 20, "the unused marker removed")
    # The log line is written at the end of the loop's turn, after the removal.
    wait_for(lambda: f"removed 'control/{os.path.basename(marker)}'" in d.log(), 10,
             "the removal's log line")
    assert os.path.exists(kept), "a marker an event still waits for was removed"
    assert d.stop() == 0


def test_private_addresses_refused(env):
    rx = env.peer(WebhookReceiver()).start()
    d = notify_daemon(env, rx, notify__allow_private="no").start()
    d.submit("priv", {"prompt": "private"})
    d.wait_finished("priv", 30)
    wait_for(lambda: "refused a non-public address 127.0.0.1" in d.log(), 20, "the refusal")
    assert rx.requests() == [], rx.requests()
    assert d.listdir("outbox"), "the event must wait, not be lost"
    assert d.stop() == 0


HOOK = """#!/bin/sh
out="{dir}/$1.$$"
env > "$out.env"
printf '%s\\n' "$@" > "$out.args"
echo "hook for $1: $2"
case "$1" in hang*) exec sleep 600;; esac
"""


def test_hook_once_clean_env_and_killed(env):
    s3 = env.peer(S3Server()).start()
    rx = env.peer(WebhookReceiver()).start()
    hook_dir = os.path.join(s3.dir, "hook")
    os.makedirs(hook_dir)
    hook = os.path.join(hook_dir, "hook.sh")
    with open(hook, "w") as f:
        f.write(HOOK.format(dir=hook_dir))
    os.chmod(hook, stat.S_IRWXU)
    d = notify_daemon(env, rx, notify__exec=hook, notify__exec_timeout=4, notify__exec_max=2,
                      store__endpoint=s3.endpoint, store__bucket=s3.bucket,
                      store__access_key_id_env="T_S3_ACCESS",
                      store__secret_access_key_env="T_S3_SECRET")
    d.extra_env.update({"T_S3_ACCESS": S3Server.ACCESS_KEY, "T_S3_SECRET": "S3RVER"})
    d.start()
    d.submit("hang1", {"prompt": "a hook that hangs"})
    wait_for(lambda: "hang1 hook started" in d.log(), 20, "the hanging hook")
    others = [f"h{i}" for i in range(4)]
    for i, t in enumerate(others):
        d.submit(t, {"prompt": f"hook job {i}"})
    d.submit("h-failed", {"prompt": "refused [fake:400_moderation]"})
    others.append("h-failed")
    for t in others:
        wait_for(lambda: f"{t} hook exited with status 0" in d.log(), 20, f"{t}'s hook")
    assert "hang1 warning: hook killed" not in d.log(), "a hanging hook stalled the others"
    wait_for(lambda: "hang1 warning: hook killed after 4s" in d.log(), 20, "the kill")
    for t in others + ["hang1"]:
        runs = [n for n in os.listdir(hook_dir) if n.startswith(t + ".") and n.endswith(".args")]
        assert len(runs) == 1, (t, runs)
        with open(os.path.join(hook_dir, runs[0])) as f:
            task, state, path = f.read().split("\n")[:3]
        r = d.result(t)
        assert (task, state) == (t, r["status"]), (task, state)
        assert path == os.path.join(d.spool, "done" if state == "succeeded" else "failed",
                                    t + ".result.json") and os.path.isabs(path), path
        with open(os.path.join(hook_dir, runs[0][:-5] + ".env")) as f:
            environ = f.read()
        for secret in (TEST_KEY, "S3RVER", rx.secret, rx.secret[6:]):
            assert secret not in environ, f"a secret in the hook's environment:\n{environ}"
        assert "IMGSPOOL_TEST_KEY" not in environ and "T_S3_SECRET" not in environ
    d.wait_logged("h0 hook: hook for h0: succeeded")
    # Once per terminal state: a restart runs nothing again.
    assert d.stop() == 0
    assert not d.listdir("outbox")
    d.start()
    d.assert_not_logged("hook started", since=d.log_offset)
    assert d.stop() == 0


def soft_open_files(pid):
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                return int(line.split()[3])
    raise AssertionError(f"no open files limit for {pid}")


def test_hook_gets_the_open_files_limit_the_daemon_started_with(env):
    # The daemon raises its soft limit of open files to the hard one for its calls in flight;
    # its hook gets the limit the daemon was started with (prlimit: a soft limit of 256).
    hook_dir = tempfile.mkdtemp(prefix="imgspool-test-hook-")
    try:
        hook = os.path.join(hook_dir, "hook.sh")
        with open(hook, "w") as f:
            f.write(f"#!/bin/sh\nulimit -Sn > {hook_dir}/$1.nofile\n")
        os.chmod(hook, stat.S_IRWXU)
        d = env.daemon(notify__exec=hook, wrapper=["prlimit", "--nofile=256:", "--"]).start()
        raised = soft_open_files(d.proc.pid)
        assert raised > 256, f"the daemon kept a soft limit of {raised}: nothing to restore"
        d.submit("nofile", {"prompt": "a hook's limits"})
        wait_for(lambda: "nofile hook exited with status 0" in d.log(), 20, "the hook")
        with open(os.path.join(hook_dir, "nofile.nofile")) as f:
            got = f.read().strip()
        assert got == "256", f"the hook's soft limit of open files is {got}, the daemon's {raised}"
        assert d.stop() == 0
    finally:
        shutil.rmtree(hook_dir)


def test_no_event_for_a_publication_that_failed(env):
    # A succeeded job whose result cannot go into done/ (a planted directory) ends in failed/:
    # the job.succeeded entry written before its publication is taken back, so the receiver
    # hears job.failed only (it used to get both).
    rx = env.peer(WebhookReceiver()).start()
    d = notify_daemon(env, rx).start()
    os.makedirs(d.path("done", "np.result.json", "inside"))
    d.submit("np", {"prompt": "paid, nowhere to go"})
    assert d.wait_finished("np") == "failed"
    wait_for(lambda: "np" in delivered(rx) and not d.listdir("outbox"), 30, "the outbox drained")
    got = delivered(rx)["np"]
    assert [ev["type"] for _, ev in got] == ["job.failed"], got
    assert d.result("np")["error"]["code"] == "publish_failed"


def test_one_event_for_a_job_finished_by_a_restart(env):
    """Killed while publishing (its job.succeeded entry already written), a job is finished by
    the restart from its saved response: the receiver hears job.succeeded once, with its
    webhook-id. Killed so past max_crash_requeues, it fails crashed: the receiver hears
    job.failed only, not also the job.succeeded that the cut publication had queued."""
    rx = env.peer(WebhookReceiver()).start()
    d = notify_daemon(env, rx, retry__max_crash_requeues=1)
    d.submit("rs1", {"prompt": "finished by the restart"})
    d.start_to_crash("publish:images")
    assert any(n.startswith(msg_id("rs1", "job.succeeded")) for n in d.listdir("outbox"))
    d.start()
    assert d.wait_finished("rs1") == "done"
    wait_for(lambda: "rs1" in delivered(rx) and not d.listdir("outbox"), 30, "the outbox drained")
    assert [wid for wid, _ in delivered(rx)["rs1"]] == [msg_id("rs1", "job.succeeded")]
    assert d.stop() == 0
    d.submit("rs2", {"prompt": "publishing it kills the daemon"})
    d.start_to_crash("publish:images")
    d.start_to_crash("publish:images")
    d.start()
    assert d.wait_finished("rs2") == "failed"
    assert d.result("rs2")["error"]["code"] == "crashed"
    wait_for(lambda: "rs2" in delivered(rx) and not d.listdir("outbox"), 30, "the outbox drained")
    got = delivered(rx)["rs2"]
    assert [ev["type"] for _, ev in got] == ["job.failed"], got
    assert env.fake.calls("finished by the restart") == 1
    assert env.fake.calls("publishing it kills the daemon") == 1
    assert d.stop() == 0


def dead_while_publishing(env, rx, task_id, prompt, point="publish:images", **settings):
    """Host "hostA" dies while publishing task_id (its job.succeeded entry already in outbox/),
    at point, its files in running/ older than any lease, as a dead host leaves them. Returns
    it."""
    a = notify_daemon(env, rx, spool__host_id="hostA", **settings)
    a.submit(task_id, {"prompt": prompt})
    a.start_to_crash(point)
    entry = [n for n in a.listdir("outbox") if n.startswith(msg_id(task_id, "job.succeeded"))]
    assert entry == [f"{msg_id(task_id, 'job.succeeded')}.webhook@hostA.json"], a.listdir("outbox")
    old = time.time() - 3600
    for n in os.listdir(a.path("running")):
        os.utime(a.path("running", n), (old, old), follow_symlinks=False)
    return a


def test_one_event_for_a_job_another_host_ends_another_way(env):
    """Host A dies while publishing (its job.succeeded queued); host B reclaims the job and,
    past max_crash_requeues, fails it crashed. B takes A's entry along with the job and takes it
    back: the receiver hears job.failed only. Before, A's entry stayed A's, to be taken over
    once its lease ran out (and sent), or sent by A itself when it came back."""
    rx = env.peer(WebhookReceiver()).start()
    prompt = "its publication kills host A"
    a = dead_while_publishing(env, rx, "xh", prompt)
    b = notify_daemon(env, rx, spool_dir=a.spool, spool__host_id="hostB",
                      spool__lease_timeout=5, retry__max_crash_requeues=0).start()
    assert b.wait_finished("xh") == "failed", b.log()[-2000:]
    assert b.result("xh")["error"]["code"] == "crashed"
    # Held until the publication is out, then gone: not sent.
    wait_for(lambda: not [n for n in b.listdir("outbox") if n.startswith(msg_id("xh", "job.succeeded"))],
             20, "A's job.succeeded taken back")
    b.wait_logged("xh took along 1 end event(s) 'hostA' had queued")
    wait_for(lambda: "xh" in delivered(rx) and not b.listdir("outbox"), 30, "the outbox drained")
    a.start()   # back: nothing of its own is left to send
    b.stop()
    assert a.stop() == 0
    got = delivered(rx)["xh"]
    assert [ev["type"] for _, ev in got] == ["job.failed"], got
    assert env.fake.calls(prompt) == 1


def test_one_event_for_a_job_another_host_ends_another_way_after_its_restart(env):
    """As above, with host A's clock 2 h behind the file server's (its entry's created_at_ms),
    and host B killed after it reclaimed the job and counted the death, then started again: the
    restarted B fails the job crashed, and the receiver hears job.failed only. Before, what B had
    taken along was known to its memory only: the restarted B took back only entries written
    since the saved response (by the file server's clock), and A's job.succeeded went out too."""
    rx = env.peer(WebhookReceiver()).start()
    prompt = "its publication kills host A, whose clock is behind"
    a = dead_while_publishing(env, rx, "xr", prompt)
    name = f"{msg_id('xr', 'job.succeeded')}.webhook@hostA.json"
    st = os.stat(a.path("outbox", name))
    with open(a.path("outbox", name)) as f:
        entry = json.load(f)
    entry["created_at_ms"] -= 2 * 3600 * 1000
    with open(a.path("outbox", name), "w") as f:
        json.dump(entry, f)
    os.utime(a.path("outbox", name), ns=(st.st_atime_ns, st.st_mtime_ns))
    b = notify_daemon(env, rx, spool_dir=a.spool, spool__host_id="hostB",
                      spool__lease_timeout=5, retry__max_crash_requeues=1)
    b.start_to_crash("adopt:counted")
    assert any(n.startswith("xr@hostB") for n in b.listdir("running")), b.listdir("running")
    b.start()
    assert b.wait_finished("xr") == "failed", b.log()[-2000:]
    assert b.result("xr")["error"]["code"] == "crashed"
    wait_for(lambda: "xr" in delivered(rx) and not b.listdir("outbox"), 30, "the outbox drained")
    assert b.stop() == 0
    got = delivered(rx)["xr"]
    assert [ev["type"] for _, ev in got] == ["job.failed"], got
    assert env.fake.calls(prompt) == 1


def test_one_event_for_a_job_whose_reclaimer_died_before_taking_its_entry_along(env):
    """Host A dies while publishing (its job.succeeded queued, its entry a lease old), its saved
    answer lost with it (here removed: the end is not A's); host B reclaims the job and dies
    right after renaming it, before it takes A's entry along. Host C reclaims the job from B
    and, told by B's mark (.rr@hostC.reclaim.hostA once taken along), takes A's files and entry
    along too; its call is refused, it fails the job, and takes A's job.succeeded back: the
    receiver hears job.failed, once. Before, A's entry stayed A's, an entry to send, while the
    job was no longer running/ID@hostA.json: host C took it over and sent it: the receiver
    heard both ends. It now waits while its job is in running/ on any host, and the job's next
    reclaimer takes it along."""
    rx = env.peer(WebhookReceiver()).start()
    prompt = "host A dies publishing it, host B reclaiming it"
    env.fake.script(prompt, [{"kind": "b64"}, {"kind": "400_content_policy"}])
    a = dead_while_publishing(env, rx, "rr", prompt)
    for n in os.listdir(a.path("running")):   # its answer is lost: C calls again
        if n.startswith(".rr@hostA.response."):
            os.unlink(a.path("running", n))
    entry = f"{msg_id('rr', 'job.succeeded')}.webhook@hostA.json"
    old = time.time() - 3600
    os.utime(a.path("outbox", entry), (old, old))
    b = notify_daemon(env, rx, spool_dir=a.spool, spool__host_id="hostB", spool__lease_timeout=5)
    b.start_to_crash("reclaim:renamed")
    assert "rr@hostB.json" in b.listdir("running") and entry in b.listdir("outbox"), \
        (b.listdir("running"), b.listdir("outbox"))
    c = notify_daemon(env, rx, spool_dir=a.spool, spool__host_id="hostC",
                      spool__lease_timeout=5).start()
    assert c.wait_finished("rr", 30) == "failed", c.log()[-2000:]
    assert env.fake.calls(prompt) == 2
    wait_for(lambda: "rr" in delivered(rx) and not c.listdir("outbox"), 30,
             f"the outbox drained (outbox/: {c.listdir('outbox')})")
    assert c.stop() == 0
    assert [(wid, ev["type"]) for wid, ev in delivered(rx)["rr"]] == \
        [(msg_id("rr", "job.failed"), "job.failed")], delivered(rx)["rr"]
    assert "took over 'outbox/" not in c.log(), c.log()[-2000:]


def delivered_to(rx, path, task_id):
    """The verified events of task_id that the receiver took at path: [(webhook-id, type)]."""
    return [(q["id"], q["event"]["type"]) for q in rx.requests()
            if q["path"] == path and q["verified"] and 200 <= q["status"] < 300
            and q["event"]["data"]["task_id"] == task_id]


def test_a_reclaimer_with_other_notify_targets_announces_the_end_to_the_dead_hosts(env):
    """Host A ([notify] url /hostA) is killed while publishing, its job.succeeded queued; host
    B, whose [notify] url is /hostB, reclaims the job, takes A's entry along and ends it: the
    end reaches /hostA too, once, with its webhook-id, and /hostB once. So when B fails the job
    instead: /hostA hears job.failed, and never the job.succeeded that did not happen. Before,
    B announced the end to its own url only: /hostA never heard the job ended."""
    rx = env.peer(WebhookReceiver()).start()
    for tid, crashed in (("ou", False), ("of", True)):
        prompt = f"host A dies publishing it, host B ends it ({tid})"
        a = dead_while_publishing(env, rx, tid, prompt, notify__url=rx.url("/hostA"))
        b = notify_daemon(env, rx, spool_dir=a.spool, spool__host_id="hostB",
                          spool__lease_timeout=5, notify__url=rx.url("/hostB"),
                          retry__max_crash_requeues=0 if crashed else 3).start()
        end = "job.failed" if crashed else "job.succeeded"
        assert b.wait_finished(tid) == ("failed" if crashed else "done"), b.log()[-2000:]
        wait_for(lambda: delivered_to(rx, "/hostA", tid) and delivered_to(rx, "/hostB", tid)
                 and not os.listdir(b.path("outbox")), 30,
                 f"the outbox drained (outbox/: {os.listdir(b.path('outbox'))})")
        assert b.stop() == 0
        for path in ("/hostA", "/hostB"):
            assert delivered_to(rx, path, tid) == [(msg_id(tid, end), end)], \
                (path, rx.requests())
        assert env.fake.calls(prompt) == 1


def test_a_held_event_left_by_a_kill_after_the_publication_goes_at_the_restart(env):
    """Host A ([notify] url /hostA) is killed while publishing, its job.succeeded queued; host
    B (/hostB) reclaims the job, holds A's entry, publishes the job with entries for both URLs
    and is killed right after (publish:moved), before it removed the held entry. Restarted, B
    removes it (the job is in done/ and in no running/), and each URL hears the end once.
    Without that, the held entry stayed in outbox/ for ever, which nothing sends or removes."""
    rx = env.peer(WebhookReceiver()).start()
    prompt = "host A dies publishing it, host B dies after its publication"
    a = dead_while_publishing(env, rx, "ok", prompt, notify__url=rx.url("/hostA"))
    b = notify_daemon(env, rx, spool_dir=a.spool, spool__host_id="hostB",
                      spool__lease_timeout=5, notify__url=rx.url("/hostB"))
    b.start_to_crash("publish:moved")
    held = f"{msg_id('ok', 'job.succeeded')}.webhook@hostB.held"
    assert b.state("ok") == "done" and held in b.listdir("outbox"), b.listdir("outbox")
    b.start()
    wait_for(lambda: delivered_to(rx, "/hostA", "ok") and delivered_to(rx, "/hostB", "ok")
             and not os.listdir(b.path("outbox")), 30, "the outbox drained")
    b.wait_logged(f"ok removed 'outbox/{held}', an end event held for it here")
    assert b.stop() == 0
    for path in ("/hostA", "/hostB"):
        assert delivered_to(rx, path, "ok") == [(msg_id("ok", "job.succeeded"), "job.succeeded")], \
            (path, rx.requests())
    assert env.fake.calls(prompt) == 1


def test_a_reclaimer_without_notify_leaves_the_dead_hosts_end_event_to_a_host_that_can_send_it(env):
    """Host A ([notify] url /hostA) is killed while publishing, its job.succeeded queued; host
    B, with no [notify] section (no url, no secret), reclaims the job and finishes it: A's
    event becomes B's entry to send, with the end B reached, which B cannot sign; it waits in
    outbox/ and B takes nothing over. A, back, takes it over once it is a lease old and sends
    it: /hostA hears job.succeeded, once. Before, B left A's entry held (.held) for ever: the
    event was lost."""
    rx = env.peer(WebhookReceiver()).start()
    prompt = "host A dies publishing it, host B has no [notify]"
    a = dead_while_publishing(env, rx, "on", prompt, notify__url=rx.url("/hostA"),
                              spool__lease_timeout=5)
    b = env.daemon(spool_dir=a.spool, spool__host_id="hostB", spool__lease_timeout=5).start()
    assert b.wait_finished("on") == "done", b.log()[-2000:]
    # Named for its URL, which is not one of B's own (it has none).
    entry = f"{msg_id('on', 'job.succeeded')}.webhook.{endpoint_key(rx.url('/hostA'))}@hostB.json"
    wait_for(lambda: os.listdir(b.path("outbox")) == [entry], 20, "B's entry to send, alone")
    with open(b.path("outbox", entry)) as f:
        doc = json.load(f)
    assert doc["url"] == rx.url("/hostA"), doc
    assert json.loads(doc["body"])["data"]["status"] == "succeeded", doc
    a.start()
    wait_for(lambda: delivered_to(rx, "/hostA", "on") and not os.listdir(a.path("outbox")), 30,
             f"A to take it over and send it (outbox/: {os.listdir(a.path('outbox'))})")
    assert a.stop() == 0 and b.stop() == 0
    assert delivered_to(rx, "/hostA", "on") == [(msg_id("on", "job.succeeded"), "job.succeeded")]
    assert "took over 'outbox/" not in b.log(), b.log()[-2000:]
    assert env.fake.calls(prompt) == 1


def reclaimer_stalled_after_its_rename(env, rx, task_id, prompt):
    """Host A dies while publishing task_id; host B reclaims the job and is held right after
    its rename of it (reclaim:renamed). Returns A, B and the FIFO's end that lets B go on."""
    a = dead_while_publishing(env, rx, task_id, prompt)
    b = notify_daemon(env, rx, spool_dir=a.spool, spool__host_id="hostB", spool__lease_timeout=5)
    fifo = b.start_held_at("reclaim:renamed", wait_ready=False)
    held = held_at_stop(fifo, b)
    assert f"{task_id}@hostB.json" in b.listdir("running"), b.listdir("running")
    return a, b, held


def test_a_restarted_host_sends_no_event_of_its_own_while_its_job_is_on_a_stalled_reclaimer(env):
    """Host A dies while publishing (its job.succeeded queued); host B reclaims the job and
    stalls right after renaming it, before it takes A's entry along. A comes back: it sent its
    entry at its first rescan, the job being no longer running/ID@hostA.json, though the job's
    end was not known (here it then reclaimed the job from the stalled B and ran it again).
    It now leaves its entry while the job is in running/ on any host, takes it along (held)
    when it reclaims the job, and the receiver hears only the end the job reaches, once."""
    rx = env.peer(WebhookReceiver()).start()
    a, b, held = reclaimer_stalled_after_its_rename(env, rx, "rs", "its publication kills host A, B stalls")
    again = notify_daemon(env, rx, spool_dir=a.spool, spool__host_id="hostA",
                          spool__lease_timeout=5)
    again.start()
    end = again.wait_finished("rs", 30)
    wait_for(lambda: "rs" in delivered(rx) and not again.listdir("outbox"), 30,
             f"the outbox drained (outbox/: {again.listdir('outbox')})")
    again.wait_logged("rs webhook job.")   # the log is written by a thread of its own
    log = again.log()
    assert log.index("rs warning: reclaimed from 'hostB'") < log.index("rs webhook job."), log
    assert log.index(f"rs {end}:") < log.index("rs webhook job."), log
    os.close(held)   # B goes on: the job and the entries are gone from under it
    assert again.stop() == 0 and b.stop() == 0
    got = delivered(rx)["rs"]
    assert [ev["type"] for _, ev in got] == ["job.succeeded" if end == "done" else "job.failed"], got


def test_a_stalled_reclaimer_takes_nothing_along_from_a_host_that_reclaimed_and_ended_the_job(env):
    """Host A dies while publishing; host B reclaims the job and stalls right after renaming
    it. Host C reclaims it from B, ends it and queues its job.succeeded, whose endpoint answers
    410 (the event waits). B goes on: the job is no longer its own, and it takes nothing along.
    Before, B took C's entry along as its own held entry (C's running/ID@hostC.json being gone),
    and nobody ever sent it. The endpoint enabled again, it hears the end, once; so does A's
    (/ok), to which C announced it as A's entry it took along asked."""
    rx = env.peer(WebhookReceiver()).start()
    a, b, held = reclaimer_stalled_after_its_rename(env, rx, "sr", "its publication kills host A, B stalls, C ends it")
    rx.set_gone(True)
    url = rx.url("/switch")
    c = notify_daemon(env, rx, spool_dir=a.spool, spool__host_id="hostC", spool__lease_timeout=5,
                      notify__url=url).start()
    assert c.wait_finished("sr", 30) == "done", c.log()[-2000:]
    marker = c.path("control", "gone." + endpoint_key(url))
    wait_for(lambda: os.path.exists(marker), 20, "control/gone.KEY")
    entry = f"{msg_id('sr', 'job.succeeded')}.webhook@hostC.json"
    assert entry in c.listdir("outbox"), c.listdir("outbox")
    os.close(held)   # B goes on
    taken = f"{msg_id('sr', 'job.succeeded')}.webhook@hostB.held"
    wait_for(lambda: "sr warning: reclaimed from 'hostA' but no longer ours" in b.log()
             or taken in b.listdir("outbox"), 20, "B to go on")
    assert entry in b.listdir("outbox") and not [n for n in b.listdir("outbox") if "@hostB" in n], \
        b.listdir("outbox")
    rx.set_gone(False)
    os.unlink(marker)
    wait_for(lambda: "sr" in delivered(rx) and not c.listdir("outbox"), 30,
             f"the outbox drained (outbox/: {c.listdir('outbox')})")
    assert b.stop() == 0 and c.stop() == 0
    for path in ("/switch", "/ok"):
        assert delivered_to(rx, path, "sr") == [(msg_id("sr", "job.succeeded"), "job.succeeded")], \
            (path, delivered(rx))


def test_an_event_taken_along_goes_out_when_its_staged_publication_is_completed(env):
    """Host A dies before the commit of its publication, staged whole (its records say
    finished, its job.succeeded is queued): host B reclaims the job, takes the entry along,
    held, completes the publication and sends the event, once; nothing stays in outbox/."""
    rx = env.peer(WebhookReceiver()).start()
    prompt = "host A dies before its commit"
    a = dead_while_publishing(env, rx, "sc", prompt, "publish:rewritten")
    b = notify_daemon(env, rx, spool_dir=a.spool, spool__host_id="hostB",
                      spool__lease_timeout=5).start()
    assert b.wait_finished("sc") == "done", b.log()[-2000:]
    b.wait_logged("sc took along 1 end event(s) 'hostA' had queued")
    wait_for(lambda: "sc" in delivered(rx) and not b.listdir("outbox"), 30, "the outbox drained")
    assert b.stop() == 0
    assert [ev["type"] for _, ev in delivered(rx)["sc"]] == ["job.succeeded"], delivered(rx)["sc"]
    assert env.fake.calls(prompt) == 1


def test_an_event_taken_along_on_a_file_system_without_hard_links_is_moved_not_lost(env):
    """As above, on a file system with neither RENAME_NOREPLACE nor hard links (renameat2
    says EINVAL and link(2) EPERM for the held entry): host B moves A's entry to its held name,
    then to one to send, and the receiver hears job.succeeded once. Before, EPERM counted as
    "the same event is already there": B removed A's entry and the event was lost."""
    rx = env.peer(WebhookReceiver()).start()
    prompt = "host A dies before its commit, B's spool has no hard links"
    a = dead_while_publishing(env, rx, "nl", prompt, "publish:rewritten")
    held = f"{msg_id('nl', 'job.succeeded')}.webhook@hostB.held"
    trace = os.path.join(a.dir, "nl.strace")
    b = notify_daemon(env, rx, spool_dir=a.spool, spool__host_id="hostB", spool__lease_timeout=5,
                      wrapper=["strace", "-f", "-qq", "-o", trace, "-P", held,
                               "-e", "trace=renameat2,linkat", "-e", "inject=renameat2:error=EINVAL",
                               "-e", "inject=linkat:error=EPERM"],
                      extra_env={"ASAN_OPTIONS": "detect_leaks=0"}).start()
    assert b.wait_finished("nl") == "done", b.log()[-2000:]
    wait_for(lambda: "nl" in delivered(rx) and not b.listdir("outbox"), 30,
             f"the outbox drained (outbox/: {b.listdir('outbox')})")
    assert b.stop() == 0
    with open(trace) as f:
        injected = f.read()
    assert "EPERM (Operation not permitted) (INJECTED)" in injected, injected
    assert [ev["type"] for _, ev in delivered(rx)["nl"]] == ["job.succeeded"], delivered(rx)
    assert env.fake.calls(prompt) == 1


def test_an_event_taken_along_is_not_left_held_when_outbox_cannot_be_listed_at_adoption(env):
    """Host A dies while publishing (its job.succeeded queued); host B reclaims the job, takes
    the entry along (held) and is killed; restarted, its first listing of outbox/ (at the job's
    adoption) fails with EIO. B looks at the job's held names instead: it holds the entry, and
    drops it as the job ends, its own publication queuing the event. Before, B did not know it
    held it: the held entry stayed in outbox/ for ever (and a publication A had staged whole
    would have been completed without its event)."""
    rx = env.peer(WebhookReceiver()).start()
    prompt = "host A dies publishing it, B cannot list outbox/ at its restart"
    a = dead_while_publishing(env, rx, "ul", prompt)
    b = notify_daemon(env, rx, spool_dir=a.spool, spool__host_id="hostB", spool__lease_timeout=5)
    b.start_to_crash("adopt:counted")
    held = f"{msg_id('ul', 'job.succeeded')}.webhook@hostB.held"
    assert held in b.listdir("outbox"), b.listdir("outbox")
    trace = os.path.join(a.dir, "ul.strace")
    # Its third getdents64 of outbox/: the first two list its temporary files at start-up.
    b.wrapper = ["strace", "-f", "-qq", "-o", trace, "-P", os.path.realpath(b.path("outbox")),
                 "-e", "trace=getdents64", "-e", "inject=getdents64:error=EIO:when=3"]
    b.extra_env = {**b.extra_env, "ASAN_OPTIONS": "detect_leaks=0"}
    b.start()
    assert b.wait_finished("ul") == "done", b.log()[-2000:]
    wait_for(lambda: "ul" in delivered(rx) and not b.listdir("outbox"), 30,
             f"the outbox drained (outbox/: {b.listdir('outbox')})")
    assert b.stop() == 0
    b.wait_logged("/outbox': Input/output error")
    assert [ev["type"] for _, ev in delivered(rx)["ul"]] == ["job.succeeded"], delivered(rx)
    assert env.fake.calls(prompt) == 1


def test_an_end_event_that_cannot_be_taken_along_keeps_its_job_waiting(env):
    """Host A dies while publishing "ee" (its job.succeeded queued); host B reclaims the job,
    and every rename of A's entry fails (EIO). Before, the failure was ignored: B's reclaim
    mark went and B ended the job (crashed, past max_crash_requeues) with A's job.succeeded
    still A's, to be taken over and sent once A's lease ran out. Now it is said, the mark
    stays and the job waits in running/, not ended; B's restart takes the entry along, and the
    receiver hears job.failed only."""
    rx = env.peer(WebhookReceiver()).start()
    prompt = "host A dies publishing it, B cannot take its event along"
    a = dead_while_publishing(env, rx, "ee", prompt)
    entry = f"{msg_id('ee', 'job.succeeded')}.webhook@hostA.json"
    trace = os.path.join(a.dir, "ee.strace")
    b = notify_daemon(env, rx, spool_dir=a.spool, spool__host_id="hostB", spool__lease_timeout=5,
                      retry__max_crash_requeues=0,
                      wrapper=["strace", "-f", "-qq", "-o", trace, "-P", entry,
                               "-e", "trace=renameat,renameat2",
                               "-e", "inject=renameat,renameat2:error=EIO"],
                      extra_env={"ASAN_OPTIONS": "detect_leaks=0"}).start()
    wait_for(lambda: read_text(trace).count("(INJECTED)") >= 4, 30,
             "renames of A's entry failing at two rescans")
    running = os.listdir(b.path("running"))
    assert "ee@hostB.json" in running and ".ee@hostB.reclaim.hostA" in running, running
    assert b.logged("ee error: cannot take 'outbox/" + entry + "' along: Input/output error")
    assert not os.path.exists(b.path("failed", "ee.result.json")), b.log()[-2000:]
    assert "ee" not in delivered(rx)
    assert b.stop() == 0
    b.wrapper = []
    b.extra_env = {k: v for k, v in b.extra_env.items() if k != "ASAN_OPTIONS"}
    b.start()
    assert b.wait_finished("ee") == "failed", b.log()[-2000:]
    assert b.result("ee")["error"]["code"] == "crashed"
    wait_for(lambda: "ee" in delivered(rx) and not b.listdir("outbox"), 30,
             f"the outbox drained (outbox/: {b.listdir('outbox')})")
    assert b.stop() == 0
    assert [ev["type"] for _, ev in delivered(rx)["ee"]] == ["job.failed"], delivered(rx)
    assert env.fake.calls(prompt) == 1


def test_held_entries_are_not_in_the_outbox_backlog(env):
    """imgspool_outbox_backlog counts the events to be delivered, of every host: not an end
    event a reclaimer holds (MSGID.TARGET@HOST.held), which is not one to send. Before, every
    file in outbox/ counted. The metrics pass promtool's check."""
    rx = env.peer(WebhookReceiver()).start()
    prom = os.path.join(rx.dir, "imgspool.prom")
    d = notify_daemon(env, rx, metrics__textfile=prom, metrics__interval=1)
    os.makedirs(d.path("outbox"), exist_ok=True)
    later = time.time() + 3600
    for name in (f"{msg_id('hb', 'job.succeeded')}.webhook@otherhost.held",
                 f"{msg_id('hc', 'job.failed')}.webhook@otherhost.json"):
        with open(d.path("outbox", name), "w") as f:
            json.dump({"target": "webhook", "task_id": name[4:6], "url": rx.url("/ok"),
                       "body": "{}", "created_at_ms": int(time.time() * 1000), "attempts": 1}, f)
        os.utime(d.path("outbox", name), (later, later))
    d.start()
    backlog = re.compile(r"^imgspool_outbox_backlog [1-9]", re.M)   # after a listing
    wait_for(lambda: os.path.exists(prom) and backlog.search(read_text(prom)), 20,
             "the metrics written after a listing of outbox/")
    text = read_text(prom)
    assert "\nimgspool_outbox_backlog 1\n" in text, text
    check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                           text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert d.stop() == 0


def test_an_event_taken_along_is_not_sent_while_its_job_waits(env):
    """A job reclaimed with an end event its dead host had queued, that does not end on the
    reclaimer but goes back to wait (to new/, then deferred/ after a failed call): the event
    taken along is not sent while the job waits, and its real end brings its own. Here host A's
    entry is an earlier run's (a reused id): its new run's call was cut before an answer was
    saved. Before, the entry counted as busy only while host B held the job, and went out as
    soon as the job went back: the receiver heard job.succeeded of a job that was waiting."""
    rx = env.peer(WebhookReceiver()).start()
    prompt = "taken along, then deferred [fake:b64|503|b64]"
    a = dead_while_publishing(env, rx, "dq", prompt)
    for n in os.listdir(a.path("running")):   # the new run's call: cut, nothing saved
        if n.startswith(".dq@hostA.response."):
            os.unlink(a.path("running", n))
    b = notify_daemon(env, rx, spool_dir=a.spool, spool__host_id="hostB",
                      spool__lease_timeout=5, notify__deferrals="yes",
                      retry__backoff_base_ms=10000, retry__backoff_cap_ms=20000)
    b.start()
    wait_for(lambda: [ev["type"] for _, ev in delivered(rx).get("dq", [])] == ["job.deferred"]
             and not b.listdir("outbox") or "job.succeeded" in str(delivered(rx).get("dq")),
             30, f"the deferral to be heard:\n{b.log()[-2000:]}")
    assert b.state("dq") == "deferred", b.state("dq")
    assert [ev["type"] for _, ev in delivered(rx)["dq"]] == ["job.deferred"], delivered(rx)["dq"]
    assert b.wait_finished("dq", 60) == "done"
    wait_for(lambda: len(delivered(rx)["dq"]) >= 2 and not b.listdir("outbox"), 30,
             "the outbox drained")
    assert b.stop() == 0
    got = [ev["type"] for _, ev in delivered(rx)["dq"]]
    assert got == ["job.deferred", "job.succeeded"], got


def test_an_event_taken_along_with_a_file_sent_back_to_new_is_not_left_held(env):
    """Host A ran a job whose job.succeeded the receiver (down) has not taken yet; the job is
    put back, and A's claim of it takes a second retry that replaced it in new/, and A dies
    there, before its check of the file claimed. Host B reclaims the job, taking A's entry
    along (held), and sends the file back to new/ (not the one A read): it runs there as a new
    job. The held entry stayed in outbox/ for ever, as nothing sends, takes over or removes
    the held entry of a job that left its holder's running/ that way. It now goes with the
    move back, and the receiver hears the end of the run that happened."""
    from test_publish import put_back
    rx = env.peer(WebhookReceiver())   # down until host B runs
    prompt, other = "its event waits, then it is put back", "the retry that replaced it"
    a = notify_daemon(env, rx, spool__host_id="hostA").start()
    a.submit("hb", {"prompt": prompt})
    assert a.wait_finished("hb") == "done"
    wait_for(lambda: "hb warning: webhook job.succeeded failed" in a.log(), 30, "a failed attempt")
    assert a.stop() == 0
    entry = f"{msg_id('hb', 'job.succeeded')}.webhook@hostA.json"
    assert a.listdir("outbox") == [entry], a.listdir("outbox")
    put_back(a, "hb")
    replacement = dict(json.loads(a.read("new", "hb.json")), prompt=other)
    a.start(wait_ready=False, extra_env={"IMGSPOOLD_STOP_AT": "claim:read",
                                         "IMGSPOOLD_CRASH_AT": "claim:claimed"})
    wait_for(a.stopped, 20, "host A to stop between its read and its claim")
    with open(a.path("tmp", "hb.json"), "w") as f:
        json.dump(replacement, f)
    os.rename(a.path("tmp", "hb.json"), a.path("new", "hb.json"))
    a.proc.send_signal(signal.SIGCONT)
    wait_for(a.exited, 20, "host A to kill itself after its claim")
    assert a.proc.returncode == -9, a.log()[-2000:]
    old = time.time() - 3600
    for n in os.listdir(a.path("running")):
        os.utime(a.path("running", n), (old, old), follow_symlinks=False)
    rx.start()
    b = notify_daemon(env, rx, spool_dir=a.spool, spool__host_id="hostB",
                      spool__lease_timeout=5).start()
    assert b.wait_finished("hb", 30) == "done", b.log()[-2000:]
    assert "hb took along 1 end event(s) 'hostA' had queued" in b.log(), b.log()[-2000:]
    wait_for(lambda: "hb" in delivered(rx) and not b.listdir("outbox"), 30,
             f"the outbox drained (outbox/: {b.listdir('outbox')})")
    assert b.stop() == 0
    assert json.loads(b.read("done", "hb.json"))["prompt"] == other
    assert [ev["type"] for _, ev in delivered(rx)["hb"]] == ["job.succeeded"], delivered(rx)["hb"]
    assert env.fake.calls(prompt) == 1 and env.fake.calls(other) == 1


def test_an_entry_is_not_taken_over_while_its_job_is_its_hosts(env):
    """A dead host's entry outlived its lease, but its job, in running/, has not been reclaimed
    yet (here: the only other daemon is draining, and reclaims nothing): nobody takes the entry
    over, since the job may still end another way. Before, it was taken over and sent, and the
    job's reclaimer then failed it: the receiver heard both ends."""
    rx = env.peer(WebhookReceiver()).start()
    a = dead_while_publishing(env, rx, "nt", "its publication kills host A too")
    fresh = time.time()
    for n in os.listdir(a.path("running")):   # not stale yet: host C starts
        os.utime(a.path("running", n), (fresh, fresh), follow_symlinks=False)
    slow = "a slow call that keeps host C draining [fake:b64 delay=4]"
    c = notify_daemon(env, rx, spool_dir=a.spool, spool__host_id="hostC", spool__lease_timeout=30,
                      verbose=True, spool__grace_period=30)
    c.submit("slow", {"prompt": slow})
    c.start()
    wait_for(lambda: env.fake.calls(slow) == 1, 20, "the slow call")
    c.send_signal(signal.SIGTERM)
    wait_for(lambda: "shutting down" in c.log(), 10, "host C to drain")
    old = time.time() - 3600   # now host A's job and its entry are both long stale
    for n in os.listdir(a.path("running")):
        os.utime(a.path("running", n), (old, old), follow_symlinks=False)
    for n in a.listdir("outbox"):
        os.utime(a.path("outbox", n), (old, old))
    c.wait_rescans(3)
    c.assert_not_logged("took over")
    assert "nt" not in delivered(rx), c.log()[-2000:]
    assert c.wait_finished("slow") == "done"
    assert c.stop() == 0
    b = notify_daemon(env, rx, spool_dir=a.spool, spool__host_id="hostB",
                      spool__lease_timeout=5, retry__max_crash_requeues=0).start()
    assert b.wait_finished("nt") == "failed", b.log()[-2000:]
    wait_for(lambda: "nt" in delivered(rx) and not b.listdir("outbox"), 30, "the outbox drained")
    assert b.stop() == 0
    assert [ev["type"] for _, ev in delivered(rx)["nt"]] == ["job.failed"], delivered(rx)["nt"]


def test_an_entry_taken_back_while_it_is_sent_is_not_written_again(env):
    """An entry whose delivery failed is written again with its next attempt, but only over
    itself: one another daemon took back (its job ended another way) or over while the POST was
    in flight stays gone. Before, the failed delivery wrote it back, and it was sent again."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)   # never answered: each POST times out
    listener.settimeout(20)
    conn = None
    try:
        rx = env.peer(WebhookReceiver()).start()
        d = notify_daemon(env, rx, notify__url=f"http://127.0.0.1:{listener.getsockname()[1]}/x",
                          notify__timeout=2)
        d.start()
        d.submit("tb", {"prompt": "its event is taken back while it is sent"})
        assert d.wait_finished("tb") == "done"
        name = f"{msg_id('tb', 'job.succeeded')}.webhook@testhost.json"
        conn, _ = listener.accept()          # its POST is in flight
        os.unlink(d.path("outbox", name))   # as a host that reclaimed the job takes it back
        wait_for(lambda: "webhook job.succeeded failed (timeout" in d.log(), 30,
                 f"the POST to time out:\n{d.log()[-2000:]}")
        wait_for(lambda: "was taken back or over" in d.log() or d.listdir("outbox"), 10,
                 f"the entry's rewrite:\n{d.log()[-2000:]}")
        assert d.listdir("outbox") == [], d.listdir("outbox")
        assert "'outbox/" + name + "' was taken back or over by another daemon" in d.log()
        assert d.stop() == 0
    finally:
        if conn:
            conn.close()
        listener.close()


def test_torn_entry_set_aside_once(env):
    # An entry of ours that is empty (its name durable before its bytes, in a crash) or torn is
    # set aside once with an error, never read and refused at every scan; the others go on.
    rx = env.peer(WebhookReceiver()).start()
    d = notify_daemon(env, rx)
    os.makedirs(d.path("outbox"), exist_ok=True)
    empty = msg_id("te", "job.succeeded") + ".webhook@testhost.json"
    torn = msg_id("tt", "job.succeeded") + ".webhook@testhost.json"
    open(d.path("outbox", empty), "w").close()
    with open(d.path("outbox", torn), "w") as f:
        f.write('{"target": "webhook", "id": "msg_')
    d.start()
    d.submit("after", {"prompt": "after the torn entries"})
    wait_for(lambda: "after" in delivered(rx) and not d.listdir("outbox"), 30,
             "the torn entries set aside, the new event delivered")
    for name, size in ((empty, 0), (torn, 33)):
        assert os.path.exists(d.path("outbox", "." + name + ".torn")), os.listdir(d.path("outbox"))
        line = (f"'outbox/{name}' is torn ({size} bytes, not an entry): set aside as "
                f"'outbox/.{name}.torn'")
        d.wait_logged(line)
        assert d.flushed_log().count(line) == 1, d.log()
    d.assert_not_logged("ignoring 'outbox/")
    assert d.stop() == 0


def test_a_result_too_big_fails_the_job_with_a_bounded_result(env):
    """A result past its headroom (IMGSPOOLD_RESULT_HEADROOM makes it so without a bug) is not
    written: the job fails with publish_failed and a result of only what is bounded, its paid
    images beside it in failed/, its attempts in its job file's records, an event that says the
    same, and imgspool shows it."""
    rx = env.peer(WebhookReceiver()).start()
    d = notify_daemon(env, rx)
    d.submit("over", {"prompt": "too big a result", "n": 2, "metadata": {"order": 7}})
    d.start(extra_env={"IMGSPOOLD_RESULT_HEADROOM": "400"})
    assert d.wait_finished("over") == "failed", d.log()[-2000:]
    r = d.result("over")
    assert r["error"]["code"] == "publish_failed", r
    assert "more than the 400 a result may" in r["error"]["message"], r
    assert "2 image(s) were generated" in r["error"]["message"], r
    assert r["attempts"] == [] and r["attempts_elided"] == 1 and r["billed_attempts"] == 1, r
    assert r["usage"] is None and r["error"]["upstream_message"] is None, r
    assert r["images"] == ["over.1.png", "over.2.png"] and r["metadata"] == {"order": 7}, r
    assert sorted(n for n in d.listdir("failed") if n.startswith("over")) == [
        "over.1.png", "over.2.png", "over.json", "over.result.json"]
    job = json.load(open(d.path("failed", "over.json")))
    assert len(job["imgspool"]["attempts"]) == 1 and job["imgspool"]["error_code"] == "publish_failed"
    d.wait_logged("its result would take")
    wait_for(lambda: "over" in delivered(rx), 30, "its event")
    (wid, ev), = delivered(rx)["over"]
    assert ev["type"] == "job.failed" and wid == msg_id("over", "job.failed"), ev
    assert ev["data"]["error_code"] == "publish_failed" and ev["data"]["images"] == r["images"]
    assert ev["data"]["cost"] == r["cost"] and ev["data"]["status"] == "failed"
    shown = subprocess.run([IMGSPOOL, "-d", d.spool, "show", "over"], capture_output=True,
                           text=True, stdin=subprocess.DEVNULL, timeout=60)
    assert shown.returncode == 1 and '"publish_failed"' in shown.stdout, shown
    assert env.fake.calls("too big a result") == 1
    assert d.stop() == 0


if __name__ == "__main__":
    run_tests([test_every_event_signed_and_verified,
               test_a_result_too_big_fails_the_job_with_a_bounded_result,
               test_receiver_down_across_a_restart,
               test_gone_redirect_and_job_urls, test_gone_endpoint_waits_until_enabled,
               test_parked_events_given_up_in_time, test_private_addresses_refused,
               test_hook_once_clean_env_and_killed,
               test_hook_gets_the_open_files_limit_the_daemon_started_with,
               test_no_event_for_a_publication_that_failed,
               test_one_event_for_a_job_finished_by_a_restart,
               test_one_event_for_a_job_another_host_ends_another_way,
               test_one_event_for_a_job_another_host_ends_another_way_after_its_restart,
               test_an_event_taken_along_is_not_sent_while_its_job_waits,
               test_an_event_taken_along_with_a_file_sent_back_to_new_is_not_left_held,
               test_an_event_taken_along_on_a_file_system_without_hard_links_is_moved_not_lost,
               test_an_event_taken_along_is_not_left_held_when_outbox_cannot_be_listed_at_adoption,
               test_an_end_event_that_cannot_be_taken_along_keeps_its_job_waiting,
               test_one_event_for_a_job_whose_reclaimer_died_before_taking_its_entry_along,
               test_a_restarted_host_sends_no_event_of_its_own_while_its_job_is_on_a_stalled_reclaimer,
               test_a_stalled_reclaimer_takes_nothing_along_from_a_host_that_reclaimed_and_ended_the_job,
               test_an_event_taken_along_goes_out_when_its_staged_publication_is_completed,
               test_a_reclaimer_with_other_notify_targets_announces_the_end_to_the_dead_hosts,
               test_a_reclaimer_without_notify_leaves_the_dead_hosts_end_event_to_a_host_that_can_send_it,
               test_a_held_event_left_by_a_kill_after_the_publication_goes_at_the_restart,
               test_an_entry_is_not_taken_over_while_its_job_is_its_hosts,
               test_an_entry_taken_back_while_it_is_sent_is_not_written_again,
               test_held_entries_are_not_in_the_outbox_backlog,
               test_torn_entry_set_aside_once])
