"""What a daemon's threads are doing, read from /proc: waiting on a stalled FUSE mount, a signal
still pending, ending; and a daemon made to wait so."""
import os
import re
import signal

from harness import wait_for


def loop_in_fuse(pid):
    """True while the daemon's loop (its main thread) waits in the kernel for a FUSE answer:
    a file operation on the stalled spool."""
    try:
        with open(f"/proc/{pid}/task/{pid}/stack") as f:
            return "fuse" in f.read()
    except OSError:
        return False


def sigterm_pending(pid):
    """True while a SIGTERM sent to the process is still queued, taken by no thread."""
    with open(f"/proc/{pid}/status") as f:
        shdpnd = next(line for line in f if line.startswith("ShdPnd:"))
    return bool(int(shdpnd.split()[1], 16) & (1 << (signal.SIGTERM - 1)))


def ended_but_its_close(pid):
    """True once every thread of the process has ended or is ending in the kernel (do_exit).
    The kernel's close of a file open on a stalled FUSE mount (a call's .partial) waits for
    the server at the exit, SIGKILL or not: the process has then done all it will do."""
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
            with open(f"/proc/{pid}/task/{task}/stack") as f:
                stack = f.read()
        except OSError:
            continue   # gone meanwhile
        if state != "Z" and "do_exit" not in stack:
            return False
    return True


def stall_with_a_call_in_flight(env, mounts, task_id, prompt, **settings):
    """A daemon on the first sshfs mount of mounts (env.two_mounts) with task_id's call in
    flight, then that mount's sshfs stopped (SIGSTOP) until its loop waits on it. Returns the
    daemon and the sshfs process: the caller sends it SIGCONT (in a finally)."""
    sshfs = dict(mounts.sshfs_procs)[mounts.mount_a]
    d = env.daemon(spool_dir=os.path.join(mounts.mount_a, "spool"), **settings).start()
    d.submit(task_id, {"prompt": prompt})
    wait_for(lambda: re.search(rf"^{re.escape(task_id)} claimed", d.log(), re.M), 20, "the claim")
    os.kill(sshfs.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: loop_in_fuse(d.proc.pid), 20, "the loop to wait on the stalled spool")
    except BaseException:
        os.kill(sshfs.pid, signal.SIGCONT)
        raise
    return d, sshfs
