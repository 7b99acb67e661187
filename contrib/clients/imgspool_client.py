#!/usr/bin/env python3
"""imgspool_client.py - a dependency-free imgspool client (Python 3.8+, standard library only),
written from spool-layout.md: submit a job, read its state, wait for its result.

    import imgspool_client as isc
    task_id = isc.submit("/var/spool/imgspool", {"prompt": "a lighthouse at dusk"})
    state, host = isc.state("/var/spool/imgspool", task_id)      # ("new", None), ...
    result = isc.wait("/var/spool/imgspool", task_id, timeout=600)  # the result document

Command line:  imgspool_client.py SPOOL submit FILE|-  |  state ID  |  wait ID [SECONDS]
Exit codes as imgspool(1): 0 done, 1 failed, 2 usage, 3 not finished, 4 no such job.
"""
import json
import os
import secrets
import socket
import sys
import time

STATES = ("new", "deferred", "hold", "running", "failed", "done")


def new_id():
    """maildir's recipe (spool-layout.md section 3): never the same twice, on any host."""
    now = time.time()
    host = "".join(c if c.isascii() and (c.isalnum() or c == "-") else "_"
                   for c in socket.gethostname())[:64] or "host"
    # The "r": 16 hex digits alone are all decimal once in about 1 800 ids, and an id ending in
    # "." and digits only is reserved for the daemon's own names.
    return f"{int(now)}.{int(now * 1e6) % 1000000:06d}.{os.getpid()}.{host}.r{secrets.token_hex(8)}"


def submit(spool, job, task_id=None):
    """Writes the job to tmp/, fsyncs it, renames it into new/; returns the task id."""
    task_id = task_id or new_id()
    tmp = os.path.join(spool, "tmp", task_id + ".json")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(job, f, ensure_ascii=False)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, os.path.join(spool, "new", task_id + ".json"))
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return task_id


def state(spool, task_id):
    """(state, host): the directory the job file is in, and for a running job the daemon's
    host id; (None, None) when it is nowhere (not submitted yet, or between two renames)."""
    for name in ("new", "deferred", "hold", "failed", "done"):
        if os.path.exists(os.path.join(spool, name, task_id + ".json")):
            return name, None
    for name in ("new", "deferred"):   # ID in new/ is a client's name; in deferred/, §5's
        if os.path.exists(os.path.join(spool, name, task_id)):
            return name, None
    for n in range(2, 10):   # deferred/ID.N.json: moved back while both were taken (§5)
        if os.path.exists(os.path.join(spool, "deferred", f"{task_id}.{n}.json")):
            return "deferred", None
    try:
        for name in os.listdir(os.path.join(spool, "running")):
            if name.startswith(task_id + "@") and name.endswith(".json"):
                return "running", name[len(task_id) + 1:-5]
    except FileNotFoundError:
        pass
    return None, None


def result(spool, task_id):
    """The result document of a finished job (a dict), or None."""
    where, _ = state(spool, task_id)
    if where not in ("done", "failed"):
        return None
    with open(os.path.join(spool, where, task_id + ".result.json"), encoding="utf-8") as f:
        return json.load(f)


def wait(spool, task_id, timeout=None, poll=0.2):
    """Polls until the job is finished (the protocol's way on any host: NFS sends no events);
    returns its result. TimeoutError at the deadline; LookupError when the job stays nowhere."""
    start = time.monotonic()
    while True:
        where, _ = state(spool, task_id)
        if where in ("done", "failed"):
            return result(spool, task_id)
        now = time.monotonic()
        if where is None and now - start > 2:
            raise LookupError(f"no job {task_id!r} in {spool!r}")
        if timeout is not None and now - start > timeout:
            raise TimeoutError(f"job {task_id!r} not finished after {timeout}s ({where})")
        time.sleep(poll)


def main(argv):
    if len(argv) < 3:
        print(__doc__.split("\n\n")[2], file=sys.stderr)
        return 2
    spool, verb, args = argv[1], argv[2], argv[3:]
    if verb == "submit" and len(args) == 1:
        text = sys.stdin.read() if args[0] == "-" else open(args[0], encoding="utf-8").read()
        print(submit(spool, json.loads(text)))
        return 0
    if verb == "state" and len(args) == 1:
        where, host = state(spool, args[0])
        if where is None:
            print(f"imgspool_client: no job {args[0]!r}", file=sys.stderr)
            return 4
        print(where + (" on " + host if host else ""))
        return 0 if where == "done" else 1 if where == "failed" else 3
    if verb == "wait" and len(args) in (1, 2):
        try:
            r = wait(spool, args[0], float(args[1]) if len(args) == 2 else None)
        except TimeoutError as e:
            print(f"imgspool_client: {e}", file=sys.stderr)
            return 3
        except LookupError as e:
            print(f"imgspool_client: {e}", file=sys.stderr)
            return 4
        print(json.dumps(r, indent=2, ensure_ascii=False))
        return 0 if r["status"] == "succeeded" else 1
    print(f"imgspool_client: unknown command {verb!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
