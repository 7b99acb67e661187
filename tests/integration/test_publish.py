#!/usr/bin/env python3
"""Publication: a reused id ends in exactly one state with only its own run's files; a directory
planted in the way ends the job with a reason instead of retrying for ever (issue 8, items 5, 6)."""
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import IMGSPOOL, held_at_stop, run_tests, wait_for  # noqa: E402
from test_groupcommit import Model, events  # noqa: E402


def files_of(d, state, task_id):
    return sorted(n for n in d.listdir(state) if n == task_id + ".json" or n.startswith(task_id + "."))


def test_a_reused_id_is_in_one_state_with_its_own_files(env):
    d = env.daemon().start()
    env.fake.script("first run", ["b64"])
    d.submit("reused", {"prompt": "first run", "n": 2})
    assert d.wait_finished("reused") == "done"
    assert files_of(d, "done", "reused") == ["reused.1.png", "reused.2.png", "reused.json",
                                              "reused.result.json"]
    env.fake.script("second run", ["400_moderation"])
    d.submit("reused", {"prompt": "second run"})
    wait_for(lambda: files_of(d, "failed", "reused") == ["reused.json", "reused.result.json"], 20,
             "the second run to fail")
    assert files_of(d, "done", "reused") == [], files_of(d, "done", "reused")
    assert d.state("reused") == "failed" and d.result("reused")["status"] == "failed"
    env.fake.script("third run", ["b64"])
    d.submit("reused", {"prompt": "third run"})
    wait_for(lambda: files_of(d, "done", "reused") == ["reused.json", "reused.png",
                                                      "reused.result.json"], 20, "the third run")
    assert files_of(d, "failed", "reused") == [], files_of(d, "failed", "reused")
    assert d.result("reused")["status"] == "succeeded"


def test_a_crash_between_an_earlier_runs_images_and_its_result_still_clears_them(env):
    """The earlier run's images leave before its result; a kill between the two is finished at
    the restart (a full search), and the reused id ends with only its own run's files."""
    d = env.daemon().start()
    env.fake.script("first run", ["b64"])
    d.submit("crashed", {"prompt": "first run", "n": 2})
    assert d.wait_finished("crashed") == "done"
    assert d.stop() == 0
    env.fake.script("second run", ["400_moderation"])
    d.submit("crashed", {"prompt": "second run"})
    d.start(wait_ready=False, extra_env={"IMGSPOOLD_CRASH_AT": "publish:cleared-images"})
    wait_for(d.exited, 20, "the daemon to kill itself between the images and the result")
    assert d.proc.returncode == -9, d.proc.returncode
    # The images are aside, the result (the evidence of the earlier run) still in done/.
    assert files_of(d, "done", "crashed") == ["crashed.result.json"], files_of(d, "done", "crashed")
    d.start()
    wait_for(lambda: files_of(d, "failed", "crashed") == ["crashed.json", "crashed.result.json"],
             20, "the second run to be published")
    assert files_of(d, "done", "crashed") == [], files_of(d, "done", "crashed")
    assert d.result("crashed")["status"] == "failed"
    wait_for(lambda: [n for n in os.listdir(d.path("running")) if not n.startswith(".host.")]
             == [], 10, "the staging directory to be removed")
    assert env.fake.calls("second run") == 1


def test_a_job_put_back_by_hand_clears_its_images_from_its_records(env):
    """Nothing but the job's own records shows the earlier run (its result was removed, its job
    file put back in new/): its images still leave."""
    d = env.daemon().start()
    env.fake.script("by hand", ["b64"])
    d.submit("byhand", {"prompt": "by hand", "n": 2})
    assert d.wait_finished("byhand") == "done"
    job = json.loads(d.read("done", "byhand.json"))
    assert job["imgspool"]["finished"] == "succeeded", job
    job["n"] = 1
    os.unlink(d.path("done", "byhand.result.json"))
    os.unlink(d.path("done", "byhand.json"))
    d.submit("byhand", job)
    wait_for(lambda: files_of(d, "done", "byhand") == ["byhand.json", "byhand.png",
                                                      "byhand.result.json"], 20, "the second run")
    assert json.loads(d.read("done", "byhand.json"))["imgspool"]["runs_total"] == 1


def test_a_directory_planted_at_the_result_ends_the_job_with_a_reason(env):
    d = env.daemon().start()
    os.makedirs(d.path("done", "planted.result.json", "inside"))
    d.submit("planted", {"prompt": "a paid image with nowhere to go"})
    assert d.wait_finished("planted") == "failed"
    err = d.result("planted")["error"]
    assert err["code"] == "publish_failed" and "is a directory" in err["message"], err
    assert d.result("planted")["images"] == ["planted.png"]
    assert os.path.exists(d.path("failed", "planted.png"))
    assert env.fake.calls("a paid image with nowhere to go") == 1
    d.assert_not_logged("retrying every")


def test_a_slow_fsync_does_not_cost_the_lease(env):
    """Every fsync of host A takes 3 s (strace injects the delay), longer than the 2 s lease:
    A must go on heartbeating the job it holds, so host B never takes it and calls again."""
    env.fake.script("slow disk", ["b64"])
    slow = ["strace", "-f", "-qq", "-o", "/dev/null", "-e", "trace=fsync",
            "-e", "inject=fsync:delay_enter=3000000"]
    settings = dict(spool__lease_timeout=2, spool__poll_interval=1)
    a = env.daemon(spool__host_id="hostA", wrapper=slow, **settings).start()
    a.submit("slowdisk", {"prompt": "slow disk"})
    wait_for(lambda: "slowdisk claimed" in a.log(), 20, "host A to claim the job")
    b = env.daemon(spool_dir=a.spool, spool__host_id="hostB", verbose=True, **settings).start()
    assert a.wait_finished("slowdisk", 90) == "done"
    assert env.fake.calls("slow disk") == 1, "host B took the job from a live host and paid again"
    b.assert_not_logged("reclaimed")


def test_the_heartbeat_touches_no_staging_directory_that_is_not_there(env):
    """A job being published is committed in its batch's directory (heartbeated by its slot);
    the heartbeat also touched running/.ID@HOST.done, which only a restart's commit makes: one
    failed system call per job being published per beat (strace: deterministic)."""
    d = env.daemon(spool__sync="fsync", spool__lease_timeout=2)
    log = os.path.join(d.dir, "strace.log")
    d.wrapper = ["strace", "-f", "-qq", "-o", log, "-e", "trace=utimensat,fsync",
                 "-e", "inject=fsync:delay_enter=300000"]
    d.submit("beaten", {"prompt": "published across heartbeats"})
    d.start()
    assert d.wait_finished("beaten", 60) == "done"
    d.stop()
    with open(log) as f:
        text = f.read()
    beats = re.findall(r'utimensat\(.*"\.~0@testhost\.batch-done"', text)
    assert beats, "no heartbeat of the batch's directory while it was published"
    wasted = re.findall(r'utimensat\(.*"\.beaten@testhost\.done".*ENOENT', text)
    assert not wasted, f"{len(wasted)} failed touches of a directory that is not there"


def test_renameat2_flags_an_sshfs_refuses_are_asked_once(env):
    """sshfs refuses renameat2's RENAME_EXCHANGE (EINVAL): the daemon falls back (a look, then a
    rename) and asks no more, instead of one refused call per job's final records (strace:
    deterministic)."""
    with env.two_mounts() as mounts:
        d = env.daemon(spool_dir=os.path.join(mounts.mount_a, "spool"))
        log = os.path.join(d.dir, "strace.log")
        d.wrapper = ["strace", "-f", "-qq", "-o", log, "-e", "trace=renameat2"]
        ids = ["flag1", "flag2", "flag3"]
        for task_id in ids:
            d.submit(task_id, {"prompt": "over sshfs " + task_id})
        d.start()
        for task_id in ids:
            assert d.wait_finished(task_id, 60) == "done"
        d.stop()
        with open(log) as f:
            text = f.read()
        for flag in ("RENAME_EXCHANGE", "RENAME_NOREPLACE"):
            refused = re.findall(rf"renameat2\(.*{flag}.*= -1 EINVAL", text)
            assert len(refused) <= 1, f"{flag} refused {len(refused)} times"
        assert "RENAME_EXCHANGE" in text, "the exchange was never tried"


def staging_of(d, task_id):
    """The staging directory in running/ where task_id's result is staged (its own or its
    batch's), or None."""
    for n in os.listdir(d.path("running")):
        if n.startswith(".") and os.path.exists(d.path("running", n, task_id + ".result.json")):
            return d.path("running", n)
    return None


def grow_past_read_cap(path):
    """Makes the staged result at path sparse past the read cap (64 MiB and 64 KiB); returns
    its text, to put back later."""
    with open(path) as f:
        text = f.read()
    with open(path, "a") as f:
        f.truncate(len(text) + (65 << 20))
    return text


def crashed_after_final_records(env, task_id, prompt):
    """Host "deadhost" dies (IMGSPOOLD_CRASH_AT) after writing the job's final records, before
    its commit: running/ holds the job file saying "finished", its staging directory and its
    saved response, all older than any lease, as a dead host leaves them."""
    dead = env.daemon(spool__host_id="deadhost")
    dead.submit(task_id, {"prompt": prompt})
    dead.start(wait_ready=False, extra_env={"IMGSPOOLD_CRASH_AT": "publish:rewritten"})
    wait_for(dead.exited, 20, "the dead host to kill itself")
    assert dead.proc.returncode == -9, dead.proc.returncode
    running = dead.path("running")
    names = os.listdir(running)
    assert f"{task_id}@deadhost.json" in names and staging_of(dead, task_id), names
    record = json.loads(dead.read("running", f"{task_id}@deadhost.json"))["imgspool"]
    assert record["finished"] == "succeeded", record
    old = time.time() - 3600
    for root, dirs, files in os.walk(running):
        for n in dirs + files:
            os.utime(os.path.join(root, n), (old, old), follow_symlinks=False)
    os.utime(running, (old, old))
    return dead


def check_taken_over(env, alive, task_id, prompt):
    assert alive.wait_finished(task_id, 30) == "done", alive.log()[-3000:]
    r = alive.result(task_id)
    assert [a["http_status"] for a in r["attempts"]] == [200], r["attempts"]
    assert env.fake.calls(prompt) == 1, "a job with a saved response was paid again"
    record = json.loads(alive.read("done", task_id + ".json"))["imgspool"]
    assert record["finished"] == "succeeded" and len(record["attempts"]) == 1, record
    assert os.listdir(alive.path("failed")) == []
    wait_for(lambda: [n for n in os.listdir(alive.path("running")) if not n.startswith(".host.")]
             == [], 10, "nothing of the job left in running/")
    alive.assert_not_logged("cannot finish publishing")


def test_a_job_reclaimed_between_its_final_records_and_its_commit_is_published(env):
    """The reclaimer takes the job's staging directory along with its job file (both are stale):
    the publication is finished from what the dead host staged, with no second call."""
    prompt = "dead between records and commit"
    dead = crashed_after_final_records(env, "recfin", prompt)
    alive = env.daemon(spool_dir=dead.spool, spool__host_id="alivehost",
                       spool__lease_timeout=2).start()
    check_taken_over(env, alive, "recfin", prompt)


def test_a_finished_job_whose_staging_is_gone_ends_from_its_saved_response(env):
    """Records say "finished" but nothing is staged (the staging directory was lost): the job
    is finished again from its saved response, not paid again, and ends in exactly one state
    (it looped for ever on "cannot finish publishing")."""
    prompt = "finished but nothing staged"
    dead = crashed_after_final_records(env, "nostage", prompt)
    shutil.rmtree(staging_of(dead, "nostage"))
    alive = env.daemon(spool_dir=dead.spool, spool__host_id="alivehost",
                       spool__lease_timeout=2).start()
    check_taken_over(env, alive, "nostage", prompt)


def test_a_finished_job_with_nothing_staged_nor_saved_fails_with_a_reason(env):
    """Neither staging nor saved response: the job fails with a reason, is never called again."""
    prompt = "finished with nothing left"
    dead = crashed_after_final_records(env, "nothing", prompt)
    shutil.rmtree(staging_of(dead, "nothing"))
    os.unlink(dead.path("running", ".nothing@deadhost.response.200"))
    alive = env.daemon(spool_dir=dead.spool, spool__host_id="alivehost",
                       spool__lease_timeout=2).start()
    assert alive.wait_finished("nothing", 30) == "failed", alive.log()[-3000:]
    err = alive.result("nothing")["error"]
    assert err["code"] == "publish_failed" and "staged" in err["message"], err
    assert env.fake.calls(prompt) == 1
    assert os.listdir(alive.path("done")) == []


def test_a_commit_made_by_a_restart_is_synced_in_its_staging_directory(env):
    """Killed after its final records, before its commit: the restart commits what is staged,
    and that commit (the job file's new entry in the staging directory) is durable before the
    job file moves into done/, as in a batch. It synced running/ alone."""
    d = env.daemon(spool__sync="fsync")
    d.submit("late", {"prompt": "committed by the restart"})
    d.start(wait_ready=False, extra_env={"IMGSPOOLD_CRASH_AT": "publish:rewritten"})
    wait_for(d.exited, 20, "the daemon to kill itself before the commit")
    assert d.proc.returncode == -9, d.proc.returncode
    log = os.path.join(d.dir, "strace.log")
    d.wrapper = ["strace", "-f", "-qq", "-y", "-o", log, "-e",
                 "trace=fsync,fdatasync,syncfs,rename,renameat,renameat2"]
    d.start()
    assert d.wait_finished("late") == "done"
    d.stop()
    m = Model(events(log), os.path.realpath(d.spool))
    staging = ".late@testhost.done"
    commit = m.last_rename(f"running/{staging}/late.json", 1 << 62,
                           lambda a: a == "running/late@testhost.json")
    pub = m.last_rename("done/late.json", 1 << 62, lambda a: a == f"running/{staging}/late.json")
    assert commit and pub and commit[1] < pub[0], (commit, pub)
    assert m.entry_durable(f"running/{staging}", commit[1], pub[0]), \
        "the commit was not synced in its staging directory before the job file moved into done/"
    assert env.fake.calls("committed by the restart") == 1


def assert_looked_up_once(env, ids, directory, name):
    """Jobs ids run to done/ under strace (deterministic): each job's directory/name(ID) was
    stat'ed exactly once."""
    d = env.daemon()
    log = os.path.join(d.dir, "strace.log")
    d.wrapper = ["strace", "-f", "-qq", "-y", "-o", log, "-e", "trace=newfstatat,statx"]
    for task_id in ids:
        d.submit(task_id, {"prompt": "looked up once " + task_id})
    d.start()
    for task_id in ids:
        assert d.wait_finished(task_id) == "done"
    d.stop()
    where = os.path.join(os.path.realpath(d.spool), directory)
    with open(log) as f:
        text = f.read()
    for task_id in ids:
        looks = re.findall(rf'<{re.escape(where)}>, "{re.escape(name(task_id))}"', text)
        assert len(looks) == 1, (task_id, len(looks))


def test_the_job_files_name_in_done_is_looked_up_once(env):
    """Whether done/ID.json is there is asked once per publication (check_targets), and the
    answer passed on to the removal of an earlier run's job files (strace: deterministic)."""
    assert_looked_up_once(env, ["once1", "once2", "once3"], "done", lambda i: f"{i}.json")


def test_the_job_file_in_running_is_looked_up_once(env):
    """A job's file in running/ is looked up once, by the claim (the inode it read); its
    publication does not look again: the rewrite of its records and its commit are the fence,
    and fail on a job reclaimed meanwhile (strace: deterministic)."""
    assert_looked_up_once(env, ["look1", "look2", "look3"], "running",
                          lambda i: f"{i}@testhost.json")


def test_a_directory_planted_after_the_check_is_waited_out_not_lost(env):
    """A directory planted in done/ at the job's image name after the daemon looked there (strace
    slows every fsync, so the planting falls between the look and the move in): the job is
    committed by then, so it is neither failed nor "lost to another daemon" (it was); it is
    finished from its staging directory once the directory is gone, with one call."""
    slow = ["strace", "-f", "-qq", "-o", "/dev/null", "-e", "trace=fsync",
            "-e", "inject=fsync:delay_enter=400000"]
    d = env.daemon(spool__sync="fsync", spool__disk_retry_interval=1, wrapper=slow).start()
    d.submit("late", {"prompt": "planted late"})

    def staging():
        return [n for n in os.listdir(d.path("running"))
                if n.startswith(".") and os.path.isdir(d.path("running", n))]
    wait_for(staging, 20, "its staging directory (made after the look into done/)")
    os.makedirs(d.path("done", "late.png", "inside"))
    wait_for(lambda: "its publication is committed" in d.log(), 30,
             "the failure past the commit to be said")
    d.assert_not_logged("lost the job")
    assert d.listdir("failed") == [], d.listdir("failed")
    shutil.rmtree(d.path("done", "late.png"))
    assert d.wait_finished("late", 30) == "done", d.log()[-2000:]
    assert files_of(d, "done", "late") == ["late.json", "late.png", "late.result.json"]
    assert [a["http_status"] for a in d.result("late")["attempts"]] == [200]
    assert env.fake.calls("planted late") == 1
    wait_for(lambda: [n for n in os.listdir(d.path("running")) if not n.startswith(".host.")
                      and not (n.startswith(".~") and not os.listdir(d.path("running", n)))]
             == [], 10, "nothing of the job left in running/")


def test_an_unreadable_staged_result_keeps_what_is_staged(env):
    """Killed past its commit; at the restart the staged result cannot be read (here: over the
    read cap, as EMFILE, EIO or ESTALE would do): that is no sign that it was moved in, so the
    job file is not moved into done/ alone and its paid images are not removed. Once it can be
    read again, the next start publishes all of it."""
    d = env.daemon()
    d.submit("unread", {"prompt": "unreadable result", "n": 2})
    d.start(wait_ready=False, extra_env={"IMGSPOOLD_CRASH_AT": "publish:committed"})
    wait_for(d.exited, 20, "the daemon to kill itself at its commit")
    assert d.proc.returncode == -9, d.proc.returncode
    staging = staging_of(d, "unread")
    result = os.path.join(staging, "unread.result.json")
    text = grow_past_read_cap(result)
    d.start()
    assert d.listdir("done") == [], d.listdir("done")   # the restart resumed before it was ready
    assert sorted(os.listdir(staging)) == ["unread.1.png", "unread.2.png", "unread.json",
                                           "unread.result.json"], os.listdir(staging)
    d.wait_logged("cannot read its staged result")
    assert d.stop() == 0
    with open(result, "w") as f:
        f.write(text)
    d.start()
    assert d.wait_finished("unread") == "done", d.log()[-2000:]
    assert files_of(d, "done", "unread") == ["unread.1.png", "unread.2.png", "unread.json",
                                             "unread.result.json"]
    assert env.fake.calls("unreadable result") == 1


def test_a_staged_result_not_laid_out_as_ours_is_read_whole(env):
    """A resume reads only the beginning of a staged result, where the daemon writes "images"
    (its own fields first, the metadata last). A result laid out otherwise, its images past that
    beginning, is read whole: its images are published with it all the same."""
    d = env.daemon()
    d.submit("reordered", {"prompt": "reordered result", "n": 2, "metadata": "m" * (200 << 10)})
    d.start(wait_ready=False, extra_env={"IMGSPOOLD_CRASH_AT": "publish:committed"})
    wait_for(d.exited, 20, "the daemon to kill itself at its commit")
    assert d.proc.returncode == -9, d.proc.returncode
    path = os.path.join(staging_of(d, "reordered"), "reordered.result.json")
    with open(path) as f:
        doc = json.load(f)
    images = doc.pop("images")
    assert images == ["reordered.1.png", "reordered.2.png"], images
    with open(path, "w") as f:   # the metadata first, then the rest: images 200 KiB in
        json.dump({"metadata": doc.pop("metadata"), **doc, "images": images}, f)
    d.start()
    assert d.wait_finished("reordered") == "done", d.log()[-2000:]
    assert files_of(d, "done", "reordered") == ["reordered.1.png", "reordered.2.png",
                                                "reordered.json", "reordered.result.json"]
    assert env.fake.calls("reordered result") == 1
    assert d.stop() == 0


def test_a_result_of_the_largest_job_is_read_back_after_a_crash(env):
    """A result held the job's metadata as jansson printed it, indented: about 30 times the
    job's bytes nested deep, so with max_job_bytes past about 2 MiB a result could pass what is
    read back (64 MiB and 64 KiB): a restart killed past its commit could not finish it (the job
    stayed in running/ for ever), nor could imgspool show it. The metadata is now the client's
    bytes: a result is at most the job's bytes and 64 KiB, whatever max_job_bytes."""
    ceiling = 64 << 20
    d = env.daemon(limits__max_job_bytes=ceiling)
    # max_depth 32: the job, metadata, "deep", then 28 levels around each number.
    unit = "[" * 28 + "0.5" + "]" * 28
    deep = "[" + ",".join([unit] * ((2 << 20) // (len(unit) + 1))) + "]"
    head = '{"prompt":"the largest result","metadata":{"deep":' + deep + ',"pad":"'
    tail = '"}}'
    job = head + "p" * (ceiling - 4096 - len(head) - len(tail)) + tail
    assert ceiling - 8192 < len(job) <= ceiling
    d.submit("largest", job)
    d.start(wait_ready=False, extra_env={"IMGSPOOLD_CRASH_AT": "publish:committed"})
    wait_for(d.exited, 180, "the daemon to kill itself at its commit")
    assert d.proc.returncode == -9, d.proc.returncode
    staged = os.path.getsize(os.path.join(staging_of(d, "largest"), "largest.result.json"))
    assert staged <= len(job) + (64 << 10), (staged, len(job))
    d.start(wait_ready=False)   # the resume comes before "ready": 64 MiB read back under ASan
    wait_for(lambda: "imgspoold: ready" in d.log()[d.log_offset:] or d.exited(), 180,
             "the daemon to be ready")
    assert not d.exited(), d.log()[-2000:]
    assert d.wait_finished("largest", 180) == "done", d.log()[-2000:]
    meta = json.loads(job)["metadata"]
    assert d.result("largest")["metadata"] == meta
    r = subprocess.run([IMGSPOOL, "-d", d.spool, "show", "largest"], capture_output=True,
                       stdin=subprocess.DEVNULL, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    shown = r.stdout.decode()
    assert "\nresult:\n{" in shown and "(missing or not JSON)" not in shown, shown[-300:]
    assert env.fake.calls("the largest result") == 1
    assert d.stop() == 0


def test_a_committed_job_a_restart_could_not_finish_is_finished_at_a_rescan(env):
    """The restart cannot finish a committed job (its staged result unreadable for a while): a
    rescan tries again once it can, instead of keeping the job "being published" for ever."""
    d = env.daemon(spool__poll_interval=1)
    d.submit("later", {"prompt": "finished at a rescan", "n": 2})
    d.start(wait_ready=False, extra_env={"IMGSPOOLD_CRASH_AT": "publish:committed"})
    wait_for(d.exited, 20, "the daemon to kill itself at its commit")
    assert d.proc.returncode == -9, d.proc.returncode
    result = os.path.join(staging_of(d, "later"), "later.result.json")
    text = grow_past_read_cap(result)
    d.start()
    assert d.listdir("done") == [], d.log()[-2000:]
    d.wait_logged("cannot read its staged result")
    with open(result, "w") as f:
        f.write(text)
    assert d.wait_finished("later", 20) == "done", d.log()[-2000:]
    assert files_of(d, "done", "later") == ["later.1.png", "later.2.png", "later.json",
                                            "later.result.json"]
    assert env.fake.calls("finished at a rescan") == 1
    wait_for(lambda: [n for n in os.listdir(d.path("running")) if not n.startswith(".host.")]
             == [], 10, "nothing of the job left in running/")


def test_what_a_failed_try_put_aside_goes_when_a_retry_finishes(env):
    """A reused id: the try that cleared the earlier run's files (ID.old.N in the batch's
    directory) is killed; the restart cannot finish it (its staged result unreadable for a
    while), a rescan does. Every ID.old.N goes with it: the later try puts nothing aside (it
    counts from 0 again) and the batch's directory stayed for ever."""
    d = env.daemon(spool__poll_interval=1).start()
    env.fake.script("aside first", ["b64"])
    d.submit("aside", {"prompt": "aside first", "n": 2})
    assert d.wait_finished("aside") == "done"
    assert d.stop() == 0
    d.submit("aside", {"prompt": "aside second"})
    d.start(wait_ready=False, extra_env={"IMGSPOOLD_CRASH_AT": "publish:cleared-images"})
    wait_for(d.exited, 20, "the daemon to kill itself after putting the earlier run aside")
    assert d.proc.returncode == -9, d.proc.returncode
    staging = staging_of(d, "aside")
    assert any(".old." in n for n in os.listdir(staging)), os.listdir(staging)
    result = os.path.join(staging, "aside.result.json")
    text = grow_past_read_cap(result)
    d.start()
    d.wait_logged("cannot read its staged result")
    with open(result, "w") as f:
        f.write(text)
    wait_for(lambda: files_of(d, "done", "aside") == ["aside.json", "aside.png",
                                                      "aside.result.json"], 20, "the second run")
    try:
        wait_for(lambda: [n for n in os.listdir(d.path("running")) if not n.startswith(".host.")]
                 == [], 10, "nothing left in running/")
    except AssertionError:
        raise AssertionError(f"left: {[(r, f) for r, _, f in os.walk(d.path('running'))]}")


def batch_files(d):
    """{batch directory: its names} for the batches' staging directories in running/."""
    running = d.path("running")
    return {n: sorted(os.listdir(os.path.join(running, n))) for n in os.listdir(running)
            if n.startswith(".~") and os.path.isdir(os.path.join(running, n))}


def kill_at_second_commit(env, d, prefix):
    """Six jobs, the daemon killed at its second commit (IMGSPOOLD_CRASH_AT): a batch's staging
    directory then holds committed jobs and jobs whose records say finished, not committed.
    Returns the jobs and those whose answer had arrived (saved or logged) before the kill."""
    jobs = {f"{prefix}{i}": f"batch {prefix} {i}." for i in range(6)}
    for task_id, prompt in jobs.items():
        d.submit(task_id, {"prompt": prompt})
    d.start(wait_ready=False, extra_env={"IMGSPOOLD_CRASH_AT": "publish:committed#2"})
    wait_for(d.exited, 30, "the daemon to kill itself at its second commit")
    assert d.proc.returncode == -9, d.proc.returncode
    assert batch_files(d), os.listdir(d.path("running"))
    answered = {t for t in jobs if re.search(rf"^{t} attempt 1: HTTP 200", d.log(), re.M) or
                any(n.startswith(f".{t}@") and ".response." in n
                    for n in os.listdir(d.path("running")))}
    return jobs, answered


def check_ended_as_no_kill(env, d, jobs, answered):
    """Every job in done/ with one call if its answer had arrived before a kill (else its cut
    calls recorded interrupted), and nothing of any left in running/."""
    for task_id, prompt in jobs.items():
        assert d.wait_finished(task_id, 30) == "done", (task_id, d.log()[-3000:])
        attempts = d.result(task_id)["attempts"]
        statuses = [a["http_status"] for a in attempts]
        if task_id in answered:
            assert statuses == [200], (task_id, attempts)
        else:
            assert statuses[-1] == 200 and all(a["outcome"] == "interrupted"
                                               for a in attempts[:-1]), (task_id, attempts)
        assert env.fake.calls(prompt) == len(statuses), (task_id, env.fake.calls(prompt))
        record = json.loads(d.read("done", task_id + ".json"))["imgspool"]
        assert record["finished"] == "succeeded", record
    try:
        wait_for(lambda: [n for n in os.listdir(d.path("running")) if not n.startswith(".host.")]
                 == [], 10, "nothing left in running/")
    except AssertionError:
        raise AssertionError(f"left in running/: {os.listdir(d.path('running'))}")
    assert d.listdir("failed") == [], d.listdir("failed")


def test_a_kill_while_a_batch_is_resumed_ends_as_no_kill(env):
    """A restart finishes a batch's committed jobs from its staging directory and gives each job
    not committed (its records say finished) its staged files in a directory of its own; a kill
    -9 in the middle of either (publish:batch-finished, publish:split) changes nothing: the next
    start ends every job as no kill would have."""
    d = env.daemon(spool__concurrency=8)
    jobs, answered = kill_at_second_commit(env, d, "rb")
    left = [n for names in batch_files(d).values() for n in names]
    committed = [n for n in left if n.endswith(".json") and not n.endswith(".result.json")]
    staged_only = [n for n in left if n.endswith(".result.json") and
                   n[:-len(".result.json")] + ".json" not in left]
    kills = 0
    for point, wanted in (("publish:batch-finished", committed), ("publish:split", staged_only)):
        if not wanted:
            continue
        d.start(wait_ready=False, extra_env={"IMGSPOOLD_CRASH_AT": point})
        # With several batches, the restart killed at the first point may have split every
        # job already (batches are resumed in any order): then nothing is left to kill at.
        wait_for(lambda: d.exited() or all(d.state(t) == "done" for t in jobs), 30,
                 f"the restart to kill itself at {point}, or to end every job")
        if not d.exited():
            assert d.stop() == 0
            continue
        assert d.proc.returncode == -9, (point, d.proc.returncode, d.log()[-2000:])
        kills += 1
    print(f"# {len(committed)} committed, {len(staged_only)} staged only; {kills} kills")
    assert kills, left
    d.start()
    check_ended_as_no_kill(env, d, jobs, answered)


def test_a_restart_reads_a_batchs_directory_twice_however_many_jobs_it_finishes(env):
    """A restart lists a batch's staging directory once to find its jobs and once to empty it
    (its sweep also takes the earlier runs' files put aside, ID.old.N), not once more for every
    committed job it finishes; and a rescan does not list the directories its helper threads
    stage in, holding no job that a task does not (strace: deterministic)."""
    d = env.daemon(spool__concurrency=8)
    jobs, answered = kill_at_second_commit(env, d, "rd")
    log = os.path.join(d.dir, "strace.log")
    d.wrapper = ["strace", "-f", "-qq", "-y", "-o", log, "-e", "trace=getdents64"]
    d.start()
    check_ended_as_no_kill(env, d, jobs, answered)
    d.stop()
    reads = collections.Counter()
    with open(log) as f:
        for batch in re.findall(r"getdents64\(\d+<[^>]*/running/(\.~[^>/]*)>, .* = [1-9]",
                                f.read()):
            reads[batch] += 1
    assert reads and all(n == 2 for n in reads.values()), reads


def take_over_a_dead_hosts_batch(env, dead_spool, alive_spool, prefix, kill_taker=False):
    dead = env.daemon(spool_dir=dead_spool, spool__host_id="deadhost", spool__concurrency=8)
    jobs, answered = kill_at_second_commit(env, dead, prefix)
    old = time.time() - 3600
    for root, dirs, files in os.walk(dead.path("running")):
        for n in dirs + files:
            os.utime(os.path.join(root, n), (old, old), follow_symlinks=False)
    alive = env.daemon(spool_dir=alive_spool, spool__host_id="alivehost", spool__lease_timeout=2)
    if kill_taker:
        # Killed right after its takeover's rename: its restart finishes the batch as its own.
        alive.start(wait_ready=False, extra_env={"IMGSPOOLD_CRASH_AT": "publish:taken"})
        wait_for(alive.exited, 30, "the taker to kill itself after its rename")
        assert alive.proc.returncode == -9, alive.proc.returncode
    alive.start()
    check_ended_as_no_kill(env, alive, jobs, answered)
    alive.wait_logged("took over the publications of 'deadhost'")


def test_a_dead_hosts_batch_is_taken_over(env):
    """Host "deadhost" dies at its second commit of a batch: another host takes the batch's
    staging directory over (one rename), finishes its committed jobs and reclaims the others
    with their staged files; nothing is paid twice and nothing is left in running/, though the
    taker itself is killed right after its rename (publish:taken) and restarted."""
    d = os.path.join(tempfile.mkdtemp(prefix="imgspool-batch-"), "spool")
    try:
        take_over_a_dead_hosts_batch(env, d, d, "tk", kill_taker=True)
    finally:
        for x in env.daemons:
            x.kill()
        shutil.rmtree(os.path.dirname(d), ignore_errors=True)


def test_a_dead_hosts_batch_is_taken_over_through_sshfs(env):
    """The same with each host on its own sshfs mount of the spool (a stand-in for NFS)."""
    with env.two_mounts() as mounts:
        take_over_a_dead_hosts_batch(env, os.path.join(mounts.mount_a, "spool"),
                                     os.path.join(mounts.mount_b, "spool"), "ts")


def make_old(root, keep=()):
    old = time.time() - 3600
    for top, dirs, files in os.walk(root):
        for n in dirs + files:
            if n not in keep:
                os.utime(os.path.join(top, n), (old, old), follow_symlinks=False)

def answered_then_dead(env, task_id, prompt, spool_dir=None):
    """Host A dies (IMGSPOOLD_CRASH_AT save:response) with the job's paid answer saved
    (running/.ID@hostA.response.200), everything of it older than any lease."""
    a = env.daemon(spool__host_id="hostA", spool_dir=spool_dir)
    a.submit(task_id, {"prompt": prompt})
    a.start_to_crash("save:response")
    names = os.listdir(a.path("running"))
    assert f"{task_id}@hostA.json" in names and f".{task_id}@hostA.response.200" in names, names
    make_old(a.path("running"))
    return a


def test_a_reclaimer_killed_before_taking_the_saved_answer_along_pays_nothing_again(env):
    """Host A dies with its job's paid answer saved; host B reclaims the job and is killed
    right after the rename of its job file (reclaim:renamed), before A's files of it are
    renamed along. Before, B's restart looked only for files under its own name: the job went
    back to new/ and was called again, and A's saved answer was removed as an orphan. Now B's
    mark (.pt@hostB.reclaim.hostA) says whose files are left to take: the restart takes them
    and finishes the job from the saved answer, with no second call."""
    prompt = "answered, then its reclaimer killed"
    a = answered_then_dead(env, "pt", prompt)
    b = env.daemon(spool_dir=a.spool, spool__host_id="hostB", spool__lease_timeout=5)
    b.start_to_crash("reclaim:renamed")
    names = os.listdir(b.path("running"))
    assert "pt@hostB.json" in names and ".pt@hostA.response.200" in names, names
    b.start()
    assert b.wait_finished("pt", 30) == "done", b.log()[-3000:]
    assert env.fake.calls(prompt) == 1, "a saved answer was paid again"
    b.wait_logged("pt warning: its reclaim from 'hostA' was cut before")
    assert [x["http_status"] for x in b.result("pt")["attempts"]] == [200]
    wait_for(lambda: [n for n in os.listdir(b.path("running")) if not n.startswith(".host.")]
             == [], 10, "nothing of the job left in running/")
    assert b.stop() == 0


def test_a_stalled_reclaimer_leaves_the_saved_answer_to_the_job(env):
    """As above, but host B stalls after its rename (IMGSPOOLD_STOP_AT reclaim:renamed), and
    host A comes back meanwhile. Before, A's restart removed its saved answer as the file of a
    job no longer running/pt@hostA.json, then reclaimed the job from the stalled B and called
    again. Now A keeps it while B's mark says a reclaim will take it, reclaims the job once
    B's lease ran out, finds its answer and calls nothing; B, going on, takes nothing."""
    prompt = "answered, then its reclaimer stalled"
    a = answered_then_dead(env, "ps", prompt)
    b = env.daemon(spool_dir=a.spool, spool__host_id="hostB", spool__lease_timeout=5)
    fifo = b.start_held_at("reclaim:renamed", wait_ready=False)
    held = held_at_stop(fifo, b)
    try:
        names = os.listdir(b.path("running"))
        assert "ps@hostB.json" in names and ".ps@hostA.response.200" in names, names
        again = env.daemon(spool_dir=a.spool, spool__host_id="hostA",
                           spool__lease_timeout=5).start()
        assert again.wait_finished("ps", 30) == "done", again.log()[-3000:]
        again.wait_logged("ps warning: reclaimed from 'hostB'")
    finally:
        os.close(held)
    assert env.fake.calls(prompt) == 1, "a saved answer was paid again"
    assert [x["http_status"] for x in again.result("ps")["attempts"]] == [200]
    wait_for(lambda: [n for n in os.listdir(b.path("running")) if not n.startswith(".host.")]
             == [], 10, "nothing of the job left in running/")
    assert again.stop() == 0 and b.stop() == 0



def test_a_batch_taken_over_twice_keeps_whose_jobs_it_holds(env):
    """Host "deadhost" dies at its second commit; "bhost" takes its batch's directory over and
    dies right after the rename; "chost" takes it from bhost. The directory still holds
    deadhost's jobs (it was named for bhost's, whose job files do not exist, so the jobs not
    committed lost what they staged), and bhost's or deadhost's temporary files younger than a
    lease are not removed for not being chost's."""
    d = os.path.join(tempfile.mkdtemp(prefix="imgspool-batch-"), "spool")
    try:
        dead = env.daemon(spool_dir=d, spool__host_id="deadhost", spool__concurrency=8)
        jobs, answered = kill_at_second_commit(env, dead, "tw")
        make_old(dead.path("running"))
        b = env.daemon(spool_dir=d, spool__host_id="bhost", spool__lease_timeout=2,
                       spool__poll_interval=1)
        b.start(wait_ready=False, extra_env={"IMGSPOOLD_CRASH_AT": "publish:taken"})
        wait_for(b.exited, 30, "bhost to kill itself after its takeover's rename")
        assert b.proc.returncode == -9, b.proc.returncode
        assert any("deadhost@bhost" in n for n in batch_files(b)), batch_files(b)
        make_old(b.path("running"))
        fresh = [".tw9.json.bhost.1f2e.abcd.tmp", ".tw9.json.deadhost.1f2f.abce.tmp"]
        for n in fresh + [".tw8.json.deadhost.1f30.abcf.tmp"]:
            with open(b.path("running", n), "w") as f:
                f.write("being written")
        make_old(b.path("running"), keep=fresh)
        c = env.daemon(spool_dir=d, spool__host_id="chost", spool__lease_timeout=2,
                       spool__poll_interval=1).start()
        wait_for(lambda: "took over the publications of" in c.log(), 30, "chost's takeover")
        c.wait_logged("took over the publications of 'deadhost'")
        c.assert_not_logged("publications of 'bhost'")
        wait_for(lambda: not os.path.exists(c.path("running", ".tw8.json.deadhost.1f30.abcf.tmp")),
                 20, "deadhost's old temporary file to go")
        for n in fresh:
            assert os.path.exists(c.path("running", n)), f"{n} removed while younger than a lease"
            os.unlink(c.path("running", n))
        check_ended_as_no_kill(env, c, jobs, answered)
        c.assert_not_logged("nothing of its publication is staged")
    finally:
        for x in env.daemons:
            x.kill()
        shutil.rmtree(os.path.dirname(d), ignore_errors=True)


def test_a_job_reclaimed_from_a_live_hosts_batch_takes_its_staged_files(env):
    """A job whose records say finished is reclaimed while its host's batch directory is still
    heartbeated (the host stalled between its final records and its commit: the directory's
    mtime is newer than the job file's). Its reclaimer takes its staged files out of that batch
    and publishes them: without a saved response they were its only copy (it failed
    "publish_failed" though paid)."""
    prompt = "reclaimed from a live batch"
    a = env.daemon(spool__host_id="deadhost")
    a.submit("lv", {"prompt": prompt, "n": 2})
    a.start(wait_ready=False, extra_env={"IMGSPOOLD_CRASH_AT": "publish:rewritten"})
    wait_for(a.exited, 20, "the host to stop before its commit")
    assert a.proc.returncode == -9, a.proc.returncode
    batch = staging_of(a, "lv")
    assert batch and os.path.basename(batch).startswith(".~"), batch
    for n in os.listdir(a.path("running")):
        if n.startswith(".lv@deadhost.response."):
            os.unlink(a.path("running", n))
    make_old(a.path("running"), keep={os.path.basename(batch)})
    b = env.daemon(spool_dir=a.spool, spool__host_id="alivehost", spool__lease_timeout=5,
                   spool__poll_interval=1).start()
    assert b.wait_finished("lv", 30) == "done", b.log()[-3000:]
    assert files_of(b, "done", "lv") == ["lv.1.png", "lv.2.png", "lv.json", "lv.result.json"]
    assert env.fake.calls(prompt) == 1
    wait_for(lambda: [n for n in os.listdir(b.path("running")) if not n.startswith(".host.")]
             == [], 20, "nothing of the job left in running/")


def test_a_retried_publication_leaves_a_restart_no_half_written_result(env):
    """The commit's rename fails once (EIO, injected): the job's records already say finished
    and the pass's staged files are removed, so the retry stages them again. A kill in the
    retry's write of the result (the second write to its staged name) must leave a restart
    nothing half-written to publish: a result written there in place (as 17f50bf did) was
    published 0 bytes long, its paid image swept."""
    prompt = "a commit that fails once"
    d = env.daemon(spool__io_threads=1, spool__concurrency=1, spool__disk_retry_interval=1)
    staged = os.path.join(os.path.realpath(d.path("running")), ".~0@testhost.batch-done")
    trace = os.path.join(d.dir, "strace.log")
    d.wrapper = ["strace", "-f", "-qq", "-o", trace,
                 "-P", ".~0@testhost.batch-done/cf.json", "-P", staged + "/cf.result.json",
                 "-e", "trace=renameat,write", "-e", "inject=renameat:error=EIO:when=1",
                 "-e", "inject=write:signal=KILL:when=2"]
    d.submit("cf", {"prompt": prompt})
    d.start()
    wait_for(lambda: d.exited() or d.state("cf") == "done", 60, "the retry to be killed or publish")
    with open(trace) as f:
        commit = next(line for line in f if "cf.json" in line and "renameat(" in line)
    assert "(INJECTED)" in commit, commit
    d.wait_logged("cannot move the job file from 'running/cf@testhost.json': Input/output error")
    if d.exited():   # killed in the retry's write of its staged result
        print("# killed in the retry's staging; restarting")
        d.wrapper = []
        d.start()
    assert d.wait_finished("cf", 30) == "done", d.log()[-3000:]
    body = d.read("done", "cf.result.json")
    assert body.startswith(b"{"), f"a broken result was published: {body[:200]!r}"
    r = d.result("cf")
    assert r["status"] == "succeeded" and r["images"] == ["cf.png"], r
    assert d.read("done", "cf.png").startswith(b"\x89PNG"), "the paid image was lost"
    assert env.fake.calls(prompt) == 1, "the paid call was made again"
    d.stop()


def put_back(d, task_id):
    r = subprocess.run([IMGSPOOL, "-d", d.spool, "retry", "--again", task_id],
                       capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    assert r.returncode == 0, r


def test_a_job_put_back_and_killed_in_its_call_records_the_call_interrupted(env):
    """A done job put back (imgspool retry --again) starts a new run: killed while its call is in
    flight, the restart records that call interrupted and runs the job again (§10), as any job.
    Its file in running/ held the old run's "finished" until the next move, so the restart took
    the job for a cut publication and failed it publish_failed."""
    prompt = "put back, killed in its call"
    env.fake.script(prompt, [{"kind": "b64"}, {"kind": "b64", "delay": 20}, {"kind": "b64"}])
    d = env.daemon().start()
    d.submit("rc", {"prompt": prompt})
    assert d.wait_finished("rc") == "done"
    put_back(d, "rc")
    wait_for(lambda: os.path.exists(d.path("running", ".rc@testhost.partial")), 20,
             "the new run's call to be in flight")
    d.kill()
    d.start()
    assert d.wait_finished("rc", 30) == "done", d.log()[-3000:]
    r = d.result("rc")
    assert [a["outcome"] for a in r["attempts"]][:1] == ["interrupted"] and \
        len(r["attempts"]) == 2, r["attempts"]
    assert env.fake.calls(prompt) == 3
    runs = json.loads(d.read("done", "rc.json"))["imgspool"]["runs"]
    assert [run["status"] for run in runs] == ["succeeded"], runs
    d.stop()


def test_a_job_put_back_and_killed_publishing_keeps_its_paid_image(env):
    """Killed while the new run of a job put back stages its image (its paid answer saved as
    .response.200, attempt 1 of the run): the restart finishes it from that answer, not called
    again. The old run's "finished" (two attempts) in running/ made the restart take the answer
    for one already accounted for and fail the job with no image."""
    prompt = "put back, killed publishing"
    env.fake.script(prompt, ["503", {"kind": "b64"}, {"kind": "b64"}])
    d = env.daemon().start()
    d.submit("ri", {"prompt": prompt})
    assert d.wait_finished("ri") == "done"
    d.stop()
    put_back(d, "ri")
    d.start_to_crash("publish:images")
    assert any(".response.200" in n for n in os.listdir(d.path("running")))
    d.start()
    assert d.wait_finished("ri", 30) == "done", d.log()[-3000:]
    r = d.result("ri")
    assert r["images"] == ["ri.png"] and len(r["attempts"]) == 1, r
    assert d.read("done", "ri.png").startswith(b"\x89PNG")
    assert env.fake.calls(prompt) == 3, "the new run's paid call was made again"
    d.stop()


def test_a_broken_staged_result_is_never_published(env):
    """Records that say finished and a staged result cut short (a 0-byte file, as a kill in its
    write left it before staging went through temporary names): the restart does not commit it
    but finishes the job again from its saved response, its image whole, no second call."""
    prompt = "a staged result cut short"
    d = env.daemon()
    d.submit("cut", {"prompt": prompt})
    d.start_to_crash("publish:rewritten")
    staged = staging_of(d, "cut")
    with open(os.path.join(staged, "cut.result.json"), "w"):
        pass
    d.start()
    assert d.wait_finished("cut", 30) == "done", d.log()[-3000:]
    body = d.read("done", "cut.result.json")
    assert body.startswith(b"{"), f"a broken result was published: {body[:200]!r}"
    assert d.result("cut")["images"] == ["cut.png"]
    assert d.read("done", "cut.png").startswith(b"\x89PNG")
    assert env.fake.calls(prompt) == 1
    d.wait_logged(re.compile(r"^cut error: its records say it succeeded, but its staged "
                             r"publication is broken \(its result is not JSON \(0 bytes\)"))
    d.stop()


if __name__ == "__main__":
    run_tests([
        test_a_reused_id_is_in_one_state_with_its_own_files,
        test_a_crash_between_an_earlier_runs_images_and_its_result_still_clears_them,
        test_a_job_put_back_by_hand_clears_its_images_from_its_records,
        test_a_directory_planted_at_the_result_ends_the_job_with_a_reason,
        test_a_slow_fsync_does_not_cost_the_lease,
        test_the_heartbeat_touches_no_staging_directory_that_is_not_there,
        test_renameat2_flags_an_sshfs_refuses_are_asked_once,
        test_a_job_reclaimed_between_its_final_records_and_its_commit_is_published,
        test_a_reclaimer_killed_before_taking_the_saved_answer_along_pays_nothing_again,
        test_a_stalled_reclaimer_leaves_the_saved_answer_to_the_job,
        test_a_finished_job_whose_staging_is_gone_ends_from_its_saved_response,
        test_a_finished_job_with_nothing_staged_nor_saved_fails_with_a_reason,
        test_a_commit_made_by_a_restart_is_synced_in_its_staging_directory,
        test_the_job_files_name_in_done_is_looked_up_once,
        test_the_job_file_in_running_is_looked_up_once,
        test_a_directory_planted_after_the_check_is_waited_out_not_lost,
        test_an_unreadable_staged_result_keeps_what_is_staged,
        test_a_staged_result_not_laid_out_as_ours_is_read_whole,
        test_a_result_of_the_largest_job_is_read_back_after_a_crash,
        test_a_kill_while_a_batch_is_resumed_ends_as_no_kill,
        test_a_restart_reads_a_batchs_directory_twice_however_many_jobs_it_finishes,
        test_a_dead_hosts_batch_is_taken_over,
        test_a_dead_hosts_batch_is_taken_over_through_sshfs,
        test_a_committed_job_a_restart_could_not_finish_is_finished_at_a_rescan,
        test_what_a_failed_try_put_aside_goes_when_a_retry_finishes,
        test_a_batch_taken_over_twice_keeps_whose_jobs_it_holds,
        test_a_job_reclaimed_from_a_live_hosts_batch_takes_its_staged_files,
        test_a_retried_publication_leaves_a_restart_no_half_written_result,
        test_a_job_put_back_and_killed_in_its_call_records_the_call_interrupted,
        test_a_job_put_back_and_killed_publishing_keeps_its_paid_image,
        test_a_broken_staged_result_is_never_published,
    ])
