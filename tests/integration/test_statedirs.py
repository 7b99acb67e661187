#!/usr/bin/env python3
"""State directories replaced while the daemon runs (src/spool.c, spool_recheck_dirs, at each
rescan): an operator removes deferred/ and makes it again, or moves done/ or new/ aside and
makes a new one. The daemon held the old directory open and went on using it, unseen by clients
and other hosts, until a restart. Now the next rescan says so once and opens the new one: the
next deferral waits in the new deferred/ (a client's `imgspool status` sees it), the next result
is published in the new done/, and a job dropped into the new new/ is claimed, new/ watched
again by inotify.

A publication under way when done/ is replaced ends wholly in the directory it started in: its
image, result and job file together (src/publish.c pins done/ and failed/ for each batch), never
the images in the old one and the job file in the new. A publication into a removed done/ is
not taken for one moved in before a crash: it waits, committed in running/, and lands in the
done/ made again after the next rescan.

A directory that is the spool's file system through another mount (a bind mount over done/) is
refused as at start-up, with its words, said once, and the daemon goes on with the one it
opened.

What was left in a directory moved aside stays there (an operator moved it away): the log names
where the old one is now. running/ and outbox/, the daemon's own state, are said and never
followed: a paid call, or an event waiting, goes on from the one opened. A write a helper thread
had begun (a deferral's move, a control/gone.KEY marker) ends whole in the directory it pinned."""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import IMGSPOOL, BindMount, cli, held_at_stop, run_tests, wait_for  # noqa: E402
from peers import WebhookReceiver  # noqa: E402


def replaced(d, name):
    """Waits for the daemon to say that name was replaced and it uses the new one (the words
    its log starts with, returned)."""
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
    d.assert_not_logged("cannot move to deferred/")
    assert d.flushed_log().count(said) == 1, d.log()[-2000:]
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


def made_again_is_watched(d, name):
    """Moves the watched state directory name aside, makes it again, and checks that the
    daemon watches the new one, no longer the old."""
    old = os.stat(d.path(name)).st_ino
    assert old in inotify_watched(d.proc.pid)
    os.rename(d.path(name), d.path(name + ".old"))
    os.mkdir(d.path(name))
    replaced(d, name)
    watched = inotify_watched(d.proc.pid)
    assert os.stat(d.path(name)).st_ino in watched and old not in watched, watched


def test_a_new_dir_made_again_is_listed_and_watched(env):
    d = env.daemon().start()
    made_again_is_watched(d, "new")
    d.submit("arrived", {"prompt": "dropped into the new new/"})
    assert d.wait_finished("arrived") == "done", d.log()[-2000:]
    assert d.stop() == 0


def test_a_control_dir_made_again_is_watched(env):
    """control/ is watched for every change (removals too), and again once replaced."""
    d = env.daemon().start()
    made_again_is_watched(d, "control")
    assert d.stop() == 0


def test_a_running_dir_moved_aside_is_not_followed(env):
    """running/ holds the daemon's leases and calls in flight: followed, a call's lease touch
    failed in the new one, and its paid image was never published ("lost the job to another
    daemon")."""
    d = env.daemon().start()
    prompt = "paid while running/ moves [fake:b64 delay=5]"
    d.submit("kept", {"prompt": prompt})
    wait_for(lambda: env.fake.calls(prompt) == 1, 20, "the call to start")
    os.rename(d.path("running"), d.path("running.old"))
    os.mkdir(d.path("running"))
    said = f"'{d.path('running')}' was replaced while this daemon ran: not followed"
    wait_for(lambda: said in d.log(), 20, f"the daemon to say it keeps running/:\n{d.log()[-2000:]}")
    assert env.fake.calls(prompt) == 1 and d.state("kept") != "done", "the rescan came too late"
    assert d.wait_finished("kept") == "done", d.log()[-2000:]
    assert d.result("kept")["status"] == "succeeded" and env.fake.calls(prompt) == 1
    d.assert_not_logged("lost the job")
    assert d.flushed_log().count(said) == 1, d.log()[-2000:]
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
        assert os.listdir(elsewhere) == [] and d.flushed_log().count(why) == 1, d.log()[-2000:]
        assert d.stop() == 0
    assert d.state("kept") == "done", d.log()[-2000:]


def status_of(d, task_id):
    return subprocess.run([IMGSPOOL, "-d", d.spool, "status", task_id], capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=60)


def succeeded(status):
    """Whether `imgspool status` printed a succeeded job's result."""
    assert status.returncode == 0, (status.stdout, status.stderr)
    return json.loads(status.stdout)["status"] == "succeeded"


def test_a_publication_under_way_lands_whole_in_one_done_dir(env):
    d = env.daemon()
    fifo = d.start_held_at("publish:moved-in")
    d.submit("whole", {"prompt": "published while done/ is moved aside"})
    release = held_at_stop(fifo, d)   # its image and result moved in, its job file not yet
    os.rename(d.path("done"), d.path("done.old"))
    os.mkdir(d.path("done"))
    replaced(d, "done")
    os.close(release)
    wait_for(lambda: "whole done: 1 image(s) in done/" in d.log(), 20,
             f"the publication to end:\n{d.log()[-2000:]}")
    old, new = sorted(os.listdir(d.path("done.old"))), sorted(os.listdir(d.path("done")))
    # Started in the old done/, it ends there whole: no job file without its result.
    assert old == ["whole.json", "whole.png", "whole.result.json"] and new == [], (old, new)
    assert not [n for n in os.listdir(d.path("running")) if n.startswith(".~")], \
        os.listdir(d.path("running"))
    d.submit("next", {"prompt": "the next one, in the new done/"})
    os.close(held_at_stop(fifo, d))
    assert d.wait_finished("next") == "done", d.log()[-2000:]
    assert succeeded(status_of(d, "next"))
    assert d.stop() == 0


def test_a_removed_done_dir_keeps_the_publication_until_one_is_made(env):
    d = env.daemon(spool__disk_retry_interval=1)
    d.start()
    os.rmdir(d.path("done"))
    d.submit("kept", {"prompt": "its done/ is gone"})
    waiting = "kept error: cannot finish publishing into done/"
    wait_for(lambda: waiting in d.log(), 20, f"the publication to wait:\n{d.log()[-2000:]}")
    d.assert_not_logged("kept done:")
    d.wait_logged("the directory this daemon opened is gone")
    os.mkdir(d.path("done"))
    replaced(d, "done")
    assert d.wait_finished("kept") == "done", d.log()[-2000:]
    wait_for(lambda: "kept done: 1 image(s) in done/" in d.log(), 20, d.log()[-2000:])
    assert d.listdir("done") == ["kept.json", "kept.png", "kept.result.json"], d.listdir("done")
    assert succeeded(status_of(d, "kept"))
    assert d.result("kept")["status"] == "succeeded"
    # Nothing of it is left staged (an emptied batch directory goes with its slot's next batch).
    staged = [os.path.join(n, f) for n in os.listdir(d.path("running")) if n.startswith(".~")
              for f in os.listdir(d.path("running", n))]
    assert staged == [], staged
    assert d.flushed_log().count("kept done:") == 1, d.log()[-2000:]
    assert d.stop() == 0


def test_jobs_left_in_a_new_dir_moved_aside_stay_there(env):
    """An operator moved new/ away with its waiting jobs (to stop them, or look at them): they
    are not followed into the new one, and the log says where they are."""
    d = env.daemon(verbose=True).start()
    assert cli(d.spool, "pause").returncode == 0
    d.submit("left", {"prompt": "left behind in the old new/"})
    d.wait_rescans(1)
    os.rename(d.path("new"), d.path("new.old"))
    os.mkdir(d.path("new"))
    replaced(d, "new")
    assert f"what is left in the old one, now '{d.path('new.old')}', stays there" in d.log(), \
        d.log()[-2000:]
    assert cli(d.spool, "resume").returncode == 0
    d.submit("fresh", {"prompt": "dropped into the new new/"})
    assert d.wait_finished("fresh") == "done", d.log()[-2000:]
    d.wait_rescans(2)
    assert os.listdir(d.path("new.old")) == ["left.json"], os.listdir(d.path("new.old"))
    assert env.fake.calls("left behind in the old new/") == 0, d.log()[-2000:]
    assert d.stop() == 0


def test_a_deferral_under_way_ends_in_the_deferred_dir_it_pinned(env):
    """A deferral's move pinned deferred/ before its rename: deferred/ replaced right then, the
    job lands in the directory pinned (which the fsync that follows makes durable), never split
    from it, and is not an error."""
    d = env.daemon()
    fifo = d.start_held_at("move:pinned")
    d.submit("later", {"prompt": "waits long [fake:429_retry_after retry_after=600|b64]"})
    release = held_at_stop(fifo, d)
    os.rename(d.path("deferred"), d.path("deferred.old"))
    os.mkdir(d.path("deferred"))
    said = replaced(d, "deferred")
    assert f"now '{d.path('deferred.old')}'" in d.log(), d.log()[-2000:]
    os.close(release)
    wait_for(lambda: "later deferred" in d.log(), 20, f"the deferral to end:\n{d.log()[-2000:]}")
    assert os.listdir(d.path("deferred.old")) == ["later.json"], os.listdir(d.path("deferred.old"))
    assert os.listdir(d.path("deferred")) == []
    d.assert_not_logged("cannot move")
    assert d.flushed_log().count(said) == 1, d.log()[-2000:]
    assert d.stop() == 0


def test_a_gone_marker_written_while_control_is_replaced_lands_whole(env):
    """control/gone.KEY is written through a temporary file on a helper thread: control/
    replaced between the two, its rename and the directory's fsync are in the directory the
    temporary file is in (on the descriptor pinned; on the one swapped in, the rename failed,
    and the fsync after it was of the new control/, not of the one the marker went into)."""
    rx = env.peer(WebhookReceiver()).start()
    rx.set_gone(True)
    d = env.daemon(extra_env={"T_WEBHOOK_SECRET": rx.secret}, notify__url=rx.url("/switch"),
                   notify__secret_env="T_WEBHOOK_SECRET", notify__allow_private="yes",
                   notify__retry_base_ms=300, notify__retry_cap_ms=1500)
    trace = os.path.join(d.dir, "strace.log")
    d.wrapper = ["strace", "-f", "-qq", "-y", "-o", trace, "-e", "trace=fsync,renameat,renameat2"]
    fifo = d.start_held_at("write:pinned")
    d.submit("gone", {"prompt": "its endpoint is gone"})
    release = held_at_stop(fifo, d)   # the marker's temporary file written in control/
    rx.set_gone(False)                # the event goes out once the marker is written
    os.rename(d.path("control"), d.path("control.old"))
    os.mkdir(d.path("control"))
    replaced(d, "control")
    os.close(release)
    wait_for(lambda: [n for n in os.listdir(d.path("control.old")) if n.startswith("gone.")], 20,
             f"the marker:\n{d.log()[-2000:]}")
    assert [n for n in os.listdir(d.path("control.old")) if not n.startswith(".")] == \
        [n for n in os.listdir(d.path("control.old")) if n.startswith("gone.")], \
        os.listdir(d.path("control.old"))
    assert os.listdir(d.path("control")) == [], os.listdir(d.path("control"))
    d.assert_not_logged("cannot write 'control/gone.")
    wait_for(lambda: any(q["status"] == 204 for q in rx.requests()), 30, "the event delivered")
    assert d.wait_finished("gone") == "done"
    d.stop()   # the wrapper's status: strace gets the SIGTERM too
    with open(trace) as f:
        lines = f.read().splitlines()
    at = next(i for i, line in enumerate(lines) if "rename" in line and "/control" in line)
    tid = lines[at].split()[0]
    synced = next(line for line in lines[at + 1:] if line.split()[0] == tid and "fsync(" in line)
    assert f"<{d.path('control.old')}>" in synced, (lines[at], synced)


def test_an_outbox_dir_moved_aside_is_not_followed(env):
    """outbox/ holds the events waiting to go out: followed, an event parked for a gone
    endpoint was never sent; it goes out from the directory opened."""
    rx = env.peer(WebhookReceiver()).start()
    rx.set_gone(True)
    d = env.daemon(extra_env={"T_WEBHOOK_SECRET": rx.secret}, notify__url=rx.url("/switch"),
                   notify__secret_env="T_WEBHOOK_SECRET", notify__allow_private="yes",
                   notify__retry_base_ms=300, notify__retry_cap_ms=1500).start()
    d.submit("waits", {"prompt": "its event waits in outbox/"})
    wait_for(lambda: "webhook job.succeeded waits" in d.log(), 20, f"the event parked:\n{d.log()[-2000:]}")
    os.rename(d.path("outbox"), d.path("outbox.old"))
    os.mkdir(d.path("outbox"))
    said = f"'{d.path('outbox')}' was replaced while this daemon ran: not followed"
    wait_for(lambda: said in d.log(), 20, f"the daemon to say it keeps outbox/:\n{d.log()[-2000:]}")
    rx.set_gone(False)
    for n in os.listdir(d.path("control")):
        if n.startswith("gone."):
            os.unlink(d.path("control", n))
    wait_for(lambda: any(q["status"] == 204 for q in rx.requests()), 30,
             f"the event delivered:\n{d.log()[-2000:]}")
    assert [q["event"]["data"]["task_id"] for q in rx.requests() if q["status"] == 204] == ["waits"]
    wait_for(lambda: os.listdir(d.path("outbox.old")) == [], 20, "the entry removed when done")
    assert os.listdir(d.path("outbox")) == [] and d.flushed_log().count(said) == 1, \
        d.log()[-2000:]
    assert d.stop() == 0


def unpinnable(env, dest, task_id, prompt):
    """A job whose batch cannot pin dest/ (done/ or failed/) for its first three tries: the
    descriptor's dup fails with EMFILE (strace injects it, on dest/ alone). The batch publishes
    nothing into a directory it did not pin: it says why, waits, tries again, and publishes
    whole with the fourth. Returns the daemon, stopped."""
    d = env.daemon(spool__disk_retry_interval=1, spool__io_threads=1)
    trace = os.path.join(d.dir, "strace.log")
    d.wrapper = ["strace", "-f", "-qq", "-y", "-o", trace, "-P", d.path(dest),
                 "-e", "trace=fcntl,rename,renameat,renameat2",
                 "-e", "inject=fcntl:error=EMFILE:when=1..3"]
    d.start()
    d.submit(task_id, {"prompt": prompt})
    assert d.wait_finished(task_id, 60) == dest, d.log()[-2000:]
    d.stop()   # the wrapper's status: strace gets the SIGTERM too
    with open(trace) as f:
        lines = [line for line in f.read().splitlines() if "fcntl(" in line or "rename" in line]
    pins = [i for i, line in enumerate(lines) if "F_DUPFD_CLOEXEC" in line]
    assert ["(INJECTED)" in lines[i] for i in pins[:4]] == [True] * 3 + [False], lines
    pinned = lines[pins[3]].split(" = ")[1].split("<")[0]
    moves = [line for line in lines if "rename" in line]
    assert moves and lines.index(moves[0]) > pins[3], lines
    # Every move into dest/ goes through the descriptor pinned, none through the daemon's own.
    assert all(f", {pinned}<{d.path(dest)}>, " in line for line in moves), (pinned, moves)
    assert f"{task_id} error: cannot publish the result (cannot open '{dest}/.': Too many open " \
        "files); retrying every 1s" in d.log(), d.log()[-2000:]
    assert d.log().count(f"{task_id} {dest}") == 1, d.log()[-2000:]
    return d


def test_a_done_dir_that_cannot_be_pinned_is_waited_for(env):
    d = unpinnable(env, "done", "pin", "its done/ cannot be pinned")
    assert d.listdir("done") == ["pin.json", "pin.png", "pin.result.json"], d.listdir("done")
    assert d.result("pin")["status"] == "succeeded" and env.fake.calls("its done/ cannot be pinned") == 1


def test_a_failed_dir_that_cannot_be_pinned_is_waited_for(env):
    prompt = "refused, its failed/ cannot be pinned [fake:400_moderation]"
    d = unpinnable(env, "failed", "unpin", prompt)
    assert d.listdir("failed") == ["unpin.json", "unpin.result.json"], d.listdir("failed")
    assert d.result("unpin")["error"]["code"] == "content_refused" and env.fake.calls(prompt) == 1


if __name__ == "__main__":
    run_tests([
        test_a_remade_deferred_dir_takes_the_next_deferral,
        test_a_done_dir_moved_aside_gets_no_more_results,
        test_a_new_dir_made_again_is_listed_and_watched,
        test_a_control_dir_made_again_is_watched,
        test_a_running_dir_moved_aside_is_not_followed,
        test_a_bind_mount_over_done_is_refused_as_at_start_up,
        test_a_publication_under_way_lands_whole_in_one_done_dir,
        test_a_removed_done_dir_keeps_the_publication_until_one_is_made,
        test_jobs_left_in_a_new_dir_moved_aside_stay_there,
        test_a_deferral_under_way_ends_in_the_deferred_dir_it_pinned,
        test_a_gone_marker_written_while_control_is_replaced_lands_whole,
        test_an_outbox_dir_moved_aside_is_not_followed,
        test_a_done_dir_that_cannot_be_pinned_is_waited_for,
        test_a_failed_dir_that_cannot_be_pinned_is_waited_for,
    ])
