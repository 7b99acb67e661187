#!/usr/bin/env python3
"""Which ext4 the daemon trusts to keep a batch's renames in order (sync = auto, spool-layout §5).

spool_journal_decide (src/spool.c) has a unit row for each mount option; here each row is a
real mount: a fresh ext4 on a loop device mounted with the option, one job through a daemon
under strace -f -c, and what the daemon chose is read twice, from what it says at start-up and
from the system calls it made: the reduced sequence writes a job's files out
(sync_file_range) and lets the directories' fsyncs commit them, the full one fsyncs every file.

- the defaults: trusted (the start-up line says so), files written out;
- nobarrier: the same sequence (no sync reaches the disk with either), and a start-up warning;
- data=writeback: trusted (the control for the next row, which needs it on this kernel:
  "can't mount with journal_async_commit in data=ordered mode");
- journal_async_commit (its commit block is written without a cache flush before it): not
  trusted, nothing said, every file fsynced;
- done/ on another file system (a tmpfs mounted on it), or the spool's own file system
  reached through another mount (a bind mount on done/): the daemon does not start, and says
  why (a rename into done/ would fail with EXDEV); the job waits in new/, no call made.
"""
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import BindMount, LoopExt4, Tmpfs, run_tests, wait_for  # noqa: E402

TRUSTED = "the spool is on ext4 with a journal"
NOBARRIER = "warning: the spool's ext4 is mounted nobarrier"
COUNT = re.compile(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$", re.M)


def one_job(env, options):
    """One job through a daemon (sync = auto, concurrency 1) on an ext4 mounted with options:
    its start-up lines about the journal and its sync calls by name, counted by strace."""
    with env.mounted(LoopExt4(64, options=options)) as fs:
        d = env.daemon(spool_dir=os.path.join(fs.path, "spool"), spool__concurrency=1,
                       spool__sync="auto")
        counts = os.path.join(d.dir, "strace.counts")
        d.wrapper = ["strace", "-f", "-qq", "-c", "-o", counts, "-e",
                     "trace=fsync,fdatasync,syncfs,sync_file_range"]
        d.submit("one", {"prompt": f"one job on ext4 -o {options}"})
        d.start()
        assert d.wait_finished("one", 60) == "done", d.log()
        d.stop()   # the wrapper's status: strace writes its counts as it ends
        with open(counts) as f:
            calls = {name: int(n) for n, name in COUNT.findall(f.read())}
    log = d.log()
    said = (TRUSTED in log, NOBARRIER in log)
    print(f"# -o {options or 'defaults'}: trusted {said[0]}, nobarrier warning {said[1]}, "
          f"{calls.get('fsync', 0)} fsync, {calls.get('sync_file_range', 0)} sync_file_range, "
          f"{calls.get('syncfs', 0)} syncfs, {calls.get('fdatasync', 0)} fdatasync")
    return said, calls


def written_out(calls):
    """The reduced sequence: the job's files written out, never a syncfs (a job alone)."""
    return calls.get("sync_file_range", 0) > 0 and not calls.get("syncfs")


def fsynced_all(calls):
    return calls.get("sync_file_range", 0) == 0 and calls.get("fsync", 0) > 0 and \
        not calls.get("syncfs")


def test_the_journal_is_trusted_as_the_mount_options_say(env):
    said, defaults = one_job(env, None)
    assert said == (True, False) and written_out(defaults), (said, defaults)
    said, calls = one_job(env, "nobarrier")
    assert said == (False, True), f"nobarrier: start-up lines {said}"
    assert written_out(calls) and calls == defaults, \
        f"nobarrier: another sequence than the defaults': {calls} vs {defaults}"
    said, writeback = one_job(env, "data=writeback")
    assert said == (True, False) and written_out(writeback), (said, writeback)
    said, calls = one_job(env, "data=writeback,journal_async_commit")
    assert said == (False, False), f"journal_async_commit: start-up lines {said}"
    assert fsynced_all(calls) and calls["fsync"] > writeback["fsync"], \
        f"journal_async_commit: the journal's order was leant on: {calls} vs {writeback}"


def refuses_to_start(env, d, why):
    """d does not start, says why, and its job waits in new/ with no call made."""
    d.submit("waits", {"prompt": "waits for one file system"})
    d.start(wait_ready=False)
    wait_for(lambda: d.exited() or "imgspoold: ready" in d.log(), 20,
             "the daemon to refuse to start")
    assert d.proc.returncode not in (0, None) and why in d.log(), (d.proc.returncode, d.log())
    assert TRUSTED not in d.log(), d.log()
    assert d.state("waits") == "new" and env.fake.calls("waits for one file system") == 0


def test_done_on_another_file_system_stops_the_start(env):
    with env.mounted(LoopExt4(64)) as fs:
        d = env.daemon(spool_dir=os.path.join(fs.path, "tmpfs"), spool__sync="auto")
        os.makedirs(d.path("done"))
        with env.mounted(Tmpfs("16m", at=d.path("done"))):
            refuses_to_start(env, d, f"'{d.spool}/done' is not on the same file system as the "
                             "spool")
        # The same file system through a bind mount: the same device, and a rename into it
        # fails with EXDEV all the same (every job would be paid for and never published).
        d = env.daemon(spool_dir=os.path.join(fs.path, "bind"), spool__sync="auto")
        os.makedirs(d.path("done"))
        os.mkdir(os.path.join(fs.path, "elsewhere"))
        with env.mounted(BindMount(os.path.join(fs.path, "elsewhere"), d.path("done"))):
            refuses_to_start(env, d, f"'{d.spool}/done' is another mount than the spool")


if __name__ == "__main__":
    run_tests([
        test_the_journal_is_trusted_as_the_mount_options_say,
        test_done_on_another_file_system_stops_the_start,
    ])
