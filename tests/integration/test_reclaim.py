#!/usr/bin/env python3
"""Reclaiming a dead host's jobs (spool-layout.md §10): the mark that says whose files are left
to take is durable before the renames it guards, and the renames before it goes; a reclaimer
that stalls in its reclaim takes nothing of a job another host reclaimed from it meanwhile.

A kill -9 does not drop the page cache, so a crash test cannot see a missing fsync: the order is
proved from the system calls, under strace -f -y (each fd with its path), as test_groupcommit
does for publications."""
import os
import re
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import LoopExt4, Tmpfs, held_at_stop, run_tests, wait_for  # noqa: E402
from test_publish import answered_then_dead, make_old  # noqa: E402

CALL = re.compile(r"^\d+ +(\w+)\((.*)\) += (-?\d+)")
TRACED = "trace=mknodat,mkdirat,fsync,fdatasync,syncfs,rename,renameat,renameat2,unlinkat,utimensat"


def calls(path):
    """(syscall, args) of every call that succeeded, in order (strace -f without -qq's
    interleaving: each line whole, as the reclaim runs on the loop thread alone)."""
    out = []
    with open(path, errors="replace") as f:
        for line in f:
            m = CALL.match(line.rstrip("\n"))
            if m and int(m.group(3)) >= 0:
                out.append((m.group(1), m.group(2)))
    return out


def stale_job(d, task_id, owner, age=3600):
    """A job of host `owner`, not heartbeated for age seconds, with no file of its own."""
    path = d.path("running", f"{task_id}@{owner}.json")
    with open(path, "w") as f:
        f.write('{"prompt": "reclaimed %s"}' % task_id)
    os.utime(path, (time.time() - age,) * 2)


def reclaim_under_strace(env, sync, spool_dir=None):
    """Host A dies with the answer of "pt" saved; "px" and "py" of a dead host D wait beside it.
    Host B reclaims all three in one pass under strace; returns B and the calls it made."""
    a = answered_then_dead(env, "pt", "answered, then reclaimed", spool_dir)
    for task_id in ("px", "py"):
        stale_job(a, task_id, "hostD")
    b = env.daemon(spool_dir=a.spool, spool__host_id="hostB", spool__lease_timeout=5,
                   spool__sync=sync)
    log = os.path.join(b.dir, "strace.log")
    b.wrapper = ["strace", "-f", "-qq", "-y", "-o", log, "-e", TRACED]
    b.start()
    for task_id in ("pt", "px", "py"):
        assert b.wait_finished(task_id, 30) == "done", b.log()[-3000:]
    assert env.fake.calls("answered, then reclaimed") == 1, "a saved answer was paid again"
    b.stop()
    return b, calls(log)


def running_sync(c):
    return c[0] in ("fsync", "fdatasync") and re.match(r"^\d+<[^>]*/running>$", c[1])


def test_a_reclaim_mark_is_durable_before_the_renames_it_guards(env):
    """Before, the mark running/.ID@ME.reclaim.DEAD was only created: after a power loss on a
    file system that does not keep name changes in order (or NFS), the rename of the job could
    be there without it, and the restart called the saved answer again. Now, with sync = fsync:
    every mark, then one sync of running/, then the renames of the jobs; the renames of the
    dead host's files, then one sync, then the marks go. One sync each for the three jobs."""
    b, cs = reclaim_under_strace(env, "fsync")
    marks = [i for i, c in enumerate(cs) if c[0] in ("mknodat", "mkdirat") and ".reclaim." in c[1]]
    assert len(marks) == 3, [c for c in cs if ".reclaim." in c[1]]
    claims = [i for i, c in enumerate(cs) if c[0].startswith("rename")
              and re.search(r'"(pt@hostA|px@hostD|py@hostD)\.json", \d+<[^>]*>, "p[txy]@hostB\.json"', c[1])]
    assert len(claims) == 3, [c for c in cs if c[0].startswith("rename")]
    syncs_between = [i for i, c in enumerate(cs) if running_sync(c) and max(marks) < i < min(claims)]
    assert syncs_between, "a job was renamed before its reclaim mark was synced:\n" + \
        "\n".join(f"{c[0]}({c[1]})" for c in cs[min(marks):max(claims) + 1])
    # A's saved answer came along, synced before the mark that guards it went.
    taken = [i for i, c in enumerate(cs) if c[0].startswith("rename") and
             '".pt@hostA.response.200"' in c[1]]
    gone = [i for i, c in enumerate(cs) if c[0] == "unlinkat" and ".pt@hostB.reclaim.hostA" in c[1]]
    assert taken and gone, (taken, gone)
    assert any(running_sync(c) for c in cs[taken[0]:gone[0]]), \
        "the mark went before the renames it guards were synced:\n" + \
        "\n".join(f"{c[0]}({c[1]})" for c in cs[taken[0]:gone[0] + 1])
    reclaim = cs[min(marks):max(gone) + 1]
    print(f"# a pass reclaiming 3 jobs: {sum(1 for c in reclaim if running_sync(c))} syncs of "
          f"running/ between its first mark and its last removal")
    assert b.listdir("running") == [] or all(n.startswith(".host.") for n in
                                             os.listdir(b.path("running")))


def test_a_journaled_ext4_keeps_the_marks_in_order_with_no_sync(env):
    """On an ext4 with a journal and sync = auto, the journal commits name changes in
    the order they were made (spool-layout §5, group commit): the reclaim adds no sync."""
    with env.mounted(LoopExt4()) as fs:
        b, cs = reclaim_under_strace(env, "auto", os.path.join(fs.path, "spool"))
        assert "the spool is on ext4 with a journal" in b.log(), b.log()[-2000:]
    marks = [i for i, c in enumerate(cs) if c[0] in ("mknodat", "mkdirat") and ".reclaim." in c[1]]
    gone = [i for i, c in enumerate(cs) if c[0] == "unlinkat" and ".reclaim." in c[1]]
    assert marks and gone
    assert not any(running_sync(c) for c in cs[min(marks):max(gone) + 1]), \
        "a sync of running/ in a reclaim on a journaled ext4"


def mine(d, host):
    return sorted(n for n in os.listdir(d.path("running")) if n.endswith(f"@{host}.json"))


def test_a_stalled_reclaimer_takes_nothing_of_a_job_reclaimed_from_it(env):
    """Host A dies with the answer of "ps" saved. Host B reclaims "ps" and stalls right after
    its rename (reclaim:renamed), before it takes A's files along; its lease is long, so its
    own clock says it stalled less than half a lease, and it does not look again: a stall
    between that look and its renames. Host C (a short lease) reclaims "ps" from B with two
    jobs of a dead host D, and is held at its next rename, after it took B's files (B's mark
    among them), before it takes A's. B goes on. Before, B renamed A's saved answer to its own
    name, a file of a job it no longer held that C never looked for: C sent the job back to
    new/ and called it again. Now B's renames go through its mark, which C moved: they fail,
    A's answer stays for C, and it is paid once."""
    prompt = "answered, then two reclaimers"
    with env.mounted(Tmpfs("64m")) as fs:
        spool = os.path.join(fs.path, "spool")
        a = answered_then_dead(env, "ps", prompt, spool)
        # Listed in the order the names were made (tmpfs; either way, one of D's jobs comes
        # after "ps" in C's pass): one of D's before B's rename of "ps", one after; both dead
        # by C's lease, not by B's.
        stale_job(a, "pd1", "hostD", 60)
        b = env.daemon(spool_dir=spool, spool__host_id="hostB", spool__lease_timeout=600)
        fifo_b = b.start_held_at("reclaim:renamed", wait_ready=False)
        held_b = held_at_stop(fifo_b, b)
        try:
            assert mine(b, "hostB") == ["ps@hostB.json"], os.listdir(b.path("running"))
            stale_job(a, "pd2", "hostD", 60)
            # B stalled: its job is dead by C's lease (an mtime keeps its place in a listing).
            os.utime(b.path("running", "ps@hostB.json"), (time.time() - 60,) * 2)
            c = env.daemon(spool_dir=spool, spool__host_id="hostC", spool__lease_timeout=2)
            fifo_c = c.start_held_at("reclaim:renamed", wait_ready=False)
            held_c = None
            for _ in range(3):
                held_c = held_at_stop(fifo_c, c)
                got = mine(c, "hostC")
                if "ps@hostC.json" in got and len(got) > 1 and \
                        os.path.exists(c.path("running", ".ps@hostC.reclaim.hostA")):
                    break   # C holds "ps" and B's mark, not yet A's files
                os.close(held_c)
                held_c = None
                wait_for(lambda: len(mine(c, "hostC")) > len(got), 20, "C's next rename")
            assert held_c is not None, os.listdir(c.path("running"))
            os.close(held_b)
            held_b = None
            b.wait_logged("ps warning: reclaimed from 'hostA' but no longer ours")
            names = os.listdir(b.path("running"))
            assert ".ps@hostB.response.200" not in names, \
                f"B took A's answer of a job C holds: {sorted(names)}"
            os.close(held_c)
        finally:
            if held_b is not None:
                os.close(held_b)
        for task_id in ("ps", "pd1", "pd2"):
            assert c.wait_finished(task_id, 30) == "done", c.log()[-3000:]
        assert env.fake.calls(prompt) == 1, "a saved answer was paid again"
        assert [x["http_status"] for x in c.result("ps")["attempts"]] == [200]
        wait_for(lambda: [n for n in os.listdir(c.path("running")) if not n.startswith(".host.")]
                 == [], 10, "nothing of the jobs left in running/")
        assert c.stop() == 0 and b.stop() == 0


def inject_eio(d, path, when, calls="renameat,renameat2", error="EIO"):
    """Runs d under strace, its calls (renames by default) of running/PATH (source or target)
    failing with error at the when-th and, "N+", every later one; returns the trace's path.
    (LeakSanitizer does not work under ptrace.)"""
    log = os.path.join(d.dir, "strace.log")
    d.wrapper = ["strace", "-f", "-qq", "-o", log, "-P", path, "-e", f"trace={calls}",
                 "-e", f"inject={calls}:error={error}:when={when}"]
    d.extra_env["ASAN_OPTIONS"] = "detect_leaks=0:abort_on_error=0"
    return log


def injected(log):
    with open(log, errors="replace") as f:
        return f.read().count("(INJECTED)")


def test_a_failed_rename_of_a_saved_answer_keeps_the_mark_and_pays_nothing_again(env):
    """Host A dies with the answer of "pt" saved; host B reclaims it, and its first rename of
    A's answer fails (EIO, as an NFS server may). Before, take_sidecars ignored the failure,
    the mark went, the job was adopted without its answer, sent back to new/ and called again,
    with nothing logged. Now the failure is said with the file's name and errno, the mark
    stays, the job is not adopted, and the retry takes the answer: paid once."""
    prompt = "answered, then a rename failed"
    a = answered_then_dead(env, "pt", prompt)
    b = env.daemon(spool_dir=a.spool, spool__host_id="hostB", spool__lease_timeout=5)
    trace = inject_eio(b, ".pt@hostA.response.200", "1")
    b.start()
    assert b.wait_finished("pt", 30) == "done", b.log()[-3000:]
    assert injected(trace) == 1, open(trace).read()
    assert env.fake.calls(prompt) == 1, "a saved answer was paid again:\n" + b.log()[-3000:]
    assert [x["http_status"] for x in b.result("pt")["attempts"]] == [200]
    b.wait_logged("pt error: cannot take 'running/.pt@hostA.response.200' along from 'hostA': "
                  "Input/output error")
    assert not b.logged("pt back to new/"), b.log()[-3000:]
    assert b.stop() == 0


def test_a_reclaim_mark_that_cannot_be_made_reclaims_nothing_in_that_pass(env):
    """Host A dies with the answer of "pt" saved; host B's making of its reclaim mark
    (.pt@hostB.reclaim.hostA) fails once (EIO). Before, B renamed the job to its own all the
    same; every rename of A's files into the missing mark failed, taken for another host's
    reclaim ("no longer ours ... none of its files taken along"): A's answer was left behind,
    the job sent back to new/ and called again. Now no mark, no reclaim in that pass: the next
    rescan makes the mark, takes the answer along and finishes the job from it: paid once."""
    prompt = "answered, then the mark failed"
    a = answered_then_dead(env, "pt", prompt)
    b = env.daemon(spool_dir=a.spool, spool__host_id="hostB", spool__lease_timeout=5)
    trace = inject_eio(b, ".pt@hostB.reclaim.hostA", "1", calls="mkdirat")
    b.start()
    assert b.wait_finished("pt", 40) == "done", b.log()[-3000:]
    assert injected(trace) == 1, open(trace).read()
    assert env.fake.calls(prompt) == 1, "a saved answer was paid again:\n" + b.log()[-3000:]
    assert [x["http_status"] for x in b.result("pt")["attempts"]] == [200]
    b.wait_logged("pt warning: cannot make its reclaim mark 'running/.pt@hostB.reclaim.hostA': "
                  "Input/output error; not reclaimed from 'hostA' in this pass")
    assert not b.logged("no longer ours"), b.log()[-3000:]
    assert not b.logged("pt back to new/"), b.log()[-3000:]
    assert b.stop() == 0


def test_a_rename_saying_enoent_of_a_file_still_there_takes_it_later(env):
    """As above, but the first rename of A's answer into B's mark fails with ENOENT though the
    answer is there (an NFS server may say so). Before, B took that for the file gone before it
    got there: the mark went, the job was adopted without its answer and called again. Now a
    file still there after an ENOENT is said and stays to take, as any failed rename: paid
    once."""
    prompt = "answered, then a rename said it was gone"
    a = answered_then_dead(env, "pt", prompt)
    b = env.daemon(spool_dir=a.spool, spool__host_id="hostB", spool__lease_timeout=5)
    trace = inject_eio(b, ".pt@hostA.response.200", "1", error="ENOENT")
    b.start()
    assert b.wait_finished("pt", 40) == "done", b.log()[-3000:]
    assert injected(trace) == 1, open(trace).read()
    assert env.fake.calls(prompt) == 1, "a saved answer was paid again:\n" + b.log()[-3000:]
    b.wait_logged("pt error: cannot take 'running/.pt@hostA.response.200' (its rename said it "
                  "was gone) along from 'hostA'")
    assert not b.logged("pt back to new/"), b.log()[-3000:]
    assert b.stop() == 0


def test_a_rename_failing_at_every_rescan_leaves_the_job_till_it_works(env):
    """As above, but every rename of A's answer fails while B runs: the job stays in running/
    with its mark, at every rescan; never adopted, never called, said once. B's restart (the
    renames work again) takes the answer and finishes the job from it."""
    prompt = "answered, then renames failed"
    a = answered_then_dead(env, "pt", prompt)
    b = env.daemon(spool_dir=a.spool, spool__host_id="hostB", spool__lease_timeout=5)
    trace = inject_eio(b, ".pt@hostA.response.200", "1+")
    b.start()
    wait_for(lambda: injected(trace) >= 4, 30, "renames of A's answer failing at two rescans")
    names = os.listdir(b.path("running"))
    assert "pt@hostB.json" in names and ".pt@hostB.reclaim.hostA" in names, sorted(names)
    assert ".pt@hostA.response.200" in names, sorted(names)
    assert env.fake.calls(prompt) == 1, "called again while its saved answer was not taken"
    assert len(b.logged("pt error: cannot take 'running/.pt@hostA.response.200'")) == 1, \
        b.log()[-3000:]
    assert b.stop() == 0
    b.wrapper = []
    b.extra_env.pop("ASAN_OPTIONS")
    b.start()
    assert b.wait_finished("pt", 30) == "done", b.log()[-3000:]
    assert env.fake.calls(prompt) == 1, "a saved answer was paid again"
    wait_for(lambda: [n for n in os.listdir(b.path("running")) if not n.startswith(".host.")]
             == [], 10, "nothing of the job left in running/")
    assert b.stop() == 0


def test_a_reclaim_whose_rename_fails_leaves_the_lease_as_it_was(env):
    """Host B reclaims "pn" of a dead host D, and the rename fails (EIO). Before, B touched
    running/pn@hostD.json before the rename: D's job got a fresh lease, and every other host
    waited one more lease. Now only the job renamed is touched."""
    b = env.daemon(spool__host_id="hostB", spool__lease_timeout=5)
    trace = inject_eio(b, "pn@hostD.json", "1+")
    b.start()
    stale_job(b, "pn", "hostD")
    old = os.stat(b.path("running", "pn@hostD.json")).st_mtime
    wait_for(lambda: injected(trace) >= 2, 30, "two rescans' reclaims of pn failing")
    assert os.stat(b.path("running", "pn@hostD.json")).st_mtime == old, \
        "the dead host's job got a fresh lease from a reclaim that failed"
    assert not os.path.exists(b.path("running", ".pn@hostB.reclaim.hostD"))
    assert b.stop() == 0


def test_a_job_sent_back_after_a_reclaim_says_so(env):
    """A job of a dead host D with no call of its under way is reclaimed by host B at run time
    and sent back to new/. Before, the log said "recovered from running/ after a restart",
    though B had not restarted. Now it says the job was reclaimed."""
    b = env.daemon(spool__host_id="hostB", spool__lease_timeout=5)
    b.start()
    stale_job(b, "pq", "hostD")
    assert b.wait_finished("pq", 30) == "done", b.log()[-3000:]
    b.wait_logged("pq back to new/ (reclaimed from a host whose lease ran out)")
    assert not b.logged("after a restart"), b.log()[-3000:]
    assert b.stop() == 0

if __name__ == "__main__":
    run_tests([
        test_a_reclaim_mark_is_durable_before_the_renames_it_guards,
        test_a_journaled_ext4_keeps_the_marks_in_order_with_no_sync,
        test_a_stalled_reclaimer_takes_nothing_of_a_job_reclaimed_from_it,
        test_a_failed_rename_of_a_saved_answer_keeps_the_mark_and_pays_nothing_again,
        test_a_reclaim_mark_that_cannot_be_made_reclaims_nothing_in_that_pass,
        test_a_rename_saying_enoent_of_a_file_still_there_takes_it_later,
        test_a_rename_failing_at_every_rescan_leaves_the_job_till_it_works,
        test_a_reclaim_whose_rename_fails_leaves_the_lease_as_it_was,
        test_a_job_sent_back_after_a_reclaim_says_so,
    ])
