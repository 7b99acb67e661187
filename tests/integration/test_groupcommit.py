#!/usr/bin/env python3
"""Group commit (issue 14): jobs published together keep every durability rule of spool-layout
§5, §10 and §14, each job as if it were alone.

A kill -9 does not drop the page cache, so a crash test cannot see a missing fsync. The order is
proved instead from the system calls: the daemon runs under strace -f -y (each fd with its path),
and for every job published the log shows that its image and result bytes and their directory
entries, its final records and its outbox entry were synced before the commit rename, its images
and result were synced in done/ (or failed/) before its job file moved there, that directory was
synced before the job was reported, and each saved response was synced before its rename. Run
with each way of syncing ([spool] sync = fsync, syncfs), so removing any one barrier of either
fails it.
"""
import collections
import hashlib
import json
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import LoopExt4, Tmpfs, ledger_runs, run_tests, wait_for  # noqa: E402
from upstream import png_prompt_sha256  # noqa: E402

HOST = "testhost"
LINE = re.compile(r"^(\d+) +(.*)$")
CALL = re.compile(r"^(\w+)\((.*)\) += (-?\d+)")
FD = r"\d+<([^>]*)>"
STR = r'"((?:[^"\\]|\\.)*)"'
RENAME = re.compile(rf"^{FD}, {STR}, {FD}, {STR}(, (\w+))?")
ONE_FD = re.compile(rf"^{FD}")


def events(path):
    """(start, end, syscall, args) for every call that returned >= 0, in the order strace saw
    them: start is the line where it entered (its '<unfinished ...>' when another thread's call
    came in between), end the line where it returned. A call that starts after another's end
    entered after that one returned."""
    pending = {}
    out = []
    with open(path, errors="replace") as f:
        for idx, raw in enumerate(f):
            m = LINE.match(raw.rstrip("\n"))
            if not m:
                continue
            pid, text = m.groups()
            if text.endswith(" <unfinished ...>"):
                pending[pid] = (idx, text[: -len(" <unfinished ...>")])
                continue
            r = re.match(r"^<\.\.\. (\w+) resumed>(.*)$", text)
            start = idx
            if r:
                if pid not in pending:
                    continue
                start, head = pending.pop(pid)
                text = head + r.group(2)
            c = CALL.match(text)
            if c and int(c.group(3)) >= 0:
                out.append((start, idx, c.group(1), c.group(2)))
    return out


class Model:
    """Where each name's bytes were written, and every sync, from the strace log."""

    def __init__(self, evs, spool):
        self.spool = spool
        self.origin = {}                     # name -> the file its bytes were written in
        self.last_write = {}                 # written file -> end of its last write
        self.file_syncs = collections.defaultdict(list)   # written file -> (start, end)
        self.dir_syncs = collections.defaultdict(list)    # directory -> (start, end)
        self.fs_syncs = []
        self.data_waits = []                 # (start, end, file) of sync_file_range
        self.renames = []                    # (start, end, from, to, exchange)
        self.creates = []                    # (start, end, None, path, False): O_CREAT
        self.writes = []                     # (start, end, path, data)
        for start, end, call, args in evs:
            if call == "openat" and "O_CREAT" in args:
                m = re.match(rf"^{FD}, {STR}", args)
                if m:
                    path = self.rel(os.path.join(m.group(1), unescape(m.group(2))))
                    self.creates.append((start, end, None, path, False))
            elif call == "write":
                m = re.match(rf"^{FD}, {STR}", args)
                if not m:
                    continue
                path = self.rel(m.group(1))
                self.writes.append((start, end, path, m.group(2)))
                src = self.origin.setdefault(path, path)
                self.last_write[src] = end
            elif call in ("fsync", "fdatasync"):
                # A file's sync counts for the bytes written under whatever name; a
                # directory's for the entries of that path.
                path = self.rel(ONE_FD.match(args).group(1))
                self.dir_syncs[path].append((start, end))
                self.file_syncs[self.origin.get(path, path)].append((start, end))
            elif call == "syncfs":
                self.fs_syncs.append((start, end))
            elif call == "sync_file_range" and "WAIT_AFTER" in args:
                # A journaled ext4's (sync = auto): the bytes written, made durable by the
                # journal's next commit, which no name change after them can come before.
                path = self.rel(ONE_FD.match(args).group(1))
                self.file_syncs[self.origin.get(path, path)].append((start, end))
                self.data_waits.append((start, end, path))
            elif call in ("renameat", "renameat2"):
                m = RENAME.match(args)
                if not m:
                    continue
                a = self.rel(os.path.join(m.group(1), unescape(m.group(2))))
                b = self.rel(os.path.join(m.group(3), unescape(m.group(4))))
                exchange = m.group(6) == "RENAME_EXCHANGE"
                oa, ob = self.origin.get(a, a), self.origin.get(b, b)
                self.origin[b] = oa
                if exchange:
                    self.origin[a] = ob
                else:
                    self.origin.pop(a, None)
                self.renames.append((start, end, a, b, exchange))

    def rel(self, path):
        return os.path.relpath(path, self.spool) if path.startswith(self.spool) else path

    def synced(self, syncs, after, before):
        return any(s > after and e < before for s, e in syncs + self.fs_syncs)

    def bytes_durable(self, name_origin, before):
        written = self.last_write.get(name_origin)
        assert written is not None, f"no write of {name_origin} seen"
        return self.synced(self.file_syncs[name_origin], written, before)

    def entry_durable(self, directory, renamed, before):
        return self.synced(self.dir_syncs[directory], renamed, before)

    def last_rename(self, to, before, src=None):
        found = [r for r in self.renames
                 if r[3] == to and r[0] < before and (src is None or src(r[2]))]
        return found[-1] if found else None

    def last_staged(self, path, before):
        """How a staged file got its name last before before: a rename (a retry's replacement)
        or its creation in place (spool-layout §5: a new name in a staging directory is
        written there)."""
        found = sorted([r for r in self.renames + self.creates if r[3] == path and r[0] < before])
        return found[-1] if found else None


def unescape(s):
    return s.encode().decode("unicode_escape")


def publication(m, task_id, dest):
    """The renames of a job's publication: its job file's from its staging directory (its own
    or its batch's, spool-layout §5) into dest, that directory, the commit before it, and the
    exchange of its final records before that."""
    pub = m.last_rename(f"{dest}/{task_id}.json", 1 << 62, lambda a: re.fullmatch(
        rf"running/\.[^/]+/{re.escape(task_id)}\.json", a))
    assert pub, f"{task_id}: no rename of its job file into {dest}/"
    staging = os.path.dirname(pub[2])
    commit = m.last_rename(f"{staging}/{task_id}.json", pub[0],
                           lambda a: a == f"running/{task_id}@{HOST}.json")
    assert commit, f"{task_id}: no commit rename before its publication"
    records = m.last_rename(f"running/{task_id}@{HOST}.json", commit[0])
    assert records and records[4], f"{task_id}: its final records were not exchanged in"
    return pub, staging, commit, records


def check_log(d, strace_log, jobs):
    spool = os.path.realpath(d.spool)
    m = Model(events(strace_log), spool)
    published = 0
    for task_id, dest in jobs.items():
        pub, staging, commit, records = publication(m, task_id, dest)
        published += 1
        # The final records: written, synced, exchanged in, and the exchange synced, all
        # before the commit (a restart then finishes the publication from the staging).
        assert m.bytes_durable(m.origin[f"{dest}/{task_id}.json"], commit[0]), \
            f"{task_id}: its final records not synced before the commit"
        assert m.entry_durable("running", records[1], commit[0]), \
            f"{task_id}: the exchange of its records not synced in running/ before the commit"
        with open(d.path(dest, f"{task_id}.result.json")) as f:
            names = json.load(f)["images"] + [f"{task_id}.result.json"]
        for name in names:
            # Staged: durable before the records say "finished" (a restart then commits what
            # is staged without looking at it).
            src = m.origin[f"{dest}/{name}"]
            assert m.bytes_durable(src, records[0]), \
                f"{task_id}: the bytes of {name} ({src}) not synced before its final records"
            staged = m.last_staged(f"{staging}/{name}", records[0])
            assert staged and m.entry_durable(staging, staged[1], records[0]), \
                f"{task_id}: {staging}/{name} not synced in its directory before its final records"
            # Moved in: durable in dest before the job file is.
            into = m.last_rename(f"{dest}/{name}", pub[0])
            assert into, f"{task_id}: {name} never renamed into {dest}/"
            assert m.entry_durable(dest, into[1], pub[0]), \
                f"{task_id}: {dest}/{name} not synced in {dest}/ before the job file moved there"
        response_saved_before_acting(m, task_id)
        # Reported only once the job file's entry in dest is durable.
        said = [w for w in m.writes if re.search(rf"\b{re.escape(task_id)} (done|failed): ", w[3])]
        assert said, f"{task_id}: never reported"
        assert m.entry_durable(dest, pub[1], said[0][0]), \
            f"{task_id}: reported before {dest}/ was synced after its job file moved there"
        # Its outbox entry (the hook): durable before the job file moved.
        queued = [w for w in m.writes if w[2].startswith("outbox/.") and
                  re.search(rf'\\"task_id\\": ?\\"{task_id}\\"', w[3])]
        assert queued, f"{task_id}: no outbox entry written"
        src = queued[-1][2]
        into = [r for r in m.renames if m.origin.get(r[3]) == src or r[2] == src]
        assert into and m.bytes_durable(src, pub[0]), \
            f"{task_id}: its outbox entry's bytes not synced before it was published"
        assert m.entry_durable("outbox", into[0][1], pub[0]), \
            f"{task_id}: its outbox entry not synced in outbox/ before it was published"
    every_response_synced_before_its_rename(m, jobs)
    return m, published


def response_saved_before_acting(m, task_id):
    """Its saved response: durable under its final name before the daemon acted on it."""
    response = [r for r in m.renames if r[2] == f"running/.{task_id}@{HOST}.partial"]
    assert response, f"{task_id}: no response saved"
    acted = [w for w in m.writes if re.search(rf"\b{re.escape(task_id)} attempt 1: HTTP", w[3])]
    assert acted, f"{task_id}: its answer was never logged"
    assert m.entry_durable("running", response[-1][1], acted[0][0]), \
        f"{task_id}: its saved response's name not synced before the daemon acted on it"


def every_response_synced_before_its_rename(m, jobs):
    saved = [r for r in m.renames if re.match(r"running/\..*\.partial$", r[2]) and
             ".response." in r[3]]
    assert len(saved) >= len(jobs), f"{len(saved)} responses saved for {len(jobs)} jobs"
    for start, end, a, b, _ in saved:
        assert m.bytes_durable(a, start), f"{b}: renamed before its bytes were synced"


def check_ordered_log(d, strace_log, jobs):
    """sync = auto on an ext4 with a journal (spool-layout §5, group commit): every byte of a
    job's publication (images, result, final records, outbox entry) is synced before the first
    of its name changes past its staging, which come in the order of §5 on one thread with no
    sync between them (the journal commits them in that order), and the job is reported only
    after a sync that came after its job file's move. A saved response's bytes are written
    (sync_file_range) before its rename, and synced with it (§10)."""
    spool = os.path.realpath(d.spool)
    m = Model(events(strace_log), spool)
    with open(strace_log, errors="replace") as f:
        thread = [line.split(" ", 1)[0] for line in f]
    syncs = [(s, e, thread[e]) for s, e in m.fs_syncs + [x for v in m.dir_syncs.values()
                                                         for x in v]]
    published = 0
    for task_id, dest in jobs.items():
        pub, staging, commit, records = publication(m, task_id, dest)
        published += 1
        with open(d.path(dest, f"{task_id}.result.json")) as f:
            names = json.load(f)["images"] + [f"{task_id}.result.json"]
        queued = [w for w in m.writes if w[2].startswith("outbox/.") and
                  re.search(rf'\\"task_id\\": ?\\"{task_id}\\"', w[3])]
        assert queued, f"{task_id}: no outbox entry written"
        for what in [m.origin[f"{dest}/{n}"] for n in names + [f"{task_id}.json"]] + \
                [queued[-1][2]]:
            assert m.bytes_durable(what, records[0]), \
                f"{task_id}: the bytes of {what} not synced before its first name change"
        steps = [m.last_staged(f"{staging}/{n}", records[0]) for n in names] + [records, commit]
        steps += [m.last_rename(f"{dest}/{n}", pub[0]) for n in names] + [pub]
        assert all(steps), f"{task_id}: a step of its publication is missing: {steps}"
        assert all(a[1] < b[0] for a, b in zip(steps, steps[1:])), \
            f"{task_id}: its name changes out of order: {steps}"
        tid = thread[records[1]]
        assert thread[pub[1]] == tid and not [x for x in syncs if x[2] == tid and
                                              records[1] < x[0] < pub[0]], \
            f"{task_id}: a sync between its name changes: the journal keeps them in order"
        said = [w for w in m.writes if re.search(rf"\b{re.escape(task_id)} (done|failed): ", w[3])]
        assert said and m.entry_durable(dest, pub[1], said[0][0]), \
            f"{task_id}: reported before a sync after its job file moved into {dest}/"
        response_saved_before_acting(m, task_id)
    every_response_synced_before_its_rename(m, jobs)
    # A saved response's bytes are written, then renamed, then one sync (it is checked above
    # before the daemon acts): no sync between its bytes and its name.
    for start, end, a, b, _ in [r for r in m.renames if r[2].endswith(".partial")]:
        wait = [w for w in m.data_waits if w[2] == a and w[1] < start]
        assert wait and not [x for x in syncs if x[2] == thread[start] and
                             wait[-1][1] < x[0] < start], \
            f"{b}: a sync between its bytes and its name: the journal keeps them in order"
    return m, published


def run_batch(env, mode, spool_dir=None, check=check_log):
    env.fake.script("refused.", ["400_moderation"])
    d = env.daemon(spool__concurrency=16, spool__sync=mode, notify__exec="/bin/true",
                   spool_dir=spool_dir)
    log = os.path.join(d.dir, "strace.log")
    # Whole writes (-s): a loop turn's log lines go out in one write of up to 64 KiB.
    d.wrapper = ["strace", "-f", "-qq", "-y", "-s", "65536", "-o", log, "-e",
                 "trace=fsync,fdatasync,syncfs,rename,renameat,renameat2,openat,write"]
    d.wrapper[-1] += ",sync_file_range"   # on a journaled ext4 (sync = auto)
    jobs = {}
    for i in range(24):
        task_id = f"g{i:02d}"
        job = {"prompt": f"group {i}"}
        if i % 6 == 1:
            job["n"] = 2
        if i % 6 == 2:
            job["prompt"] = "refused."
        d.submit(task_id, job)
        jobs[task_id] = "failed" if i % 6 == 2 else "done"
    d.start()
    for task_id, dest in jobs.items():
        assert d.wait_finished(task_id, 60) == dest, (task_id, d.state(task_id))
    wait_for(lambda: d.listdir("outbox") == [], 30, "the hooks to have run")
    d.stop()   # the wrapper's status: strace gets the SIGTERM too
    m, published = check(d, log, jobs)
    syncs = len(m.fs_syncs) + sum(len(v) for v in m.file_syncs.values())
    print(f"# sync = {mode}: {published} jobs published, {len(m.fs_syncs)} syncfs, "
          f"{syncs - len(m.fs_syncs)} fsyncs: {syncs / published:.2f} per job")
    return m


def test_no_job_published_before_its_bytes_are_durable_fsync(env):
    m = run_batch(env, "fsync")
    assert m.fs_syncs == [], "sync = fsync made a syncfs"


def test_no_job_published_before_its_bytes_are_durable_syncfs(env):
    # On a tmpfs of our own: syncfs is a barrier there whatever file system /tmp is on.
    with env.mounted(Tmpfs("256m")) as fs:
        m = run_batch(env, "syncfs", os.path.join(fs.path, "spool"))
    assert m.fs_syncs, "sync = syncfs made no syncfs"


def test_journaled_ext4_keeps_the_renames_in_order(env):
    # sync = auto on a fresh ext4 with a journal: two syncs per publication, not four, and
    # one per save of responses, not two.
    with env.mounted(LoopExt4()) as fs:
        m = run_batch(env, "auto", os.path.join(fs.path, "spool"), check_ordered_log)
        assert "the spool is on ext4 with a journal" in env.daemons[-1].log()
    assert m.fs_syncs, "sync = auto made no syncfs for a batch"


def test_journaled_ext4_one_job_commits_per_barrier_not_per_file(env):
    # A job alone goes file by file; on a journaled ext4 a file's fsync commits the journal by
    # itself, so its files are only written out and the directories' fsyncs commit them.
    with env.mounted(LoopExt4()) as fs:
        d = env.daemon(spool_dir=os.path.join(fs.path, "spool"), spool__concurrency=1)
        log = os.path.join(d.dir, "strace.log")
        d.wrapper = ["strace", "-f", "-qq", "-y", "-o", log, "-e",
                     "trace=fsync,fdatasync,syncfs,sync_file_range"]
        d.submit("alone", {"prompt": "one job alone"})
        d.start()
        assert d.wait_finished("alone", 60) == "done", d.log()
        d.stop()
        with open(log) as f:
            calls = [line for line in f if re.search(r"(fsync|sync_file_range)\(\d+<", line)]
    # The job's own files: temporary, its response, and those written in its staging directory.
    files = re.compile(r"<[^>]*/(\.alone[^/>]*\.(tmp|partial)|\.[^/>]*\.batch-done/alone\.[^/>]*)>")
    written = [c for c in calls if "sync_file_range(" in c and files.search(c)]
    fsynced = [c for c in calls if "fsync(" in c and files.search(c)]
    assert written and not fsynced, "".join(calls)


def test_a_kill_inside_a_batch_ends_as_no_kill(env):
    """kill -9 (IMGSPOOLD_CRASH_AT) at each step of a batch of publications, between jobs of a
    step (#2: at the second job) and between steps; after a restart every job ends as without
    the kill: in done/ with its own images, nothing left in running/, and a job whose answer
    had arrived before the kill has one call and one attempt (a call still in flight at the
    kill is recorded interrupted and made again). The fake answers none of a round's calls
    before it has received them all: an attempt is recorded interrupted as soon as its
    .partial exists, before its request is sent, so without that order one killed before it
    reached the fake would be an attempt without a call."""
    points = ["save:response#2", "publish:images#2", "publish:result", "publish:rewritten",
              "publish:committed#2", "publish:moved-in", "publish:job-moved#2", "publish:moved#2"]
    for point in points:
        d = env.daemon(spool__concurrency=8)
        jobs = {f"b{i}-" + point.replace(":", "-").replace("#", "-"): f"batch {point} {i}."
                for i in range(6)}
        gate = len(env.fake.snapshot()) + len(jobs)
        for task_id, prompt in jobs.items():
            env.fake.script(prompt, {"kind": "b64", "after_requests": gate})
            d.submit(task_id, {"prompt": prompt, "n": 2 if task_id.startswith("b1") else 1})
        arrived = d.crash_and_restart(point, jobs)
        for task_id, prompt in jobs.items():
            assert d.wait_finished(task_id, 30) == "done", (point, task_id, d.log()[-2000:])
            r = d.result(task_id)
            statuses = [a["http_status"] for a in r["attempts"]]
            if task_id in arrived:
                assert statuses == [200], (point, task_id, r["attempts"])
            else:
                assert statuses[-1] == 200 and all(a["outcome"] == "interrupted"
                                                   for a in r["attempts"][:-1]), (point, r)
            assert env.fake.calls(prompt) == len(statuses), (point, task_id, env.fake.calls(prompt))
            want = hashlib.sha256(prompt.encode()).hexdigest()
            assert [png_prompt_sha256(d.read("done", n)) for n in r["images"]] == \
                [want] * (2 if task_id.startswith("b1") else 1), (point, task_id)
            record = json.loads(d.read("done", task_id + ".json"))["imgspool"]
            assert record["finished"] == "succeeded" and \
                len(record["attempts"]) == len(statuses), record
        wait_for(lambda: [n for n in os.listdir(d.path("running")) if not n.startswith(".host.")]
                 == [], 10, "nothing left in running/")
        assert d.listdir("failed") == [], (point, d.listdir("failed"))
        d.stop()


def ledger_costs(d):
    """This daemon's ledger: day_micros of every provider, summed, over its runs."""
    return sum(ledger_runs(d.path(), None).values())


def test_the_ledger_is_written_off_the_loop_before_anything_acts_on_the_answers(env):
    """Under a budget every billed call's cost goes into the host's ledger (spool-layout §17),
    durably, before its ticket goes and before its job is published. That write (two fsyncs, a
    round trip each on a network spool) is made by the helper thread that judged the answers,
    one for all the answers it judged together, not by the loop (which gets the answers, to
    release tickets and publish, only once that write returned). The ledger ends exact."""
    env.fake.default = {"kind": "b64", "delay": 0.05}
    d = env.daemon(spool__concurrency=8, spool__host_id=HOST, budget__daily="100",
                   **{"prices__gpt-image-2": "0.01"})
    log = os.path.join(d.dir, "strace.log")
    d.wrapper = ["strace", "-f", "-qq", "-y", "-o", log, "-e",
                 "trace=fsync,rename,renameat,renameat2,unlink,unlinkat"]
    jobs = [f"l{i:02d}" for i in range(24)]
    for task_id in jobs:
        d.submit(task_id, {"prompt": f"ledger {task_id}"})
    d.start()
    for task_id in jobs:
        assert d.wait_finished(task_id, 60) == "done", (task_id, d.state(task_id))
    d.stop()
    assert ledger_costs(d) == 10000 * len(jobs), ledger_costs(d)
    with open(log, errors="replace") as f:
        lines = f.read().splitlines()
    ledger = [line for line in lines
              if re.search(r'rename\w*\(.*/ledger/\d{4}-\d\d>, "\.testhost\.[0-9a-f]{16}\.json\.[^"]*", '
                           r'.*"testhost\.[0-9a-f]{16}\.json"', line)]
    assert len(ledger) > 1, "no write of the ledger seen"
    # The loop is the process's first thread: its tid is the pid in the temporary names. Its
    # one write is the run's file at start-up, with nothing spent, before any call.
    pid = re.search(r'"\.testhost\.[0-9a-f]{16}\.json\.testhost\.(\d+)\.', ledger[0]).group(1)
    assert ledger[0].split()[0] == pid, ledger[0]
    on_loop = [line for line in ledger[1:] if line.split()[0] == pid]
    assert not on_loop, f"{len(on_loop)} of {len(ledger)} ledger writes on the loop: {on_loop[0]}"
    assert len(ledger) - 1 <= len(jobs), (len(ledger), len(jobs))
    print(f"# {len(jobs)} billed calls, {len(ledger)} writes of the ledger, none on the loop")


def test_a_kill_after_the_ledger_write_counts_no_call_twice(env):
    """kill -9 right after a batch of answers went into the ledger, before the loop saw them:
    after a restart every job is done with one call, and the ledger holds at least every call's
    cost (a saved answer not yet recorded in its job is counted again: over, never under)."""
    env.fake.default = {"kind": "b64", "delay": 0.05}
    d = env.daemon(spool__concurrency=4, spool__host_id=HOST, budget__daily="100",
                   **{"prices__gpt-image-2": "0.01"})
    jobs = {f"k{i}": f"ledger kill {i}." for i in range(6)}
    for task_id, prompt in jobs.items():
        d.submit(task_id, {"prompt": prompt})
    d.start_to_crash("ledger:written#2")
    before = ledger_costs(d)
    answered = {t for t in jobs if re.search(rf"^{t} attempt 1: HTTP 200", d.log(), re.M)}
    d.start()
    for task_id, prompt in jobs.items():
        assert d.wait_finished(task_id, 30) == "done", (task_id, d.log()[-2000:])
        # A call still in flight at the kill is recorded interrupted and made again.
        if task_id in answered:
            assert env.fake.calls(prompt) == 1, (task_id, env.fake.calls(prompt))
    d.stop()
    after = ledger_costs(d)
    billed = sum(1 for r in env.fake.snapshot() if r["billed"])
    assert before >= 20000 and after >= 10000 * billed, (before, after, billed)
    print(f"# ledger {before} micros at the kill, {after} after the restart "
          f"({billed} billed calls at 10000, {len(answered)} answered before the kill)")


def save_with_a_failing_syncfs(env, fs, which):
    """One job on a tmpfs with sync = syncfs, under strace making the process's syncfs number
    `which` fail with EIO (strace counts them per thread): the first two of the thread that
    saves the response are its bytes' and its new name's (start-up syncs file by file). Returns
    the daemon and the traced lines of that thread, from its first syncfs on."""
    d = env.daemon(spool_dir=os.path.join(fs.path, f"spool{which}"), spool__sync="syncfs",
                   spool__concurrency=1, spool__disk_retry_interval=1)
    log = os.path.join(d.dir, "strace.log")
    d.wrapper = ["strace", "-f", "-qq", "-y", "-o", log, "-e",
                 "trace=syncfs,rename,renameat,renameat2", "-e",
                 f"inject=syncfs:error=EIO:when={which}"]
    d.submit(f"eio{which}", {"prompt": f"a disk that fails barrier {which}"})
    d.start()
    assert d.wait_finished(f"eio{which}", 60) == "done", d.log()
    d.stop()   # the wrapper's status: strace gets the SIGTERM too
    with open(log) as f:
        lines = f.read().splitlines()
    first = next(i for i, line in enumerate(lines) if "syncfs(" in line)
    tid = lines[first].split()[0]
    return d, [line for line in lines[first:] if line.split()[0] == tid]


def test_a_failed_barrier_of_a_saved_response(env):
    # The save of a response has two barriers: its bytes, then its name. The second runs only
    # when something was renamed; a barrier that fails leaves the response not saved, said in
    # the log, and the job goes on from memory (its own later steps have their own barriers).
    with env.mounted(Tmpfs("64m")) as fs:
        d, lines = save_with_a_failing_syncfs(env, fs, 1)
        assert "(INJECTED)" in lines[0], lines[:3]
        # Up to the exchange of the job's final records: only the publication's first barrier
        # (its staged files, written in place: no rename before it).
        records = next(i for i, line in enumerate(lines) if "RENAME_EXCHANGE" in line)
        assert not [x for x in lines[1:records] if ".response." in x] and \
            sum("syncfs(" in x for x in lines[1:records]) == 1, \
            "after a failed first barrier nothing was renamed, and no second barrier is needed:\n" + \
            "\n".join(lines[:records + 1])
        assert "eio1 error: cannot make its response durable (Input/output error)" in d.log(), d.log()
        d, lines = save_with_a_failing_syncfs(env, fs, 2)
        assert "syncfs(" in lines[0] and ".response." in lines[1] and "(INJECTED)" in lines[2], \
            "\n".join(lines[:4])
        assert "eio2 error: cannot make its response durable (Input/output error)" in d.log(), \
            "a failed barrier after the rename went unnoticed:\n" + d.log()


if __name__ == "__main__":
    run_tests([
        test_no_job_published_before_its_bytes_are_durable_fsync,
        test_no_job_published_before_its_bytes_are_durable_syncfs,
        test_journaled_ext4_keeps_the_renames_in_order,
        test_journaled_ext4_one_job_commits_per_barrier_not_per_file,
        test_a_kill_inside_a_batch_ends_as_no_kill,
        test_a_failed_barrier_of_a_saved_response,
        test_the_ledger_is_written_off_the_loop_before_anything_acts_on_the_answers,
        test_a_kill_after_the_ledger_write_counts_no_call_twice,
    ])
