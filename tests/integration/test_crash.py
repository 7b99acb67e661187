#!/usr/bin/env python3
"""Crash safety: kill -9 at random moments loses nothing and pays nothing twice (issue 4)."""
import hashlib
import os
import random
import re
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import run_tests, wait_for  # noqa: E402
from upstream import png_prompt_sha256  # noqa: E402

STATES = ("new", "running", "deferred", "done", "failed")


class SuccessWatcher(threading.Thread):
    """Follows the daemon's log; when a job's response is logged as arrived and successful, notes
    how many calls the fake had seen for it. No call may come after that moment."""

    LINE = re.compile(r"^(\S+) attempt \d+: HTTP 200 \(done\).*: succeeded$")

    def __init__(self, daemon, fake, prompt_of):
        super().__init__(daemon=True)
        self.daemon_, self.fake, self.prompt_of = daemon, fake, prompt_of
        self.calls_at_success = {}
        self.stop = threading.Event()

    def run(self):
        offset = 0
        while not self.stop.is_set():
            log = self.daemon_.log()
            for line in log[offset:].splitlines(keepends=True):
                if not line.endswith("\n"):
                    break
                offset += len(line)
                m = self.LINE.match(line.rstrip("\n"))
                if m and m.group(1) in self.prompt_of and m.group(1) not in self.calls_at_success:
                    self.calls_at_success[m.group(1)] = self.fake.calls(self.prompt_of[m.group(1)])
            time.sleep(0.01)


def test_kill_9_at_random_moments(env):
    seed = int(os.environ.get("CRASH_SEED", time.time()))
    rng = random.Random(seed)
    print(f"# crash test seed {seed} (CRASH_SEED={seed} to repeat)")
    d = env.daemon(spool__concurrency=16, retry__max_crash_requeues=50, retry__max_retries=4)
    kinds = ["b64"] * 6 + ["busy", "down", "mod", "safety", "url", "timeout_then_ok"]
    prompt_of, kind_of = {}, {}
    for i in range(300):
        task_id, prompt = f"c{i:03d}", f"crash-job-{i:03d}."
        kind = rng.choice(kinds)
        delay = round(rng.uniform(0.05, 0.8), 2)
        ok = {"kind": "b64", "delay": delay}
        steps = {"b64": [ok], "busy": ["429", ok], "down": ["503", ok],
                 "mod": [{"kind": "400_moderation", "delay": delay}],
                 "safety": [{"kind": "gemini_image_safety", "delay": delay}],
                 "url": [{"kind": "url", "delay": delay}],
                 "timeout_then_ok": [{"kind": "b64", "delay": 4}, ok]}[kind]
        env.fake.script(prompt, steps)
        prompt_of[task_id], kind_of[task_id] = prompt, kind
    d.start()
    watcher = SuccessWatcher(d, env.fake, prompt_of)
    watcher.start()
    for task_id, prompt in prompt_of.items():
        job = {"prompt": prompt, "timeout": 2}
        if kind_of[task_id] == "safety":
            job["model"] = "gemini-3-pro-image-preview"
        d.submit(task_id, job)

    def finished():
        return sum(1 for t in prompt_of if d.state(t) in ("done", "failed"))

    kills = 0
    while finished() < 300 and kills < 12:
        deadline = time.monotonic() + rng.uniform(0.2, 1.5)
        while time.monotonic() < deadline and finished() < 300:
            time.sleep(0.01)
        d.kill()          # SIGKILL
        kills += 1
        d.start()
    wait_for(lambda: finished() == 300, 180, "all 300 jobs to finish after the last restart")
    assert d.stop() == 0
    watcher.stop.set()
    watcher.join()
    print(f"# {kills} kills")

    log = d.log()
    for task_id, prompt in prompt_of.items():
        states = [s for s in STATES if os.path.exists(d.path(s, task_id + ".json"))]
        assert states in (["done"], ["failed"]), f"{task_id} is in {states}"
        # A kill between the final rename and its log line leaves 0 lines: never 2.
        finals = len(re.findall(rf"^{task_id} (done|failed):", log, re.M))
        assert finals <= 1, f"{task_id} was published {finals} times"
        r = d.result(task_id)
        if states == ["done"]:
            for name in r["images"]:
                got = png_prompt_sha256(d.read("done", name))
                assert got == hashlib.sha256(prompt.encode()).hexdigest(), f"{name}: wrong image"
        else:
            assert kind_of[task_id] in ("mod", "safety", "timeout_then_ok"), (task_id, r["error"])
        calls = env.fake.calls(prompt)
        if task_id in watcher.calls_at_success:
            assert calls == watcher.calls_at_success[task_id], (
                f"{task_id}: {calls} calls, but its response had arrived after "
                f"{watcher.calls_at_success[task_id]}")
        # Every call the fake saw is in the result: none is unaccounted for.
        assert len(r["attempts"]) >= calls, (task_id, len(r["attempts"]), calls)
    for state in ("done", "failed", "running", "deferred", "new"):
        hidden = [n for n in os.listdir(d.path(state)) if n.startswith(".")]
        assert hidden == [], f"leftover files in {state}/: {hidden[:5]}"


def test_poison_job_fails_after_max_crash_requeues(env):
    env.fake.script("poison", [{"kind": "b64", "delay": 60}])
    d = env.daemon(retry__max_crash_requeues=2).start()
    d.submit("poison", {"prompt": "poison"})
    for n in range(1, 4):
        wait_for(lambda: env.fake.calls("poison") == n, 10, f"call {n} to be in flight")
        d.kill()
        d.start()
    assert d.wait_finished("poison") == "failed"
    r = d.result("poison")
    assert r["error"]["code"] == "crashed", r["error"]
    # Every call the upstream saw is listed, the one the last death cut too.
    assert env.fake.calls("poison") == 3
    assert [a["outcome"] for a in r["attempts"]] == ["interrupted"] * 3, r["attempts"]
    assert all(a["billed"] == "unknown" for a in r["attempts"]), r["attempts"]
    assert r["billed_attempts"] == 3


def test_crashed_job_lists_its_paid_attempt(env):
    """A job killed past max_crash_requeues while publishing from its saved, paid response fails
    crashed; its paid call is in its attempts, billed with its cost (it used to list none), and
    no second call is made."""
    prompt = "paid, then publishing kills the daemon"
    env.fake.script(prompt, [{"kind": "b64"}])
    d = env.daemon(retry__max_crash_requeues=1, prices__currency="EUR", **{"prices__gpt-image-2": "0.04"})
    d.submit("paidcrash", {"prompt": prompt})
    d.start_to_crash("publish:images")
    d.start_to_crash("publish:images")
    d.start()
    assert d.wait_finished("paidcrash") == "failed", d.log()[-2000:]
    r = d.result("paidcrash")
    assert r["error"]["code"] == "crashed", r["error"]
    assert env.fake.calls(prompt) == 1
    assert len(r["attempts"]) == 1, r["attempts"]
    a = r["attempts"][0]
    assert a["http_status"] == 200 and a["billed"] == "yes", a
    assert a["cost"] == 0.04 and r["cost"]["amount"] == 0.04, (a, r["cost"])
    assert r["billed_attempts"] == 1, r
    assert d.stop() == 0


def test_deaths_during_calls_do_not_drop_a_paid_response(env):
    """A death during its first call, then one while publishing from its second, paid call's
    saved response: with max_crash_requeues = 1 the job is finished from that response (only
    deaths while it is finished from one count against it, for it calls nothing), not failed
    crashed with its paid images dropped."""
    prompt = "paid after a death in its first call"
    env.fake.script(prompt, [{"kind": "b64", "delay": 60}, {"kind": "b64"}])
    d = env.daemon(retry__max_crash_requeues=1).start()
    d.submit("paidlate", {"prompt": prompt})
    wait_for(lambda: env.fake.calls(prompt) == 1, 10, "the first call to be in flight")
    d.kill()
    d.start_to_crash("publish:images")
    d.start()
    assert d.wait_finished("paidlate") == "done", d.log()[-2000:]
    r = d.result("paidlate")
    assert env.fake.calls(prompt) == 2
    assert [a["outcome"] for a in r["attempts"]] == ["interrupted", "succeeded"], r["attempts"]
    assert d.stop() == 0


def test_poison_guard_holds_for_the_longest_id_and_host_id(env):
    """A 128-character id on a daemon with a 64-character host id: every record must still be
    written (the temporary name of ID@HOST.json used to pass 255 bytes)."""
    task_id = "p" * 128
    env.fake.script("long poison", [{"kind": "b64", "delay": 60}])
    d = env.daemon(retry__max_crash_requeues=1, spool__host_id="h" * 64).start()
    d.submit(task_id, {"prompt": "long poison"})
    for n in range(1, 3):
        wait_for(lambda: env.fake.calls("long poison") == n, 10, f"call {n} to be in flight")
        d.kill()
        d.start()
    assert d.wait_finished(task_id) == "failed"
    r = d.result(task_id)
    assert r["error"]["code"] == "crashed", r["error"]
    assert env.fake.calls("long poison") == 2
    d.assert_not_logged("File name too long")


def test_sigterm_during_a_hanging_download_keeps_the_paid_job(env):
    """The response is saved: a shutdown leaves the job in running/ for the restart, which
    downloads the image without calling again (it used to fail as download_failed)."""
    env.fake.script("slow image", [{"kind": "url", "url_hang_downloads": 1}])
    d = env.daemon(spool__grace_period=1, limits__download_timeout=600).start()
    d.submit("slowimg", {"prompt": "slow image"})
    wait_for(lambda: env.fake.downloads, 10, "the download to start")
    assert d.stop() == 0
    assert d.state("slowimg") == "running", d.state("slowimg")
    assert any(n.startswith(".slowimg@") and ".response." in n for n in os.listdir(d.path("running")))
    d.start()
    assert d.wait_finished("slowimg") == "done"
    assert env.fake.calls("slow image") == 1, "the paid call was made again"
    r = d.result("slowimg")
    assert r["status"] == "succeeded" and len(r["images"]) == 1, r


# Open files for 8 calls with no room for a .partial held open (slots.c: a socket a call, a
# reserve of 320 + limit/16; a .partial is held only above that): 349 = 8 + 320 + 21.
NO_PARTIAL_ROOM = ["prlimit", "--nofile=349:349", "--"]


def open_partials(pid):
    """How many .partial files process pid holds open."""
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            n += os.readlink(f"/proc/{pid}/fd/{fd}").endswith(".partial")
        except FileNotFoundError:
            pass
    return n


def test_kill_9_while_every_partial_is_closed(env):
    """Past the open files that a .partial held open needs (slots.c), a call's .partial gets its
    header and is closed, and the answer is written to it by name when it arrives. kill -9 at
    each step of that path (a call started with its .partial closed, an answer written into it,
    the answer saved, a job committed), then a restart under the same limit: every job ends
    done, nothing is left in running/, a job whose answer was saved or logged before the kill
    was called once, and every call the fake saw is in the job's attempts."""
    env.fake.default = {"kind": "b64", "delay": 0.3}
    # The first daemon shows the path is taken: 8 calls in flight, 8 .partial files, none open.
    d = env.daemon(spool__concurrency=8, wrapper=NO_PARTIAL_ROOM)
    d.submit("held", {"prompt": "calls in flight [fake:b64 delay=3]"})
    for i in range(7):
        d.submit(f"held{i}", {"prompt": f"calls in flight {i} [fake:b64 delay=3]"})
    d.start()
    partials = lambda: [n for n in os.listdir(d.path("running")) if n.endswith(".partial")]
    wait_for(lambda: len(partials()) == 8, 20, "8 calls in flight")
    assert open_partials(d.proc.pid) == 0, "a .partial is held open"
    assert d.stop() == 0
    for point in ("call:partial-closed#5", "call:answer-written#2", "save:response#2",
                  "publish:committed#2"):
        d = env.daemon(spool__concurrency=8, wrapper=NO_PARTIAL_ROOM)
        tag = point.split(":")[1].split("#")[0]
        jobs = {f"{tag}{i}": f"closed {tag} {i}." for i in range(12)}
        for task_id, prompt in jobs.items():
            d.submit(task_id, {"prompt": prompt})
        arrived = d.crash_and_restart(point, jobs)
        for task_id, prompt in jobs.items():
            assert d.wait_finished(task_id, 30) == "done", (point, task_id, d.log()[-2000:])
            attempts = d.result(task_id)["attempts"]
            calls = env.fake.calls(prompt)
            if task_id in arrived:
                assert calls == 1, (point, task_id, calls)
            assert [a["http_status"] for a in attempts][-1] == 200 and \
                all(a["outcome"] == "interrupted" for a in attempts[:-1]), (point, attempts)
            # A call killed before it went out is recorded interrupted too: never fewer.
            assert len(attempts) >= calls, (point, task_id, attempts, calls)
        wait_for(lambda: [n for n in os.listdir(d.path("running")) if not n.startswith(".host.")]
                 == [], 10, "nothing left in running/")
        assert d.listdir("failed") == [], (point, d.listdir("failed"))
        d.assert_not_logged("Too many open files")
        assert d.stop() == 0


def test_a_closed_partial_that_cannot_take_its_answer(env):
    """A closed .partial that cannot be opened again for its answer (here a symlink planted in
    its place, which O_NOFOLLOW refuses as deterministically as EMFILE would): the job goes on
    from memory, called once, and the log says why its response was not saved (it used to go
    on without a word, as if it were saved)."""
    d = env.daemon(spool__concurrency=8, wrapper=NO_PARTIAL_ROOM)
    prompt = "nowhere to write its answer [fake:b64 delay=3]"
    d.submit("nw", {"prompt": prompt})
    d.start()
    partials = lambda: [n for n in os.listdir(d.path("running")) if n.endswith(".partial")]
    wait_for(lambda: partials() and os.path.getsize(d.path("running", partials()[0])) > 0, 20,
             "its .partial with its header")
    assert open_partials(d.proc.pid) == 0, "its .partial is held open"
    planted = d.path("running", ".planted-by-the-test")
    os.symlink("nowhere", planted)
    os.replace(planted, d.path("running", partials()[0]))
    assert d.wait_finished("nw", 30) == "done", d.log()[-2000:]
    assert env.fake.calls(prompt) == 1
    wait_for(lambda: "nw error: cannot make its response durable (Too many levels of symbolic "
             "links): going on from memory" in d.log(), 10, "the save's failure logged")
    d.wait_logged("cannot open 'running/")
    wait_for(lambda: [n for n in os.listdir(d.path("running")) if not n.startswith(".host.")]
             == [], 10, "nothing left in running/")
    assert d.stop() == 0


def test_an_unreadable_job_of_ours_is_never_claimed_over(env):
    """The daemon dies with its job's paid answer saved; a client submits a later version of
    the id; the restart cannot read running/ur@testhost.json (strace makes its first open fail
    with EIO) on a file system without RENAME_NOREPLACE, as NFS and sshfs may be (strace makes
    every renameat2 naming it say EINVAL: the daemon then claims with a plain rename). Before,
    the id was neither held nor stranded, the later version was claimed over the file, and the
    first version's run, paid answer and records were lost (never published). Now the id is
    stranded until a rescan reads the file: the first version is finished from its saved
    answer and published, then the later one runs; each is called once."""
    d = env.daemon()
    first, later = "its first version, paid for before a kill", "its later version"
    d.submit("ur", {"prompt": first})
    d.start_to_crash("save:response")
    running = os.listdir(d.path("running"))
    assert "ur@testhost.json" in running and ".ur@testhost.response.200" in running, running
    d.submit("ur", {"prompt": later})
    trace = os.path.join(d.dir, "strace.log")
    d.wrapper = ["strace", "-f", "-qq", "-o", trace, "-P", "ur@testhost.json",
                 "-e", "trace=openat,renameat2", "-e", "inject=openat:error=EIO:when=1",
                 "-e", "inject=renameat2:error=EINVAL"]
    d.start(extra_env={"ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0"})
    d.wait_logged("ur error: cannot read 'running/ur@testhost.json'")
    d.wait_logged("ur recovered with its response (HTTP 200) saved before a restart")
    d.wait_logged(re.compile(r"^ur done: "), count=2, what="both versions published")
    assert env.fake.calls(first) == 1 and env.fake.calls(later) == 1
    with open(trace) as f:
        text = f.read()
    assert "openat" in text and "EIO (Input/output error) (INJECTED)" in text, text[-2000:]
    assert "EINVAL (Invalid argument) (INJECTED)" in text, text[-2000:]
    d.stop()   # the wrapper's status: strace gets the SIGTERM too


if __name__ == "__main__":
    run_tests([
        test_poison_job_fails_after_max_crash_requeues,
        test_crashed_job_lists_its_paid_attempt,
        test_deaths_during_calls_do_not_drop_a_paid_response,
        test_poison_guard_holds_for_the_longest_id_and_host_id,
        test_sigterm_during_a_hanging_download_keeps_the_paid_job,
        test_kill_9_at_random_moments,
        test_kill_9_while_every_partial_is_closed,
        test_a_closed_partial_that_cannot_take_its_answer,
        test_an_unreadable_job_of_ours_is_never_claimed_over,
    ])
