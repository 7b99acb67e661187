#!/usr/bin/env python3
"""imgspool, the operator's command, against the real daemon (issue 10; issue 8 item 21):
every verb, its messages and exit codes, and that held, paused and cancelled jobs make no call."""
import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import IMGSPOOL, IMGSPOOLD, ROOT, SCRATCH, cli, held_at_stop, run_tests, wait_for  # noqa: E402


def states(d, task_id):
    """Every state directory the job's file is in: must always be exactly one."""
    found = [s for s in ("new", "deferred", "hold", "done", "failed")
             if os.path.exists(d.path(s, task_id + ".json"))]
    found += ["running" for n in d.listdir("running") if n.startswith(task_id + "@")]
    return found


def test_wait_and_status_say_what_is_wrong(env):
    # Issue 8 item 21: these waited for ever in silence, or said "no job" for a missing spool.
    d = env.daemon().start()
    r = cli(d.spool, "wait", "never-submitted", timeout=30)
    assert r.returncode == 4 and "imgspool: wait: no job 'never-submitted'" in r.stderr, (r.returncode, r.stderr)
    r = cli(d.spool, "wait", "-t", "600", "a", "never-submitted", timeout=30)
    assert r.returncode == 4 and "no job" in r.stderr, r.stderr
    r = subprocess.run([IMGSPOOL, "-d", "/nonexistent", "wait", "x"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 4 and "no such spool '/nonexistent'" in r.stderr, r.stderr
    r = subprocess.run([IMGSPOOL, "-d", SCRATCH, "wait", "x"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 4 and "is not a spool" in r.stderr, r.stderr
    r = subprocess.run([IMGSPOOL, "-d", "/nonexistent", "status", "x"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 4 and "no such spool" in r.stderr and "no job" not in r.stderr, r.stderr
    # A steering verb without an id is a usage error (it used to free an uninitialized pointer).
    for verb in (["hold"], ["release"], ["cancel", "-t", "5"], ["retry", "--again"]):
        r = cli(d.spool, *verb)
        assert r.returncode == 2 and r.stderr == f"imgspool: {verb[0]}: usage: imgspool {verb[0]} " \
            f"{'[-t SECONDS] ' if verb[0] == 'cancel' else '[--again] ' if verb[0] == 'retry' else ''}ID...\n", \
            (verb, r.returncode, r.stderr)
    # The default spool comes from IMGSPOOL_DIR.
    r = subprocess.run([IMGSPOOL, "status", "x"], capture_output=True, text=True, timeout=30,
                       env=dict(os.environ, IMGSPOOL_DIR=d.spool))
    assert r.returncode == 4 and "no job 'x'" in r.stderr, r.stderr
    env.fake.script("slow", [{"kind": "b64", "delay": 30}])
    d.submit("slow", {"prompt": "slow"})
    r = cli(d.spool, "wait", "-t", "1", "slow")
    assert r.returncode == 3 and "not finished after 1s" in r.stderr, (r.returncode, r.stderr)


def test_help_version_unknown_command(env):
    for binary in (IMGSPOOL, IMGSPOOLD):
        name = os.path.basename(binary)
        for flag in ("--help", "-h"):
            r = subprocess.run([binary, flag], capture_output=True, text=True)
            assert r.returncode == 0 and r.stdout.startswith("usage: " + name), (binary, flag, r)
            assert max(map(len, r.stdout.splitlines())) <= 80, ("wider than a terminal", r.stdout)
        r = subprocess.run([binary, "--version"], capture_output=True, text=True)
        assert r.returncode == 0 and r.stdout.startswith(name + " "), (binary, r)
    r = subprocess.run([IMGSPOOL, "frobnicate"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith("imgspool: frobnicate: unknown command"), r.stderr
    r = subprocess.run([IMGSPOOL, "ls", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "ls [-j] [STATE...]" in r.stdout, r


def test_submit_many_validates_and_waits(env):
    d = env.daemon().start()
    jobs = os.path.join(SCRATCH, "jobs.jsonl")
    try:
        with open(jobs, "w") as f:
            for i in range(30):
                f.write(json.dumps({"prompt": f"bulk {i}"}) + "\n")
            f.write("\n")
        r = cli(d.spool, "submit", "--wait", "--jsonl", jobs)
        assert r.returncode == 0, r.stderr
        ids = r.stdout.split()
        assert len(ids) == 30 and len(set(ids)) == 30, ids
        assert "done 30  failed 0" in r.stderr, r.stderr
        assert "[" not in r.stderr, "a progress bar was drawn on a pipe"
        assert all(d.state(i) == "done" for i in ids)
        # One bad line submits nothing, and says which line and why; the dialect's rules apply.
        with open(jobs, "a") as f:
            f.write(json.dumps({"prompt": "x", "model": "gemini-3-pro-image-preview", "n": 2}) + "\n")
        before = len(d.listdir("new")) + len(d.listdir("done"))
        r = cli(d.spool, "submit", "--jsonl", jobs)
        assert r.returncode == 2 and "line 32" in r.stderr and "Gemini" in r.stderr, r.stderr
        assert "nothing submitted" in r.stderr and r.stdout == "", r
        assert len(d.listdir("new")) + len(d.listdir("done")) == before
        # A line past max_job_bytes, which a daemon would leave in new/ unread, as a file is.
        with open(jobs, "w") as f:
            f.write(json.dumps({"prompt": "fits"}) + "\n")
            f.write(json.dumps({"prompt": "big", "metadata": "x" * (1 << 20)}) + "\n")
        r = cli(d.spool, "submit", "--jsonl", jobs)
        assert r.returncode == 2 and r.stdout == "", r
        assert f"imgspool: submit: {jobs} line 2: larger than 1048576 bytes, the daemon's default " \
            "[limits] max_job_bytes: a daemon leaves a larger job in new/ unread (one configured " \
            "for more: imgspool -c ITS_CONFIG, IMGSPOOL_CONFIG=ITS_CONFIG, or --max-job-bytes)\n" \
            in r.stderr, r.stderr
        assert len(d.listdir("new")) + len(d.listdir("done")) == before
        r = cli(d.spool, "submit", "-", input='{"prompt": "x", "imgspool": {"retry_count": -5}}')
        assert r.returncode == 2 and "imgspool" in r.stderr, r.stderr
        # Several files, and standard input.
        paths = []
        for i in range(2):
            paths.append(os.path.join(SCRATCH, f"job{i}.json"))
            with open(paths[-1], "w") as f:
                json.dump({"prompt": f"file {i}"}, f)
        r = cli(d.spool, "submit", *paths)
        assert r.returncode == 0 and len(r.stdout.split()) == 2, r
        for p in paths:
            os.unlink(p)
    finally:
        os.unlink(jobs)


def daemon_default_max_job_bytes():
    """[limits] max_job_bytes's default as the daemon's key table (src/config.c) says it."""
    src = open(os.path.join(ROOT, "src", "config.c")).read()
    m = re.search(r'\{ "limits", "max_job_bytes", T_INT, C\(max_job_bytes\), [^,]+, [^,]+, "(\d+)" \}', src)
    assert m, "max_job_bytes's row was not found in src/config.c"
    return int(m.group(1))


def test_submit_holds_a_job_to_what_a_default_daemon_runs(env):
    """imgspool submit and a daemon of the default configuration agree on a job's size
    (CONFIG_JOB_BYTES_DEFAULT): a job of exactly that many bytes is submitted and run, one byte
    more is refused by submit, and a daemon leaves such a file in new/ unread."""
    cap = daemon_default_max_job_bytes()
    d = env.daemon(verbose=True).start()
    path = os.path.join(SCRATCH, "cap.json")
    head = '{"prompt": "as big as a job may be", "metadata": "'

    def job_of(size):
        return head + "x" * (size - len(head) - 2) + '"}'
    try:
        with open(path, "w") as f:
            f.write(job_of(cap))
        assert os.path.getsize(path) == cap
        r = cli(d.spool, "submit", "-i", "at-cap", path)
        assert r.returncode == 0 and r.stdout == "at-cap\n", r
        assert d.wait_finished("at-cap") == "done"
        result = json.load(open(d.path("done", "at-cap.result.json")))
        assert result["metadata"] == "x" * (cap - len(head) - 2)
        with open(path, "w") as f:
            f.write(job_of(cap + 1))
        r = cli(d.spool, "submit", "-i", "past-cap", path)
        assert r.returncode == 2 and r.stdout == "", r
        assert f"'{path}' is larger than {cap} bytes, the daemon's default [limits] " \
            "max_job_bytes" in r.stderr, r.stderr
        assert not os.path.exists(d.path("new", "past-cap.json"))
        d.submit("past-cap", job_of(cap + 1))   # by hand, past submit: the daemon leaves it
        wait_for(lambda: "ignoring 'new/past-cap.json'" in d.log(), 10, "new/past-cap.json ignored")
        assert "larger than [limits] max_job_bytes" in d.log()
        assert d.state("past-cap") == "new"
    finally:
        os.unlink(path)


def test_submit_takes_a_daemons_larger_max_job_bytes(env):
    """An operator who raised [limits] max_job_bytes could not submit a larger job: submit held
    every job to the default. imgspool -c CONFIG reads the daemon's configuration (its limits,
    and its spool unless -d names one); submit --max-job-bytes N says the size alone. A job of
    exactly the size is taken, one byte more is not, and the daemon runs what was taken."""
    cap = 2 << 20
    d = env.daemon(verbose=True, limits__max_job_bytes=cap, limits__max_n=2).start()
    head = '{"prompt": "a large job", "metadata": "'
    paths = {}

    def job_file(name, size):
        paths[name] = os.path.join(SCRATCH, name + ".json")
        with open(paths[name], "w") as f:
            f.write(head + "x" * (size - len(head) - 2) + '"}')
        assert os.path.getsize(paths[name]) == size
        return paths[name]

    def imgspool(*args, **kw):
        if "input" not in kw:
            kw["stdin"] = subprocess.DEVNULL
        return subprocess.run([IMGSPOOL, *args], capture_output=True, text=True, timeout=60, **kw)
    try:
        at_cap, past_cap = job_file("at-cap", cap), job_file("past-cap", cap + 1)
        # Without either, the default holds, and the message says how to go past it.
        r = cli(d.spool, "submit", "-i", "refused", at_cap)
        assert r.returncode == 2 and "larger than 1048576 bytes" in r.stderr and \
            "imgspool -c ITS_CONFIG, IMGSPOOL_CONFIG=ITS_CONFIG, or --max-job-bytes" in r.stderr, r
        # -c: the daemon's own limits and spool; its path wins over IMGSPOOL_DIR.
        r = imgspool("-c", d.config_path, "submit", "-i", "by-config", at_cap,
                     env=dict(os.environ, IMGSPOOL_DIR="/nonexistent"))
        assert r.returncode == 0 and r.stdout == "by-config\n", r
        assert d.wait_finished("by-config") == "done"
        assert json.load(open(d.path("done", "by-config.result.json")))["metadata"] == \
            "x" * (cap - len(head) - 2)
        r = imgspool("-c", d.config_path, "submit", "-i", "too-big", past_cap)
        assert r.returncode == 2 and r.stdout == "", r
        assert f"imgspool: submit: '{past_cap}' is larger than {cap} bytes, the [limits] " \
            f"max_job_bytes of '{d.config_path}' (given with -c): its daemons leave a larger job in " \
            "new/ unread\n" == r.stderr, r.stderr
        # Every line of a JSONL file is held to it too, and the daemon's max_n applies.
        r = imgspool("-c", d.config_path, "submit", "--jsonl", "-",
                     input=json.dumps({"prompt": "x", "n": 3}) + "\n")
        assert r.returncode == 2 and 'standard input line 1: invalid job (field "n")' in r.stderr and \
            "imgspool: submit: held to [limits] max_n = 2, max_depth = 32, max_pixels_mp = 0 (no " \
            f"limit) of '{d.config_path}' (given with -c)\n" in r.stderr, r
        # --max-job-bytes: the size alone, with -d; over -c's when both are given.
        r = cli(d.spool, "submit", "--max-job-bytes", str(cap), "-i", "by-option", at_cap)
        assert r.returncode == 0 and r.stdout == "by-option\n", r
        assert d.wait_finished("by-option") == "done"
        r = cli(d.spool, "submit", "--max-job-bytes", str(cap), "-i", "too-big", past_cap)
        assert r.returncode == 2 and f"larger than {cap} bytes, the --max-job-bytes given" in r.stderr, r
        r = imgspool("-c", d.config_path, "submit", "--max-job-bytes", "1048576", at_cap)
        assert r.returncode == 2 and "larger than 1048576 bytes, the --max-job-bytes given" in r.stderr, r
        for bad in ("1023", str((64 << 20) + 1), "2M", ""):
            r = cli(d.spool, "submit", "--max-job-bytes", bad, at_cap)
            assert r.returncode == 2 and "--max-job-bytes takes the daemons' [limits] max_job_bytes: " \
                "a number of bytes from 1024 to 67108864" in r.stderr, (bad, r)
        assert not os.path.exists(d.path("new", "too-big.json")) and d.state("refused") is None
        # A configuration the daemon would not start with is refused, with its line.
        bad_config = os.path.join(SCRATCH, "bad.ini")
        with open(bad_config, "w") as f:
            f.write("[limits]\nmax_job_bytes = 100\n")
        r = imgspool("-c", bad_config, "ls")
        assert r.returncode == 2 and r.stderr == "imgspool: ls: the configuration given with -c does " \
            f"not load: {bad_config}:2: [limits] \"max_job_bytes\" must be a whole number from " \
            "1024 to 67108864, not \"100\"\n", r
        os.unlink(bad_config)
    finally:
        for path in paths.values():
            os.unlink(path)


def test_imgspool_config_names_the_daemons_configuration(env):
    """$IMGSPOOL_CONFIG is -c's environment form, for imgspool (its limits for submit, its spool
    after -d, -c and $IMGSPOOL_DIR) and for imgspoold (-c's default). Without a configuration
    submit holds jobs to a daemon's defaults, and a job refused by them alone is told which
    limits were applied, from where, and how to give the daemon's own."""
    d = env.daemon(limits__max_n=6, limits__max_depth=64).start()
    bad_config = os.path.join(SCRATCH, "bad.ini")
    with open(bad_config, "w") as f:
        f.write("[limits]\nmax_n = 11\n")

    def imgspool(*args, environ, job):
        return subprocess.run([IMGSPOOL, *args], capture_output=True, text=True, timeout=60,
                              input=json.dumps(job), env=dict(os.environ, **environ))
    five, seven = {"prompt": "five", "n": 5}, {"prompt": "seven", "n": 7}
    deep = {"prompt": "deep", "metadata": json.loads("[" * 40 + "]" * 40)}
    try:
        # Without a configuration: a daemon's defaults, said, with how to give the daemon's.
        for job in (five, deep):
            r = imgspool("-d", d.spool, "submit", environ={}, job=job)
            assert r.returncode == 2 and r.stdout == "" and "imgspool: submit: held to [limits] " \
                "max_n = 4, max_depth = 32, max_pixels_mp = 0 (no limit), a daemon's defaults: for " \
                "a daemon configured for more, give its configuration (imgspool -c ITS_CONFIG, or " \
                "IMGSPOOL_CONFIG=ITS_CONFIG)\n" in r.stderr, r
        # Past what any daemon takes: no such advice.
        r = imgspool("-d", d.spool, "submit", environ={}, job={"prompt": "x", "n": 11})
        assert r.returncode == 2 and "held to" not in r.stderr, r
        # $IMGSPOOL_CONFIG: the daemon's limits, and its spool (no -d).
        r = imgspool("submit", "-i", "by-env", environ={"IMGSPOOL_CONFIG": d.config_path},
                     job=dict(deep, n=5))
        assert r.returncode == 0 and r.stdout == "by-env\n", r
        assert d.wait_finished("by-env") == "done"
        r = imgspool("submit", environ={"IMGSPOOL_CONFIG": d.config_path}, job=seven)
        assert r.returncode == 2 and "imgspool: submit: held to [limits] max_n = 6, max_depth = 64, " \
            f"max_pixels_mp = 0 (no limit) of '{d.config_path}' (named by $IMGSPOOL_CONFIG)\n" \
            in r.stderr, r
        # -d over its spool, its limits kept; $IMGSPOOL_DIR over its spool too.
        r = imgspool("-d", d.spool, "submit", "-i", "by-d", environ={"IMGSPOOL_CONFIG": "/nonexistent.ini"},
                     job=five)
        assert r.returncode == 2 and r.stderr == "imgspool: submit: the configuration named by " \
            "$IMGSPOOL_CONFIG does not load: /nonexistent.ini: cannot open: No such file or " \
            "directory\n", r
        r = imgspool("-d", d.spool, "submit", "-i", "by-d", environ={"IMGSPOOL_CONFIG": d.config_path},
                     job=five)
        assert r.returncode == 0 and r.stdout == "by-d\n", r
        r = imgspool("ls", environ={"IMGSPOOL_CONFIG": d.config_path, "IMGSPOOL_DIR": "/nonexistent"},
                     job={})
        assert r.returncode == 4 and "no such spool '/nonexistent' (from $IMGSPOOL_DIR; " in r.stderr, r
        # -c over the environment: $IMGSPOOL_CONFIG is not read at all.
        r = imgspool("-c", d.config_path, "submit", "-i", "by-c", environ={"IMGSPOOL_CONFIG": bad_config},
                     job=five)
        assert r.returncode == 0 and r.stdout == "by-c\n", r
        r = imgspool("ls", environ={"IMGSPOOL_CONFIG": bad_config}, job={})
        assert r.returncode == 2 and r.stderr == "imgspool: ls: the configuration named by " \
            f"$IMGSPOOL_CONFIG does not load: {bad_config}:2: [limits] \"max_n\" must be a whole " \
            "number from 1 to 10, not \"11\"\n", r
        # A spool that is not there says which of the places named it.
        with open(os.path.join(SCRATCH, "elsewhere.ini"), "w") as f:
            f.write("[spool]\ndir = /nonexistent\n")
        r = imgspool("ls", environ={"IMGSPOOL_CONFIG": os.path.join(SCRATCH, "elsewhere.ini")}, job={})
        assert r.returncode == 4 and "no such spool '/nonexistent' (from the [spool] dir of " \
            f"'{SCRATCH}/elsewhere.ini' (named by $IMGSPOOL_CONFIG); " in r.stderr, r
        os.unlink(os.path.join(SCRATCH, "elsewhere.ini"))
        # A hook program only the daemon's host has is no reason to refuse its file here.
        hooked = os.path.join(SCRATCH, "hooked.ini")
        with open(hooked, "w") as f:
            f.write(f"[spool]\ndir = {d.spool}\n[notify]\nexec = /nonexistent/hook\n")
        r = imgspool("ls", environ={"IMGSPOOL_CONFIG": hooked}, job={})
        assert r.returncode == 0 and r.stderr == "", r
        r = subprocess.run([IMGSPOOLD, "-n", "-c", hooked], capture_output=True, text=True, timeout=60)
        assert r.returncode == 1 and f"{hooked}:4: [notify] exec '/nonexistent/hook' is not an " \
            "executable file" in r.stderr, r
        os.unlink(hooked)
        assert all(d.wait_finished(i) == "done" for i in ("by-d", "by-c"))
        # imgspoold: -c, else $IMGSPOOL_CONFIG, else a usage error that says so.
        daemon = [IMGSPOOLD, "-n"]
        r = subprocess.run(daemon, capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, IMGSPOOL_CONFIG=d.config_path))
        assert r.returncode == 0 and r.stdout == f"{d.config_path}: ok\n" and \
            f"configuration '{d.config_path}' from $IMGSPOOL_CONFIG (no -c given)" in r.stderr, r
        r = subprocess.run(daemon + ["-c", d.config_path], capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, IMGSPOOL_CONFIG=bad_config))
        assert r.returncode == 0 and r.stdout == f"{d.config_path}: ok\n", r
        r = subprocess.run(daemon, capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, IMGSPOOL_CONFIG=bad_config))
        assert r.returncode == 1 and f"{bad_config}:2: " in r.stderr, r
        r = subprocess.run(daemon, capture_output=True, text=True, timeout=60, env=dict(os.environ))
        assert r.returncode == 2 and r.stderr.startswith("imgspoold: no configuration: give -c FILE "
                                                         "or set IMGSPOOL_CONFIG\nusage: imgspoold"), r
    finally:
        os.unlink(bad_config)


def test_ls_show_stat(env):
    env.fake.script("will fail", [{"kind": "400_content_policy"}])
    env.fake.script("slow one", [{"kind": "b64", "delay": 30}])
    d = env.daemon().start()
    d.submit("ok-1", {"prompt": "fine", "model": "gpt-image-2"})
    d.submit("bad-1", {"prompt": "will fail"})
    d.wait_finished("ok-1")
    d.wait_finished("bad-1")
    d.submit("slow-1", {"prompt": "slow one"})
    wait_for(lambda: d.state("slow-1") == "running", 10, "slow-1 to run")
    r = cli(d.spool, "ls")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[:3] == ["STATE", "AGE", "PROVIDER"], lines[0]
    rows = {line.split()[-1]: line.split() for line in lines[1:]}
    assert rows["ok-1"][0] == "done" and rows["ok-1"][3] == "gpt-image-2", rows
    assert rows["bad-1"][0] == "failed" and rows["bad-1"][7] == "content_refused", rows
    assert rows["slow-1"][0] == "running" and rows["slow-1"][4] == "testhost", rows
    r = cli(d.spool, "ls", "-j", "failed")
    (row,) = [json.loads(line) for line in r.stdout.splitlines()]
    assert row["id"] == "bad-1" and row["error_code"] == "content_refused" and row["attempts"] == 1, row
    assert cli(d.spool, "ls", "queued").returncode == 2
    r = cli(d.spool, "show", "ok-1")
    assert r.returncode == 0 and "state:    done" in r.stdout and '"status": "succeeded"' in r.stdout, r.stdout
    r = cli(d.spool, "show", "slow-1")
    assert r.returncode == 3 and "running on testhost" in r.stdout, r.stdout
    # A result that carries a cost (issue 11's shape) counts in today's and this month's money.
    with open(d.path("done", "paid-1.result.json"), "w") as f:
        json.dump({"task_id": "paid-1", "status": "succeeded", "provider": "apiyi", "images": [],
                   "attempts": [], "cost": {"amount": 0.25, "currency": "USD", "estimated": False}}, f)
    with open(d.path("done", "paid-1.json"), "w") as f:
        json.dump({"prompt": "paid"}, f)
    r = cli(d.spool, "stat", "-j")
    s = json.loads(r.stdout)
    assert s["states"]["done"]["total"]["5m"] == 2 and s["states"]["failed"]["apiyi"]["total"] == 1, s
    assert s["spent"] == [{"currency": "USD", "today": 0.25, "month": 0.25}], s["spent"]
    assert s["states"]["running"]["total"]["total"] == 1, s
    r = cli(d.spool, "stat")
    assert r.returncode == 0 and "oldest pending" in r.stdout and "640m" in r.stdout, r.stdout
    assert "spent: 0.25 USD today, 0.25 USD this month" in r.stdout, r.stdout


def test_hold_release_cancel_pending(env):
    d = env.daemon(verbose=True).start()
    cli(d.spool, "pause")   # nothing starts while the jobs are put in place
    for i in range(3):
        d.submit(f"p{i}", {"prompt": f"pending {i}"})
    r = cli(d.spool, "hold", "p0", "p1")
    assert r.returncode == 0 and "p0: held (was pending)" in r.stdout, r
    r = cli(d.spool, "cancel", "p2")
    assert r.returncode == 0 and "p2: cancelled (was pending)" in r.stdout, r
    cli(d.spool, "resume")
    assert d.wait_finished("p2") == "failed" and d.result("p2")["error"]["code"] == "cancelled"
    r = cli(d.spool, "cancel", "p1")
    assert r.returncode == 0 and "cancelled (was held)" in r.stdout, r
    assert d.result("p1")["attempts"] == [] and d.result("p1")["error"]["code"] == "cancelled"
    # A held job is invisible to the daemon, for as long as it is held.
    d.wait_rescans(2)
    assert states(d, "p0") == ["hold"]
    r = cli(d.spool, "release", "p0")
    assert r.returncode == 0, r
    assert d.wait_finished("p0") == "done"
    for i in range(3):
        assert env.fake.calls(f"pending {i}") == (1 if i == 0 else 0), i
        assert len(states(d, f"p{i}")) == 1
    # Nothing to act on: a plain message, exit 1.
    r = cli(d.spool, "hold", "p0")
    assert r.returncode == 1 and "imgspool: hold: 'p0' has already finished (done)" in r.stderr, r.stderr
    r = cli(d.spool, "release", "nope")
    assert r.returncode == 1 and "no job 'nope'" in r.stderr, r.stderr


def test_a_job_file_too_big_to_read_is_not_cancelled(env):
    # Cancelling wrote a result without the job's records (its billed attempts, its metadata)
    # when the job file was past what imgspool reads, and said "cancelled". What imgspool reads
    # is the largest job file any daemon reads: max_job_bytes at its ceiling, and the records.
    d = env.daemon().start()
    d.stop()
    ceiling = (64 << 20) + (64 << 10)
    for state, task_id in (("new", "big-new"), ("hold", "big-held")):
        with open(d.path(state, task_id + ".json"), "w") as f:
            f.truncate(ceiling + 1)   # sparse: what is past the cap is never read
    for task_id, was, where in (("big-new", "pending", "new"), ("big-held", "held", "hold")):
        r = cli(d.spool, "cancel", task_id)
        assert r.returncode == 1, (task_id, r.returncode, r.stdout, r.stderr)
        assert r.stderr == f"imgspool: cancel: '{task_id}' not cancelled: its job file is " \
            f"{ceiling + 1} bytes, more than any daemon reads (max_job_bytes of 64 MiB at most, " \
            f"and 64 KiB of records); it is still {was} (in {where}/)\n", r.stderr
        assert states(d, task_id) == [where], states(d, task_id)
        assert os.path.getsize(d.path(where, task_id + ".json")) == ceiling + 1
        assert not os.path.exists(d.path("failed", task_id + ".result.json"))


def test_a_cancelled_jobs_result_is_bounded_whatever_its_file_says(env):
    """imgspool cancel writes the result of a job no daemon checked: its model (or provider) is
    the file's own words, of any length. The result stays within its metadata and 64 KiB
    (result.h, RESULT_HEADROOM): past that it is written trimmed, those words left in the job
    file beside it."""
    d = env.daemon().start()
    d.stop()
    job = {"prompt": "x", "model": "m" * 100000, "metadata": {"order": 1}}
    with open(d.path("hold", "long-model.json"), "w") as f:
        json.dump(job, f)
    r = cli(d.spool, "cancel", "long-model")
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    path = d.path("failed", "long-model.result.json")
    result = json.load(open(path))
    assert os.path.getsize(path) <= len('{"order": 1}') + (64 << 10), os.path.getsize(path)
    assert result["error"]["code"] == "cancelled" and result["model"] is None, result
    assert result["metadata"] == {"order": 1}
    assert json.load(open(d.path("failed", "long-model.json")))["model"] == job["model"]


def test_a_job_the_daemon_may_take_is_cancelled_and_listed(env):
    # imgspool read job files up to 2 MiB while a daemon's max_job_bytes may be 64 MiB: such a
    # job could not be cancelled, and ls (2 MiB) did not read its result, which show (16 MiB)
    # did.
    d = env.daemon(limits__max_job_bytes=8 << 20).start()
    d.stop()
    pad = "x" * (3 << 20)
    for state, task_id in (("new", "big-new"), ("hold", "big-held")):
        with open(d.path(state, task_id + ".json"), "w") as f:
            json.dump({"prompt": "big", "metadata": {"pad": pad}}, f)
    for task_id, was in (("big-new", "pending"), ("big-held", "held")):
        r = cli(d.spool, "cancel", task_id)
        assert r.returncode == 0 and f"{task_id}: cancelled (was {was})" in r.stdout, r
        assert states(d, task_id) == ["failed"], states(d, task_id)
        result = d.result(task_id)
        assert result["error"]["code"] == "cancelled" and result["metadata"]["pad"] == pad
    r = cli(d.spool, "ls", "-j", "failed")
    rows = {row["id"]: row for row in map(json.loads, r.stdout.splitlines())}
    assert r.returncode == 0 and rows["big-new"]["error_code"] == "cancelled", (r.stderr, rows)
    r = cli(d.spool, "show", "big-held")
    assert r.returncode == 1 and pad in r.stdout and '"cancelled"' in r.stdout, r.stderr


def test_ls_believes_of_the_records_what_the_daemon_does(env):
    # ls read a held job's records by hand: an attempt that is not an object counted, and an
    # error code the daemon never writes was shown as the job's last error.
    d = env.daemon().start()
    d.stop()
    attempt = {"started_at": "2026-11-25T11:02:03.120+08:00", "latency_ms": 10, "transport": "done",
               "outcome": "retry", "billed": "no", "cost": 0, "error_code": "rate_limited"}
    with open(d.path("hold", "h-rec.json"), "w") as f:
        json.dump({"prompt": "held", "imgspool": {
            "attempts": [attempt, 42, dict(attempt, error_code="Bad Code")],
            "elided": {"attempts": 3, "billed": 0, "cost": 0, "estimated": False}}}, f)
    r = cli(d.spool, "ls", "-j", "hold")
    assert r.returncode == 0, r.stderr
    (row,) = [json.loads(line) for line in r.stdout.splitlines()]
    assert row["attempts"] == 5 and row["error_code"] is None, row


def test_cancel_running_cuts_the_call(env):
    env.fake.script("long call", [{"kind": "b64", "delay": 60}])
    d = env.daemon().start()
    d.submit("run-1", {"prompt": "long call"})
    wait_for(lambda: env.fake.inflight >= 1, 10, "the call")
    r = cli(d.spool, "cancel", "-t", "20", "run-1")
    assert r.returncode == 0 and "its call was cut" in r.stdout and "billed: unknown" in r.stdout, r
    res = d.result("run-1")
    assert res["error"]["code"] == "cancelled", res
    (a,) = res["attempts"]
    assert a["billed"] == "unknown" and a["outcome"] == "interrupted", a
    assert res["billed_attempts"] == 1
    assert states(d, "run-1") == ["failed"]
    wait_for(lambda: env.fake.inflight == 0, 10, "the upstream to see the call cut")
    assert env.fake.calls("long call") == 1
    assert os.listdir(d.path("control")) == [], "the request was left behind"


def let_every_stop_go(fifo):
    """Lets every later wait of the daemon at its stop point (IMGSPOOLD_STOP_FIFO=fifo) go at
    once, until the function returned is called."""
    over = threading.Event()

    def run():
        while not over.is_set():
            os.close(os.open(fifo, os.O_WRONLY))   # a thread waits there, or end() opened it

    helper = threading.Thread(target=run)
    helper.start()

    def end():
        over.set()
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)   # lets the helper's open through
        helper.join()
        os.close(reader)
    return end


def test_cancel_while_the_transfer_thread_is_stuck(env):
    # libcurl's transfer thread is held in the write of a body to the job's .partial (the stop
    # point http:body-write: a spool on an NFS server that stopped answering). The cancel is the
    # loop's and must not wait for that thread: the job fails as cancelled and the next job is
    # claimed meanwhile. It used to wait till the write was over (here: never).
    env.fake.script("stuck in its write", [{"kind": "tail_stall", "stall": 60}])
    d = env.daemon()
    fifo = d.start_held_at("http:body-write")
    d.submit("stuck", {"prompt": "stuck in its write"})
    writer = held_at_stop(fifo, d)
    try:
        r = cli(d.spool, "cancel", "-t", "20", "stuck")
        assert r.returncode == 0 and "its call was cut" in r.stdout, (r, d.log()[-3000:])
        assert d.result("stuck")["error"]["code"] == "cancelled", d.result("stuck")
        d.submit("next", {"prompt": "claimed while the transfer thread is stuck"})
        wait_for(lambda: d.state("next") == "running", 20, "the next job claimed")
    finally:
        os.close(writer)
    end = let_every_stop_go(fifo)
    try:
        assert d.wait_finished("next") == "done", d.log()[-3000:]
    finally:
        end()
    assert states(d, "stuck") == ["failed"] and len(d.result("stuck")["attempts"]) == 1
    assert not [n for n in os.listdir(d.path("running")) if n.startswith(".stuck@")], \
        os.listdir(d.path("running"))
    assert d.stop() == 0


def test_hold_running_at_its_next_transition(env):
    # The call in flight is not cut: its 503 sends the job to hold/ instead of deferred/.
    env.fake.script("flaky", [{"kind": "503", "delay": 1.5}, {"kind": "b64"}])
    d = env.daemon().start()
    d.submit("h1", {"prompt": "flaky"})
    wait_for(lambda: env.fake.inflight >= 1, 10, "the call")
    r = cli(d.spool, "hold", "h1")
    assert r.returncode == 0 and "at its next transition" in r.stdout, r
    wait_for(lambda: d.state("h1") is None and states(d, "h1") == ["hold"], 20, "h1 in hold/")
    assert env.fake.calls("flaky") == 1
    r = cli(d.spool, "ls", "-j", "hold")
    (row,) = [json.loads(line) for line in r.stdout.splitlines()]
    assert row["attempts"] == 1 and row["error_code"] == "upstream_unavailable", row
    assert cli(d.spool, "release", "h1").returncode == 0
    assert d.wait_finished("h1") == "done"
    assert env.fake.calls("flaky") == 2
    assert len(d.result("h1")["attempts"]) == 2


def killed_in_its_call(env, task_id, prompt):
    """A daemon killed while job task_id's call (which would take 30 s) is in flight."""
    env.fake.script(prompt, [{"kind": "b64", "delay": 30}, {"kind": "b64"}])
    d = env.daemon().start()
    d.submit(task_id, {"prompt": prompt})
    wait_for(lambda: env.fake.inflight >= 1, 10, "the call")
    d.kill()
    return d


def test_hold_of_a_job_a_crash_left_running(env):
    # The daemon died during the call; the hold was asked before it came back. The restart
    # sends the job to hold/ (it used to read control/ only after recovery, and put the job
    # back in new/ to be called again).
    d = killed_in_its_call(env, "k1", "crashed one")
    r = cli(d.spool, "hold", "k1")
    assert r.returncode == 0 and "at its next transition" in r.stdout, r
    d.start()
    wait_for(lambda: states(d, "k1") == ["hold"], 20, "k1 in hold/")
    assert env.fake.calls("crashed one") == 1
    assert not os.path.exists(d.path("control", "hold.k1")), "the request outlived the hold"
    assert cli(d.spool, "release", "k1").returncode == 0
    assert d.wait_finished("k1") == "done"
    attempts = d.result("k1")["attempts"]
    assert [a["outcome"] for a in attempts] == ["interrupted", "succeeded"], attempts


def test_requests_read_are_honoured_before_the_provider_is_asked(env):
    # A cancel or hold a client wrote for a waiting job (an empty file, as for one it saw in
    # running/) is honoured at once, before the job's provider is asked for a slot: a paused
    # provider does not keep a cancelled job waiting. A hold keeps the job's mtime, its place.
    d = env.daemon().start()
    assert cli(d.spool, "pause", "apiyi").returncode == 0
    d.submit("pc", {"prompt": "paused, then cancelled"})
    d.submit("ph", {"prompt": "paused, then held"})
    placed = 1_700_000_000_123_456_789
    os.utime(d.path("new", "ph.json"), ns=(placed, placed))
    for name in ("cancel.pc", "hold.ph"):
        open(d.path("control", name), "w").close()
    wait_for(lambda: d.state("pc") == "failed", 30, "pc cancelled")
    assert d.result("pc")["error"]["code"] == "cancelled", d.result("pc")
    wait_for(lambda: states(d, "ph") == ["hold"], 30, "ph held")
    assert os.stat(d.path("hold", "ph.json")).st_mtime_ns == placed, "the hold moved its place"
    assert env.fake.calls("paused, then cancelled") == 0 and env.fake.calls("paused, then held") == 0
    assert d.stop() == 0


def test_a_cancel_of_a_job_a_crash_left_running_fails_it(env):
    # As a cancel honoured at the claim: the job fails as cancelled (it used to go to hold/,
    # its cancel.ID removed, as if it had been a hold).
    d = killed_in_its_call(env, "kc", "crashed, cancelled")
    open(d.path("control", "cancel.kc"), "w").close()
    d.start()
    wait_for(lambda: states(d, "kc") in (["failed"], ["hold"]), 20, "kc out of running/")
    assert states(d, "kc") == ["failed"], states(d, "kc")
    assert d.result("kc")["error"]["code"] == "cancelled", d.result("kc")
    assert env.fake.calls("crashed, cancelled") == 1
    assert d.stop() == 0


def test_a_retry_waiting_in_memory_is_held_with_its_due_time(env):
    # deferred/ cannot be written (here: removed under the daemon), so the retry waits in
    # memory; held then, the job keeps its due time as mtime in hold/, as a deferred one does
    # (it got the submission time, and a release ran it at once, ahead of the queue).
    d = env.daemon().start()
    os.rmdir(d.path("deferred"))
    d.submit("bk", {"prompt": "busy for ten minutes [fake:429_retry_after retry_after=600|b64]"})
    submitted = time.time()
    wait_for(lambda: "bk warning: cannot move to deferred/" in d.log(), 20,
             f"the retry in memory:\n{d.log()[-2000:]}")
    assert cli(d.spool, "hold", "bk").returncode == 0
    wait_for(lambda: states(d, "bk") == ["hold"], 20, f"bk held:\n{d.log()[-2000:]}")
    mtime = os.stat(d.path("hold", "bk.json")).st_mtime
    assert mtime > submitted + 300, (mtime - submitted, d.log()[-2000:])
    os.mkdir(d.path("deferred"))
    assert d.stop() == 0


def test_pause_makes_no_call(env):
    d = env.daemon(verbose=True).start()
    r = cli(d.spool, "pause", "apiyi")
    assert r.returncode == 0, r
    d.submit("q1", {"prompt": "paused one"})
    d.wait_rescans(2)
    assert d.state("q1") == "new" and env.fake.calls("paused one") == 0
    r = cli(d.spool, "stat")
    assert "paused: apiyi" in r.stdout, r.stdout
    assert cli(d.spool, "resume", "apiyi").returncode == 0
    assert d.wait_finished("q1") == "done"


def test_retry_and_purge(env):
    env.fake.script("once bad", [{"kind": "400_content_policy"}, {"kind": "b64"}])
    d = env.daemon().start()
    d.submit("r1", {"prompt": "once bad", "metadata": {"k": 1}})
    assert d.wait_finished("r1") == "failed"
    assert cli(d.spool, "retry", "--again", "nope").returncode == 1
    r = cli(d.spool, "retry", "r1")
    assert r.returncode == 0 and "fresh retry budget" in r.stdout, r
    assert d.wait_finished("r1") == "done"
    res = d.result("r1")
    assert res["metadata"] == {"k": 1} and res["status"] == "succeeded", res
    assert not os.path.exists(d.path("failed", "r1.result.json")), "the earlier run's result stayed"
    assert len(res["attempts"]) == 1, res["attempts"]
    runs = json.load(open(d.path("done", "r1.json")))["imgspool"]["runs"]
    assert [r["status"] for r in runs] == ["failed"], runs
    r = cli(d.spool, "retry", "r1")
    assert r.returncode == 1 and "--again" in r.stderr, r.stderr
    assert cli(d.spool, "retry", "--again", "r1").returncode == 0
    d.wait_finished("r1")
    assert env.fake.calls("once bad") == 3
    # purge: nothing is old enough, then everything is.
    r = cli(d.spool, "purge", "--older-than", "1h")
    assert r.returncode == 0 and "purged 0 job(s) from done/" in r.stdout, r
    assert cli(d.spool, "purge", "--older-than", "soon").returncode == 2
    assert cli(d.spool, "purge", "--older-than", "1d", "new").returncode == 2
    old = 86400 * 3
    for name in d.listdir("done"):
        st = os.stat(d.path("done", name))
        os.utime(d.path("done", name), (st.st_atime - old, st.st_mtime - old))
    r = cli(d.spool, "purge", "--older-than", "2d", "done")
    assert r.returncode == 0 and "purged 1 job(s) from done/" in r.stdout, r
    assert d.listdir("done") == [], d.listdir("done")


def test_retry_and_release_drop_old_requests(env):
    """A hold or cancel left from a job's run (its daemon finished it before it read them)
    must not hold or cancel the run that retry or release starts."""
    env.fake.script("bad then fine", [{"kind": "400_content_policy"}, {"kind": "b64"}])
    d = env.daemon().start()
    d.submit("s1", {"prompt": "bad then fine"})
    assert d.wait_finished("s1") == "failed"
    assert d.stop() == 0
    os.makedirs(d.path("hold"), exist_ok=True)
    with open(d.path("hold", "s2.json"), "w") as f:
        json.dump({"prompt": "held, then released"}, f)
    requests = [d.path("control", f"{kind}.{task_id}")
                for kind in ("hold", "cancel") for task_id in ("s1", "s2")]
    for path in requests:
        open(path, "w").close()
    # No daemon runs: what retry and release leave behind is theirs alone.
    assert cli(d.spool, "retry", "s1").returncode == 0
    assert cli(d.spool, "release", "s2").returncode == 0
    assert [p for p in requests if os.path.exists(p)] == [], os.listdir(d.path("control"))
    assert states(d, "s1") == ["new"] and states(d, "s2") == ["new"]
    d.start()
    assert d.wait_finished("s1") == "done", d.log()[-3000:]
    assert d.wait_finished("s2") == "done", d.log()[-3000:]
    assert env.fake.calls("bad then fine") == 2 and env.fake.calls("held, then released") == 1
    assert d.stop() == 0


def test_stat_shows_gone_webhooks_without_their_query(env):
    d = env.daemon().start()
    url = "https://hook:t0ken@hooks.example.com/in?token=s3cret#frag"
    key = hashlib.sha256(url.encode()).hexdigest()[:32]
    with open(d.path("control", f"gone.{key}"), "w") as f:
        f.write(url + "\n")
    r = cli(d.spool, "stat")
    assert r.returncode == 0, r
    assert "webhooks stopped: https://hooks.example.com/in answered 410 Gone" in r.stdout, r.stdout
    assert f"rm '{d.spool}/control/gone.{key}'" in r.stdout and "s3cret" not in r.stdout \
        and "t0ken" not in r.stdout, r.stdout
    r = cli(d.spool, "stat", "-j")
    assert json.loads(r.stdout)["webhooks_gone"][0]["url"] == "https://hooks.example.com/in", r
    # An empty marker (a client's, or a crash's) is an endpoint whose URL is unknown: stat
    # still answers (it crashed on it).
    empty = "0" * 32
    open(d.path("control", f"gone.{empty}"), "w").close()
    for args in (["stat"], ["stat", "-j"]):
        r = cli(d.spool, *args)
        assert r.returncode == 0 and f"gone.{empty}" in r.stdout, (args, r.returncode, r.stderr)
    assert d.stop() == 0


def test_show_hides_a_jobs_webhook_credentials(env):
    d = env.daemon().start()
    url = "https://hook:t0ken@hooks.example.com/in?token=s3cret#frag"
    with open(d.path("done", "hooked-1.json"), "w") as f:
        json.dump({"prompt": "p", "webhook_url": url}, f)
    with open(d.path("done", "hooked-1.result.json"), "w") as f:
        json.dump({"task_id": "hooked-1", "status": "succeeded", "images": [], "attempts": []}, f)
    for args in (["show", "hooked-1"], ["status", "hooked-1"], ["ls", "-j"], ["ls"]):
        r = cli(d.spool, *args)
        assert r.returncode == 0, (args, r.returncode, r.stderr)
        assert "s3cret" not in r.stdout and "t0ken" not in r.stdout, (args, r.stdout)
    r = cli(d.spool, "show", "hooked-1")
    assert '"webhook_url": "https://hooks.example.com/in"' in r.stdout, r.stdout
    assert d.stop() == 0


def test_show_prints_a_large_job_as_written(env):
    """show re-indented the job file and the result whatever their size: the largest job (64 MiB,
    nested deep) took gigabytes and printed some thirty times its size. Past 64 KiB each is
    printed as it is written (man imgspool), a webhook_url's credentials still hidden, every
    member so named (the bytes may name one twice, or spell the key with an escape)."""
    d = env.daemon().start()
    url = "https://hook:t0ken@hooks.example.com/in?token=s3cret#frag"
    unit = "[" * 28 + "0.5" + "]" * 28
    deep = "[" + ",".join([unit] * ((3 << 20) // (len(unit) + 1))) + "]"
    job = ('{"prompt":"large","webhook_url":"%s","metadata":{"deep":%s},"webhook\\u005furl":"%s"}'
           % (url, deep, url))
    result = json.dumps({"task_id": "large-1", "status": "failed", "images": [],
                         "error": {"code": "invalid_job"}}, indent=2)[:-2] + ',\n  "metadata": ' + \
        '{"deep":%s}\n}\n' % deep
    with open(d.path("failed", "large-1.json"), "w") as f:
        f.write(job)
    with open(d.path("failed", "large-1.result.json"), "w") as f:
        f.write(result)
    r = cli(d.spool, "show", "large-1")
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert "s3cret" not in r.stdout and "t0ken" not in r.stdout
    assert len(r.stdout) < len(job) + len(result) + 4096, (len(r.stdout), len(job) + len(result))
    head, rest = r.stdout.split("\njob:\n", 1)
    shown_job, shown_result = rest.split("\nresult:\n", 1)
    assert shown_job == job.replace(url, "https://hooks.example.com/in"), shown_job[:200]
    assert json.loads(shown_result) == json.loads(result)
    assert d.stop() == 0


def test_show_prints_no_control_byte_of_a_large_job(env):
    """show printed a job file over 64 KiB as it is written, a raw ESC in its prompt included
    (the scan took any byte in a string; jansson, below 64 KiB, refuses one): the client's
    escapes reached the operator's terminal. A raw control byte anywhere is not JSON at any size
    (man imgspool); nothing of such a file is printed."""
    d = env.daemon().start()
    d.stop()
    evil, pad = "\x1b]0;owned\x07\x1b[2J", "x" * (70 << 10)
    jobs = {
        "esc-small": '{"prompt":"%s"}' % evil,
        "esc-prompt": '{"prompt":"%s","metadata":{"pad":"%s"}}' % (evil, pad),
        "esc-key": '{"prompt":"p","metadata":{"%s":1,"pad":"%s"}}' % (evil, pad),
        "esc-between": '{"prompt":"p","metadata":[1,%s 2],"pad":"%s"}' % (evil, pad),
        "esc-number": '{"prompt":"p","n":1%s,"pad":"%s"}' % (evil, pad),
        "esc-after": '{"prompt":"p","pad":"%s"}%s' % (pad, evil),
    }
    for task_id, text in jobs.items():
        with open(d.path("new", task_id + ".json"), "w") as f:
            f.write(text)
        r = cli(d.spool, "show", task_id)
        assert r.returncode == 3, (task_id, r.returncode, r.stderr)
        assert "\x1b" not in r.stdout and "\x07" not in r.stdout, (task_id, r.stdout[-300:])
        assert "\njob:\n(not JSON)\n" in r.stdout, (task_id, r.stdout[-300:])
    # A tab and a newline in a large file's strings are escaped: still shown, as is a DEL,
    # escaped (below).
    with open(d.path("new", "tame.json"), "w") as f:
        f.write('{"prompt":"a\\tb\x7f","pad":"%s"}\n' % pad)
    r = cli(d.spool, "show", "tame")
    assert r.returncode == 3 and '"prompt":"a\\tb\\u007f"' in r.stdout, r.stdout[-300:]
    # A C1 control (U+009B, CSI to some terminals) and a DEL are valid JSON, raw in a client's
    # file: shown escaped, whatever the size and whichever file (a DEL was printed raw); ls
    # shows them as '??' and '?'.
    csi = "\u009b2J\x7f"
    texts = {"c1-small": json.dumps({"prompt": csi, "provider": csi}, ensure_ascii=False),
             "c1-large": json.dumps({"prompt": csi, "pad": pad}, ensure_ascii=False)}
    for task_id, text in texts.items():
        with open(d.path("new", task_id + ".json"), "w", encoding="utf-8") as f:
            f.write(text)
    with open(d.path("done", "c1-done.json"), "w", encoding="utf-8") as f:
        f.write(texts["c1-small"])
    with open(d.path("done", "c1-done.result.json"), "w", encoding="utf-8") as f:
        json.dump({"task_id": "c1-done", "status": "succeeded", "images": [],
                   "metadata": {"m": csi}}, f, ensure_ascii=False)
    for args in (["show", "c1-small"], ["show", "c1-large"], ["show", "c1-done"],
                 ["status", "c1-done"], ["wait", "c1-done"], ["ls"], ["ls", "-j"]):
        r = cli(d.spool, *args)
        assert "\u009b" not in r.stdout and "\x7f" not in r.stdout, (args, r.stdout[-300:])
        if args[0] != "ls":
            assert "\\u009b2J\\u007f" in r.stdout, (args, r.stdout[-300:])
        else:
            assert "??2J?" in r.stdout, (args, r.stdout[-300:])


def test_ls_parses_no_large_member_of_a_large_job(env):
    """ls parsed a large job's provider, model and records whole whatever their size: a
    provider that was a 9 MB array of {} took 1 s and 690 MB. Past 64 KiB of file, a provider
    or model of more than 4 KiB is shown as invalid, and records of more than 64 KiB (more
    than a daemon writes) are not believed (man imgspool); below, the same file is shown."""
    d = env.daemon().start()
    d.stop()
    pad = "x" * (70 << 10)
    attempt = {"started_at": "2026-11-25T11:02:03.120+08:00", "latency_ms": 10, "transport": "done",
               "outcome": "retry", "billed": "no", "cost": 0, "error_code": "rate_limited"}
    jobs = {
        "long-names": {"prompt": "p", "provider": "P" * 5000, "model": "m" * 5000,
                       "metadata": {"pad": pad}},
        "names": {"prompt": "p", "provider": "apiyi", "model": "gpt-image-1",
                  "metadata": {"pad": pad}},
        "long-records": {"prompt": "p", "imgspool": {"attempts": [attempt], "pad": pad}},
        "records": {"prompt": "p", "imgspool": {"attempts": [attempt]}, "metadata": {"pad": pad}},
    }
    for task_id, job in jobs.items():
        with open(d.path("new", task_id + ".json"), "w") as f:
            json.dump(job, f)
    r = cli(d.spool, "ls", "-j", "new")
    assert r.returncode == 0, r.stderr
    rows = {row["id"]: row for row in map(json.loads, r.stdout.splitlines())}
    assert rows["long-names"]["provider"] is None and rows["long-names"]["model"] is None, rows
    assert rows["names"]["provider"] == "apiyi" and rows["names"]["model"] == "gpt-image-1", rows
    assert rows["long-records"]["attempts"] == 0, rows["long-records"]
    assert rows["records"]["attempts"] == 1, rows["records"]
    assert rows["records"]["error_code"] == "rate_limited", rows["records"]


def test_ls_reads_a_large_results_head_only(env):
    """ls read a result over 64 KiB whole (up to 64 MiB) for fields the daemon writes in its
    first 64 KiB, before the client's metadata (man imgspool): only that head is read, so a
    result cut short past it (here: its metadata never ends) is listed all the same."""
    d = env.daemon().start()
    d.stop()
    head = json.dumps({"task_id": "cut-1", "status": "failed", "provider": "apiyi",
                       "model": "gpt-image-1", "images": [], "attempts": [{"outcome": "failed"}],
                       "error": {"code": "cancelled"}}, indent=2)[:-2]
    with open(d.path("failed", "cut-1.json"), "w") as f:
        f.write('{"prompt": "cut"}')
    with open(d.path("failed", "cut-1.result.json"), "w") as f:
        f.write(head + ',\n  "metadata": {"pad": "' + "x" * (3 << 20))
    r = cli(d.spool, "ls", "-j", "failed")
    assert r.returncode == 0, r.stderr
    (row,) = [json.loads(line) for line in r.stdout.splitlines()]
    assert row["provider"] == "apiyi" and row["model"] == "gpt-image-1", row
    assert row["attempts"] == 1 and row["error_code"] == "cancelled", row


def test_a_refused_verb_says_so(env):
    # The group recipe: clients may write tmp/ and new/ only. A client (here: nobody) can
    # submit and look, and is told plainly that steering needs the daemon's user.
    d = env.daemon().start()
    assert cli(d.spool, "pause").returncode == 0
    d.submit("j1", {"prompt": "stays pending"})
    for path in (SCRATCH, d.dir, d.spool):
        os.chmod(path, 0o755)
    for sub in ("tmp", "new"):
        os.chmod(d.path(sub), 0o777)
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", IMGSPOOL, "-d", d.spool]
    run = lambda *args, **kw: subprocess.run(nobody + list(args), capture_output=True, text=True,
                                             timeout=60, **kw)
    for verb in (["hold", "j1"], ["cancel", "j1"], ["pause"], ["resume"]):
        r = run(*verb)
        assert r.returncode == 5, (verb, r.returncode, r.stderr)
        assert r.stderr.startswith(f"imgspool: {verb[0]}: ") and "Permission denied" in r.stderr, r.stderr
        assert "daemon's user" in r.stderr, r.stderr
    assert d.state("j1") == "new"
    r = run("submit", "-", input='{"prompt": "from a client"}')
    assert r.returncode == 0, r.stderr
    assert run("ls").returncode == 0 and run("stat").returncode == 0
    assert run("status", "j1").returncode == 3


def test_a_job_being_published_is_found(env):
    # Between its commit and its move into failed/, a job's file is in its staging directory,
    # running/.ID@HOST.failed/ID.json: status (and cancel, wait) said "no job" if the
    # publication's fsyncs outlasted three quick looks (test_cli_nfs failed so under load).
    being_published_is_found(env, ".p9@hostZ.failed")


def test_a_job_being_published_in_a_batch_is_found(env):
    # The same in its batch's staging directory, running/.~SLOT@HOST.batch-failed/ID.json.
    being_published_is_found(env, ".~0@hostZ.batch-failed")


def test_a_job_in_a_batch_taken_over_is_its_hosts(env):
    # A batch's directory taken over by hostB from hostA, .~tPID-N.hostA@hostB.batch-failed/,
    # holds hostA's jobs: once the wait for its publication is over the job is hostA's (it said
    # hostB's, and looked for running/ID@hostB.json).
    d = env.daemon().start()
    d.stop()
    staging = d.path("running", ".~t12-0000000a.hostA@hostB.batch-failed")
    os.mkdir(staging)
    with open(os.path.join(staging, "p8.json"), "w") as f:
        f.write('{"prompt": "taken over"}')
    r = cli(d.spool, "status", "p8", timeout=120)
    assert r.returncode == 3 and r.stdout.strip() == "running on hostA", (r.returncode, r.stdout,
                                                                           r.stderr)


def being_published_is_found(env, staging_name):
    d = env.daemon().start()
    d.stop()
    staging = d.path("running", staging_name)
    os.mkdir(staging)
    with open(os.path.join(staging, "p9.result.json"), "w") as f:
        json.dump({"id": "p9", "status": "failed", "error": {"code": "cancelled"}}, f)
    with open(os.path.join(staging, "p9.json"), "w") as f:
        f.write('{"prompt": "being published"}')
    p = subprocess.Popen([IMGSPOOL, "-d", d.spool, "status", "p9"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)

    def sleeping_or_gone():
        if p.poll() is not None:
            return True
        # Asleep in nanosleep (the kernel's function, by name on every architecture: wchan is
        # "hrtimer_nanosleep" or "do_nanosleep"): it waits for the publication, having looked
        # everywhere. Nothing else in status sleeps so.
        try:
            with open(f"/proc/{p.pid}/wchan") as f:
                return "nanosleep" in f.read()
        except OSError:
            return False
    try:
        wait_for(sleeping_or_gone, 30, "status waiting on a job being published")
        assert p.poll() is None, (p.returncode, p.communicate())
        os.rename(os.path.join(staging, "p9.result.json"), d.path("failed", "p9.result.json"))
        os.rename(os.path.join(staging, "p9.json"), d.path("failed", "p9.json"))
        os.rmdir(staging)
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 1 and "failed" in out and "cancelled" in out, (p.returncode, out, err)


if __name__ == "__main__":
    run_tests([
        test_wait_and_status_say_what_is_wrong,
        test_help_version_unknown_command,
        test_submit_many_validates_and_waits,
        test_submit_holds_a_job_to_what_a_default_daemon_runs,
        test_submit_takes_a_daemons_larger_max_job_bytes,
        test_imgspool_config_names_the_daemons_configuration,
        test_ls_show_stat,
        test_hold_release_cancel_pending,
        test_a_job_file_too_big_to_read_is_not_cancelled,
        test_a_cancelled_jobs_result_is_bounded_whatever_its_file_says,
        test_a_job_the_daemon_may_take_is_cancelled_and_listed,
        test_ls_believes_of_the_records_what_the_daemon_does,
        test_cancel_running_cuts_the_call,
        test_cancel_while_the_transfer_thread_is_stuck,
        test_hold_running_at_its_next_transition,
        test_hold_of_a_job_a_crash_left_running,
        test_requests_read_are_honoured_before_the_provider_is_asked,
        test_a_retry_waiting_in_memory_is_held_with_its_due_time,
        test_a_cancel_of_a_job_a_crash_left_running_fails_it,
        test_pause_makes_no_call,
        test_retry_and_purge, test_retry_and_release_drop_old_requests,
        test_stat_shows_gone_webhooks_without_their_query,
        test_show_hides_a_jobs_webhook_credentials,
        test_show_prints_a_large_job_as_written,
        test_show_prints_no_control_byte_of_a_large_job,
        test_ls_parses_no_large_member_of_a_large_job,
        test_ls_reads_a_large_results_head_only,
        test_a_refused_verb_says_so,
        test_a_job_being_published_is_found,
        test_a_job_being_published_in_a_batch_is_found,
        test_a_job_in_a_batch_taken_over_is_its_hosts,
    ])
