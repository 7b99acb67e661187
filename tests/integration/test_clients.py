#!/usr/bin/env python3
"""contrib/clients/: the Python, Node and POSIX shell clients, each against the real daemon:
submit with a collision-free id, read the state, wait for the result (issue 10)."""
import json
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import ROOT, SCRATCH, cli, run_tests, wait_for  # noqa: E402

CLIENTS = os.path.join(ROOT, "contrib", "clients")
COMMANDS = {
    "python": [sys.executable, os.path.join(CLIENTS, "imgspool_client.py")],
    "node": ["node", os.path.join(CLIENTS, "imgspool-client.js")],
    "sh": ["sh", os.path.join(CLIENTS, "imgspool-client.sh")],
}


def run(lang, spool, *args, **kw):
    return subprocess.run(COMMANDS[lang] + [spool, *args], capture_output=True, text=True,
                          timeout=120, **kw)


def exercise(env, lang):
    # The slow call is answered only once a later call (the burst below) reached the fake, so
    # the early wait meets it running however slow the machine is.
    gate = len(env.fake.snapshot()) + 2
    env.fake.script(f"{lang} slow", [{"kind": "b64", "after_requests": gate}])
    env.fake.script(f"{lang} refused", [{"kind": "400_content_policy"}])
    d = env.daemon().start()
    job = os.path.join(SCRATCH, f"{lang}.json")
    with open(job, "w") as f:
        json.dump({"prompt": f"{lang} slow", "metadata": {"client": lang}}, f)
    try:
        sub = run(lang, d.spool, "submit", job)
        assert sub.returncode == 0, (sub.returncode, sub.stderr)
        task_id = sub.stdout.strip()
        assert d.path("new") and task_id and "/" not in task_id, task_id
        wait_for(lambda: run(lang, d.spool, "state", task_id).stdout.startswith("running on testhost"),
                 20, f"{lang} to see the job running")
        early = run(lang, d.spool, "wait", task_id, "0.1" if lang != "sh" else "1")
        assert early.returncode == 3, (early.returncode, early.stderr)
        # Collision-free ids: a burst of submissions from one client gets distinct ids.
        ids = {run(lang, d.spool, "submit", "-", input=json.dumps({"prompt": f"{lang} burst {i}"})).stdout.strip()
               for i in range(5)}
        assert len(ids) == 5 and task_id not in ids, ids
        done = run(lang, d.spool, "wait", task_id, "60")
        assert done.returncode == 0, (done.returncode, done.stderr)
        r = json.loads(done.stdout)
        assert r["status"] == "succeeded" and r["metadata"] == {"client": lang}, r
        assert os.path.exists(d.path("done", r["images"][0]))
        st = run(lang, d.spool, "state", task_id)
        assert st.returncode == 0 and st.stdout.strip() == "done", st
        bad = run(lang, d.spool, "submit", "-", input=json.dumps({"prompt": f"{lang} refused"}))
        r = run(lang, d.spool, "wait", bad.stdout.strip(), "60")
        assert r.returncode == 1 and json.loads(r.stdout)["error"]["code"] == "content_refused", r
        missing = run(lang, d.spool, "wait", "never-submitted", "60")
        assert missing.returncode == 4 and "no job" in missing.stderr, missing
        for i in ids:
            d.wait_finished(i)
        assert env.fake.calls(f"{lang} slow") == 1
        assert d.listdir("tmp") == [], d.listdir("tmp")
    finally:
        os.unlink(job)


def seen_deferred(env, task_id, name):
    """deferred/name (a version of task_id the daemon moved back, waiting an hour) is deferred
    to every client and to imgspool."""
    d = env.daemon().start()
    with open(d.path("tmp", name), "w") as f:
        json.dump({"prompt": "moved back"}, f)
    later = os.stat(d.path("tmp", name)).st_mtime + 3600   # due in an hour: it waits there
    os.utime(d.path("tmp", name), (later, later))
    os.rename(d.path("tmp", name), d.path("deferred", name))
    for lang in COMMANDS:
        st = run(lang, d.spool, "state", task_id)
        assert st.stdout.strip() == "deferred", (lang, st)
    st = cli(d.spool, "status", task_id)
    assert st.stdout.strip() == "deferred", st
    assert d.stop() == 0
    assert d.listdir("deferred") == [name], d.listdir("deferred")


def test_a_version_moved_back_under_its_bare_id_is_seen_deferred(env):
    """A version of an id that the daemon moved back to deferred/ID (deferred/ID.json held
    another version, spool-layout.md section 5) is deferred to every client and to imgspool;
    they looked for deferred/ID.json only, and said the job was nowhere."""
    seen_deferred(env, "mb", "mb")


def test_a_version_moved_back_under_a_numbered_name_is_seen_deferred(env):
    """The same for deferred/ID.N.json, where a version goes when deferred/ID.json and
    deferred/ID both hold others (section 5): the clients and imgspool said nowhere."""
    seen_deferred(env, "mn", "mn.4.json")


def submit_with_digits_only(lang, spool, job_path):
    """Submits with randomness whose 16 hex digits are all decimal ("1111..."), as one id in
    about 1 800 draws is; returns the task id."""
    if lang == "python":
        code = (f"import sys, json, secrets; sys.path.insert(0, {CLIENTS!r}); "
                "secrets.token_hex = lambda n=16: '11' * n; import imgspool_client as c; "
                f"print(c.submit({spool!r}, json.load(open({job_path!r}))))")
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    elif lang == "node":
        code = ("const c = require('crypto'); c.randomBytes = (n) => Buffer.alloc(n, 0x11); "
                f"const isc = require({os.path.join(CLIENTS, 'imgspool-client.js')!r}); "
                f"console.log(isc.submit({spool!r}, JSON.parse(require('fs').readFileSync({job_path!r}))));")
        r = subprocess.run(["node", "-e", code], capture_output=True, text=True, timeout=60)
    else:
        bin_dir = os.path.join(SCRATCH, "fake-od")
        os.makedirs(bin_dir, exist_ok=True)
        with open(os.path.join(bin_dir, "od"), "w") as f:
            f.write("#!/bin/sh\necho ' 11 11 11 11 11 11 11 11'\n")
        os.chmod(os.path.join(bin_dir, "od"), 0o755)
        r = run(lang, spool, "submit", job_path,
                env=dict(os.environ, PATH=bin_dir + os.pathsep + os.environ["PATH"]))
        shutil.rmtree(bin_dir)
    assert r.returncode == 0, (lang, r.returncode, r.stderr)
    return r.stdout.strip()


def exercise_digits_only(env, lang):
    # An id ending in "." and digits only is reserved (spool-layout.md section 3): the daemon
    # ignores such a file in new/ for ever. The recipe must never make one.
    d = env.daemon().start()
    job = os.path.join(SCRATCH, f"{lang}-digits.json")
    with open(job, "w") as f:
        json.dump({"prompt": f"{lang} digits"}, f)
    try:
        task_id = submit_with_digits_only(lang, d.spool, job)
        assert "1111111111111111" in task_id, task_id
        assert d.wait_finished(task_id) == "done", task_id
    finally:
        os.unlink(job)


def test_python_client(env):
    exercise(env, "python")
    exercise_digits_only(env, "python")


def test_node_client(env):
    exercise(env, "node")
    exercise_digits_only(env, "node")


def test_shell_client(env):
    exercise(env, "sh")
    exercise_digits_only(env, "sh")


if __name__ == "__main__":
    run_tests([test_python_client, test_node_client, test_shell_client,
               test_a_version_moved_back_under_its_bare_id_is_seen_deferred,
               test_a_version_moved_back_under_a_numbered_name_is_seen_deferred])
