#!/usr/bin/env python3
"""Hostile input: a shared, writable spool cannot be turned against its daemon (issue 5)."""
import hashlib
import json
import os
import signal
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import TEST_KEY, run_tests, wait_for  # noqa: E402
from upstream import png_for  # noqa: E402

SECRET = "SECRET-7c1e9a44-do-not-leak"


def every_file_under(top):
    for root, _dirs, files in os.walk(top):
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path) and os.path.isfile(path):
                yield path


def test_hostile_entries_in_new(env):
    d = env.daemon(verbose=True).start()
    secret = os.path.join(d.dir, "secret.json")
    with open(secret, "w") as f:
        json.dump({"prompt": SECRET}, f)     # would be a valid job, if it were ever read
    new = d.path("new")
    os.symlink(secret, os.path.join(new, "symlink.json"))
    os.link(secret, os.path.join(new, "hardlink.json"))
    os.mkfifo(os.path.join(new, "fifo.json"))
    with open(os.path.join(new, "huge.json"), "wb") as f:
        f.truncate(100 * 1024 * 1024)        # 100 MB (sparse)
    os.mkdir(os.path.join(new, "adir.json"))
    d.submit("deep", "[" * 100000 + "]" * 100000)
    d.submit("bigprompt", {"prompt": "x" * 1_000_000})
    d.submit("utf8", b'{"prompt": "caf\xe9 \xff\xfe"}')
    d.submit("nul", b'{"prompt": "a\x00b"}')
    d.submit("types", {"prompt": 42, "n": "1"})
    d.submit("many", {"prompt": "a thousand images", "n": 1000})
    d.submit("huge-size", {"prompt": "x", "size": "99999x99999"})
    d.submit("escape", {"prompt": "x", "images": ["../../../etc/passwd"]})
    d.submit("unknown", {"prompt": "x", "quailty": "high"})
    with open(os.path.join(new, "bad name!.json"), "w") as f:
        json.dump({"prompt": "bad name"}, f)
    d.submit("normal", {"prompt": "an ordinary job after the hostile ones"})

    assert d.wait_finished("normal") == "done", "the daemon stopped serving others"
    for task_id in ("deep", "bigprompt", "utf8", "nul", "types", "many", "huge-size", "escape",
                    "unknown"):
        assert d.wait_finished(task_id) == "failed", task_id
        err = d.result(task_id)["error"]
        assert err["code"] == "invalid_job" and err["message"], (task_id, err)
    assert d.result("many")["error"]["field"] == "n"
    assert d.result("bigprompt")["error"]["field"] == "prompt"
    # Named by the SHA-256 of its name, which nobody can make another name share (FNV could).
    badname = "badname-" + hashlib.sha256(b"bad name!.json").hexdigest()[:16]
    wait_for(lambda: badname + ".result.json" in d.listdir("failed"), 10,
             "the badly named file to be refused")
    # The rest is never read and never moved; each is logged once, however many rescans pass.
    d.wait_rescans(3)
    log = d.flushed_log()   # the third rescan's lines too
    for name in ("symlink.json", "hardlink.json", "fifo.json", "huge.json", "adir.json"):
        assert os.path.lexists(os.path.join(new, name)), f"{name} was moved or deleted"
        assert log.count(f"ignoring 'new/{name}'") == 1, f"{name} logged {log.count(name)} times"
    assert not d.exited()
    # Nothing secret went upstream or into any file the run produced.
    sent = json.dumps(env.fake.snapshot(), default=str)
    assert SECRET not in sent, "the secret file's content was sent upstream"
    planted = {os.path.join(new, "hardlink.json")}
    for path in [p for p in every_file_under(d.spool) if p not in planted] + [d.log_path]:
        with open(path, "rb") as f:
            data = f.read()
        assert SECRET.encode() not in data, f"the secret appears in {path}"
        assert TEST_KEY.encode() not in data, f"the API key appears in {path}"


def test_symlink_planted_in_done_is_not_followed(env):
    d = env.daemon().start()
    target = os.path.join(d.dir, "victim.txt")
    with open(target, "w") as f:
        f.write("precious")
    os.makedirs(d.path("done"), exist_ok=True)
    os.symlink(target, d.path("done", "planted.png"))
    os.symlink(target, d.path("done", "planted.result.json"))
    d.submit("planted", {"prompt": "a planted symlink"})
    assert d.wait_finished("planted") == "done"
    assert open(target).read() == "precious", "the write went through the planted symlink"
    assert not os.path.islink(d.path("done", "planted.png"))
    assert d.read("done", "planted.png")[:4] == b"\x89PNG"


def test_reference_symlink_escape(env):
    d = env.daemon().start()
    outside = os.path.join(d.dir, "outside.png")
    with open(outside, "wb") as f:
        f.write(png_for(SECRET))
    os.makedirs(d.path("refs", "sub"), exist_ok=True)
    os.symlink(d.dir, d.path("refs", "up"))           # a directory symlink out of the spool
    os.symlink(outside, d.path("refs", "sub", "x.png"))
    d.submit("dirlink", {"prompt": "x", "images": ["refs/up/outside.png"]})
    d.submit("filelink", {"prompt": "x", "images": ["refs/sub/x.png"]})
    d.submit("masklink", {"prompt": "x", "images": ["refs/sub/x.png"], "mask": "refs/up/outside.png"})
    for task_id in ("dirlink", "filelink", "masklink"):
        assert d.wait_finished(task_id) == "failed", task_id
    assert env.fake.snapshot() == [], "a reference outside the spool was uploaded"


def test_a_bad_name_swapped_while_claimed_is_never_published(env):
    # review10 F4: the file checked (regular, one link) was then renamed by its name: a FIFO or
    # a directory put there in between was moved to failed/badname-H.json, and a directory
    # there made every later file of that name wait in running/. Now the daemon stops between
    # its check and its rename (a stop point) while the test swaps the name.
    name = "bad name!.json"
    badname = "badname-" + hashlib.sha256(name.encode()).hexdigest()[:16]
    d = env.daemon()
    d.start(extra_env={"IMGSPOOLD_STOP_AT": "claim:badname"})
    path = d.path("new", name)

    def dropped(prompt):
        with open(d.path("tmp", "x"), "w") as f:
            json.dump({"prompt": prompt}, f)
        os.rename(d.path("tmp", "x"), path)
        wait_for(d.stopped, 20, "the daemon to stop between its check and its rename")

    def swapped_back(kind, count):
        d.send_signal(signal.SIGCONT)
        d.wait_logged(f"{badname} back to new/ (replaced while being claimed)", count=count)
        assert not os.path.isfile(path) and os.path.lexists(path), f"the {kind} is not back"
        assert badname + ".json" not in d.listdir("failed"), d.listdir("failed")
        assert not [n for n in d.listdir("running") if badname in n], d.listdir("running")

    dropped("the first")
    os.mkfifo(d.path("tmp", "fifo"))
    os.rename(d.path("tmp", "fifo"), path)
    swapped_back("FIFO", 1)
    os.unlink(path)
    dropped("the second")
    os.unlink(path)
    os.mkdir(d.path("tmp", "dir"))
    os.rename(d.path("tmp", "dir"), path)
    swapped_back("directory", 2)
    os.rmdir(path)
    # A later file of that name is refused as ever: nothing of the swaps stands in its way.
    dropped("the third")
    d.send_signal(signal.SIGCONT)
    # The job file moves last (spool-layout.md §5): its result is there before it.
    wait_for(lambda: badname + ".json" in d.listdir("failed"), 20, "the third refused")
    with open(d.path("failed", badname + ".json")) as f:
        assert json.load(f)["prompt"] == "the third"
    assert d.stop() == 0


def test_a_bad_name_swapped_for_a_directory_with_data_never_blocks_that_name(env):
    # review11 R8: a non-empty directory swapped in at a bad name while it was claimed, the
    # name then taken again by a file, could not go back (EEXIST) nor be removed (not empty):
    # it stayed at running/badname-H@HOST.json, and every later file of that name waited in
    # new/ for ever. Now it is moved aside to new/.badname-H.put-aside.MS, a dotfile, whole.
    name = "bad name!.json"
    badname = "badname-" + hashlib.sha256(name.encode()).hexdigest()[:16]
    d = env.daemon()
    d.start(extra_env={"IMGSPOOLD_STOP_AT": "claim:badname,claim:badname-taken"})
    path = d.path("new", name)

    def dropped(prompt, at):
        with open(d.path("tmp", "x"), "w") as f:
            json.dump({"prompt": prompt}, f)
        os.rename(d.path("tmp", "x"), at)

    dropped("the first", path)
    wait_for(d.stopped, 20, "the daemon to stop between its check and its rename")
    os.unlink(path)
    os.mkdir(d.path("tmp", "dir"))
    with open(d.path("tmp", "dir", "payload"), "w") as f:
        f.write("a client's data")
    os.rename(d.path("tmp", "dir"), path)
    d.send_signal(signal.SIGCONT)
    wait_for(d.stopped, 20, "the daemon to stop once its rename took the directory")
    dropped("the second", path)   # the name taken again: the directory cannot go back
    d.send_signal(signal.SIGCONT)
    d.wait_logged(f"{badname} warning: moved 'running/{badname}@testhost.json' (what replaced "
                  f"'new/{name}' while it was being claimed")
    aside = [n for n in os.listdir(d.path("new")) if n.startswith(f".{badname}.put-aside.")]
    assert len(aside) == 1, os.listdir(d.path("new"))
    with open(d.path("new", aside[0], "payload")) as f:
        assert f.read() == "a client's data"
    assert not [n for n in d.listdir("running") if badname in n], d.listdir("running")
    wait_for(d.stopped, 20, "the daemon to stop at the second file's claim")
    d.send_signal(signal.SIGCONT)
    wait_for(lambda: badname + ".json" in d.listdir("failed"), 20, "the second refused")
    with open(d.path("failed", badname + ".json")) as f:
        assert json.load(f)["prompt"] == "the second"
    assert d.stop() == 0


def test_a_directory_left_at_a_bad_names_running_name_is_moved_aside(env):
    # review11 R8, the end state: a non-empty directory at running/badname-H@HOST.json (left
    # by an earlier release) was read at every rescan as "not a regular file", and every file
    # of that bad name waited in new/ for ever, unanswered. Now it is moved aside at the start.
    name = "-x.json"
    badname = "badname-" + hashlib.sha256(name.encode()).hexdigest()[:16]
    d = env.daemon()
    for sub in ("new", "tmp", "running"):
        os.makedirs(d.path(sub), exist_ok=True)
    os.makedirs(d.path("running", f"{badname}@testhost.json"))
    with open(d.path("running", f"{badname}@testhost.json", "payload"), "w") as f:
        f.write("x")
    d.start()
    with open(d.path("tmp", "x"), "w") as f:
        json.dump({"prompt": "x"}, f)
    os.rename(d.path("tmp", "x"), d.path("new", name))
    wait_for(lambda: badname + ".json" in d.listdir("failed"), 30, "the bad name refused")
    aside = [n for n in os.listdir(d.path("new")) if n.startswith(f".{badname}.put-aside.")]
    assert len(aside) == 1, os.listdir(d.path("new"))
    assert os.path.isfile(d.path("new", aside[0], "payload"))
    d.wait_logged(f"{badname} warning: moved 'running/{badname}@testhost.json' (left there by "
                  "a bad name's claim, not a plain file, holding data) aside")
    assert d.stop() == 0

if __name__ == "__main__":
    run_tests([
        test_hostile_entries_in_new,
        test_symlink_planted_in_done_is_not_followed,
        test_reference_symlink_escape,
        test_a_bad_name_swapped_while_claimed_is_never_published,
        test_a_bad_name_swapped_for_a_directory_with_data_never_blocks_that_name,
        test_a_directory_left_at_a_bad_names_running_name_is_moved_aside,
    ])
