#!/usr/bin/env python3
"""State directories replaced while the daemon runs (src/spool.c, spool_recheck_dirs, at each
rescan): an operator removes deferred/ and makes it again, or moves done/ or new/ aside and
makes a new one. The daemon held the old directory open and went on using it, unseen by clients
and other hosts, until a restart. Now the next rescan says so once and opens the new one: the
next deferral waits in the new deferred/ (a client's `imgspool status` sees it), the next result
is published in the new done/, and a job dropped into the new new/ is claimed, new/ watched
again by inotify.

A directory that is the spool's file system through another mount (a bind mount over done/) is
refused as at start-up, with its words, said once, and the daemon goes on with the one it
opened."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import IMGSPOOL, BindMount, run_tests, wait_for  # noqa: E402


def replaced(d, name):
    """Waits for the daemon to say that name was replaced and it uses the new one."""
    said = f"'{d.path(name)}' was replaced while this daemon ran"
    wait_for(lambda: said in d.log(), 20, f"the daemon to follow the new {name}/:\n"
             f"{d.log()[-2000:]}")
    return said


def inotify_watched(pid):
    """The inode numbers every inotify descriptor of process pid watches (its fdinfo)."""
    inodes = set()
    fd_dir = f"/proc/{pid}/fdinfo"
    for fd in os.listdir(fd_dir):
        try:
            with open(os.path.join(fd_dir, fd)) as f:
                for line in f:
                    if line.startswith("inotify wd:"):
                        inodes.add(int(line.split(" ino:")[1].split()[0], 16))
        except OSError:
            pass
    return inodes


def test_a_remade_deferred_dir_takes_the_next_deferral(env):
    d = env.daemon().start()
    os.rmdir(d.path("deferred"))
    os.mkdir(d.path("deferred"))
    said = replaced(d, "deferred")
    d.submit("later", {"prompt": "waits long [fake:429_retry_after retry_after=600|b64]"})
    wait_for(lambda: d.state("later") == "deferred", 20,
             f"the retry to wait in the new deferred/:\n{d.log()[-2000:]}")
    status = subprocess.run([IMGSPOOL, "-d", d.spool, "status", "later"], capture_output=True,
                            text=True, stdin=subprocess.DEVNULL, timeout=60)
    assert status.stdout.startswith("deferred"), (status.stdout, status.stderr)
    assert "cannot move to deferred/" not in d.log(), d.log()[-2000:]
    assert d.log().count(said) == 1, d.log()[-2000:]
    assert d.stop() == 0


def test_a_done_dir_moved_aside_gets_no_more_results(env):
    d = env.daemon().start()
    os.rename(d.path("done"), d.path("done.old"))
    os.mkdir(d.path("done"))
    replaced(d, "done")
    d.submit("seen", {"prompt": "a result clients see"})
    assert d.wait_finished("seen") == "done", d.log()[-2000:]
    assert "seen.result.json" in d.listdir("done") and d.result("seen")["status"] == "succeeded"
    assert os.listdir(d.path("done.old")) == []
    assert d.stop() == 0


def test_a_new_dir_made_again_is_listed_and_watched(env):
    d = env.daemon().start()
    old = os.stat(d.path("new")).st_ino
    assert old in inotify_watched(d.proc.pid)
    os.rename(d.path("new"), d.path("new.old"))
    os.mkdir(d.path("new"))
    replaced(d, "new")
    watched = inotify_watched(d.proc.pid)
    assert os.stat(d.path("new")).st_ino in watched and old not in watched, watched
    d.submit("arrived", {"prompt": "dropped into the new new/"})
    assert d.wait_finished("arrived") == "done", d.log()[-2000:]
    assert d.stop() == 0


def test_a_bind_mount_over_done_is_refused_as_at_start_up(env):
    d = env.daemon(verbose=True).start()
    elsewhere = os.path.join(d.dir, "elsewhere")
    os.mkdir(elsewhere)
    why = f"'{d.spool}/done' is another mount than the spool (a bind mount?)"
    with env.mounted(BindMount(elsewhere, d.path("done"))):
        wait_for(lambda: why in d.log(), 20, f"the refusal:\n{d.log()[-2000:]}")
        d.submit("kept", {"prompt": "published where the daemon opened done/"})
        wait_for(lambda: "kept done: 1 image(s) in done/" in d.log(), 20, f"kept's result:\n{d.log()[-2000:]}")
        d.wait_rescans(2)
        assert os.listdir(elsewhere) == [] and d.log().count(why) == 1, d.log()[-2000:]
        assert d.stop() == 0
    assert d.state("kept") == "done", d.log()[-2000:]


if __name__ == "__main__":
    run_tests([
        test_a_remade_deferred_dir_takes_the_next_deferral,
        test_a_done_dir_moved_aside_gets_no_more_results,
        test_a_new_dir_made_again_is_listed_and_watched,
        test_a_bind_mount_over_done_is_refused_as_at_start_up,
    ])
