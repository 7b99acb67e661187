#!/usr/bin/env python3
"""Who owns what in a spool shared by a group (contrib/README.md's recipe, spool-layout.md §12):
a client of the group (here uid 23456, group 4242, run through setpriv) must not be able to make
the daemon believe her files. With the old recipe (a root the group may write, no sticky bit)
she moved running/ aside and made her own: at the next start her forged answer was published as
a paid result; or she replaced control/ and cancelled another user's call. The daemon now
refuses such a root, refuses a state directory it trusts that someone else owns or may write,
and does not follow a replacement someone else made."""
import base64
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import harness  # noqa: E402
from harness import run_tests, wait_for  # noqa: E402
from upstream import png_for  # noqa: E402

GROUP, CLIENT = 4242, 23456


def as_client(script):
    """Runs python code as the client: uid 23456, in the spool's group only; its output."""
    r = subprocess.run(["setpriv", "--reuid", str(CLIENT), "--regid", str(CLIENT), "--groups",
                        str(GROUP), sys.executable, "-c", script], capture_output=True,
                       text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    return r.stdout


def group_spool(d, root_mode, dirs_mode=0o2750, clients_mode=0o3770):
    """A spool made as contrib/README.md says (the daemon's user is root here)."""
    os.chmod(harness.SCRATCH, 0o711)
    os.chmod(d.dir, 0o711)
    os.makedirs(d.spool)
    os.chown(d.spool, 0, GROUP)
    os.chmod(d.spool, root_mode)
    for name, mode in [("tmp", clients_mode), ("new", clients_mode)] + [(n, dirs_mode) for n in (
            "running", "deferred", "done", "failed", "hold", "control", "outbox")]:
        path = os.path.join(d.spool, name)
        os.mkdir(path)
        os.chown(path, 0, GROUP)
        os.chmod(path, mode)


def refused_at_start(d, words):
    d.start(wait_ready=False)
    wait_for(d.exited, 20, f"the daemon to refuse the spool:\n{d.log()[-2000:]}")
    assert d.proc.returncode != 0, d.log()[-2000:]
    log = d.log()
    assert "refusing the spool" in log and words in log, log[-2000:]
    assert "imgspoold: ready" not in log, log[-2000:]


def test_a_root_the_group_may_rename_in_is_refused(env):
    # The old recipe: 2775, no sticky bit. A client could rename running/ or control/.
    d = env.daemon()
    group_spool(d, 0o2775)
    refused_at_start(d, f"'{d.spool}' is writable by its group or others (mode 2775) without "
                     "the sticky bit")


def test_a_running_dir_a_client_made_is_refused(env):
    d = env.daemon()
    group_spool(d, 0o2775)
    forged = b'{"data":[{"b64_json":"' + base64.b64encode(png_for("FORGED")) + b'"}]}'
    side = b"imgspool-sidecar id=evil attempt=1\n" + forged
    # Before the operator added the sticky bit, she put her own running/ in place.
    as_client(f"""
import os
os.chdir({d.spool!r})
os.rename("running", "running.client")
os.mkdir("running"); os.chmod("running", 0o755)
open("running/evil@testhost.json", "w").write('{{"prompt": "real evil"}}')
open("running/.evil@testhost.response.200", "wb").write({side!r})
""")
    os.chmod(d.spool, 0o3775)
    refused_at_start(d, f"'{d.path('running')}' is owned by uid {CLIENT}, not by the daemon's "
                     "user (uid 0) or root")
    assert os.listdir(d.path("done")) == [], os.listdir(d.path("done"))
    assert env.fake.calls("real evil") == 0


def test_a_trusted_dir_the_group_may_write_is_refused(env):
    d = env.daemon()
    group_spool(d, 0o3775)
    os.chmod(d.path("control"), 0o2770)
    refused_at_start(d, f"'{d.path('control')}' is writable by its group or others (mode 2770)")


def test_a_control_dir_a_client_made_is_not_followed(env):
    # The sticky root keeps her from renaming control/; but once an operator moved it aside,
    # she may be first to make one, and each request in it would be taken for an operator's.
    d = env.daemon()
    group_spool(d, 0o3775)
    env.fake.script("victim", [{"kind": "b64", "delay": 6}])
    d.start()
    d.submit("victim", {"prompt": "victim"})
    wait_for(lambda: env.fake.calls("victim") == 1, 20, "the victim's call sent")
    os.rename(d.path("control"), d.path("control.old"))
    as_client(f"""
import os
os.chdir({d.spool!r})
os.mkdir("control"); os.chmod("control", 0o755)
open("control/.c", "w").close(); os.rename("control/.c", "control/cancel.victim")
""")
    d.wait_logged(f"'{d.path('control')}' was replaced by a directory that is owned by uid "
                  f"{CLIENT}")
    assert d.wait_finished("victim", 30) == "done", d.log()[-2000:]
    d.assert_not_logged("cancelled by an operator")
    assert d.stop() == 0


def test_the_group_recipe_keeps_clients_out_of_the_state_dirs(env):
    # contrib/README.md's recipe as it is now: the daemon starts, a client submits, and she
    # cannot rename a state directory.
    d = env.daemon()
    group_spool(d, 0o3775)
    d.start()
    out = as_client(f"""
import os
os.chdir({d.spool!r})
for a, b in (("running", "running.x"), ("control", "control.x"), ("done", "done.x")):
    try:
        os.rename(a, b)
        print("renamed", a)
    except PermissionError:
        pass
with open("tmp/job", "w") as f:
    f.write('{{"prompt": "a client\\'s job"}}')
os.rename("tmp/job", "new/client.json")
""")
    assert "renamed" not in out, out
    assert d.wait_finished("client") == "done", d.log()[-2000:]
    assert d.stop() == 0


ALICE = 12345


def submit_as_client(d, task_id, job):
    as_client(f"""
import os
with open({d.path("tmp", task_id)!r}, "w") as f:
    f.write({json.dumps(job)!r})
os.rename({d.path("tmp", task_id)!r}, {d.path("new", task_id + ".json")!r})
""")


def alices_image(d, dir_mode, file_mode, name="private.png"):
    """refs-alice/NAME, alice's (uid 12345), with these modes; its path from the root."""
    os.makedirs(d.path("refs-alice"), exist_ok=True)
    path = d.path("refs-alice", name)
    with open(path, "wb") as f:
        f.write(png_for("ALICE " + name))
    for p, mode in ((path, file_mode), (d.path("refs-alice"), dir_mode)):
        os.chown(p, ALICE, ALICE)
        os.chmod(p, mode)
    return f"refs-alice/{name}"


def test_a_reference_its_submitter_may_not_read_is_not_uploaded(env):
    # The daemon runs as root: it could read alice's private image; the client could not.
    d = env.daemon()
    group_spool(d, 0o3775)
    d.start()
    hidden = alices_image(d, 0o700, 0o644)
    submit_as_client(d, "through", {"prompt": "through a 0700 directory", "images": [hidden]})
    assert d.wait_finished("through") == "failed", d.log()[-2000:]
    error = d.result("through")["error"]
    assert error["code"] == "invalid_request" and error["field"] == "images[0]", error
    assert f"its submitter (uid {CLIENT}) may not enter 'refs-alice'" in error["message"], error
    os.chmod(d.path("refs-alice"), 0o755)
    os.chmod(d.path(hidden), 0o600)
    submit_as_client(d, "private", {"prompt": "a 0600 file", "images": [hidden]})
    assert d.wait_finished("private") == "failed", d.log()[-2000:]
    error = d.result("private")["error"]
    assert f"may not read it (owner uid {ALICE}, mode 0600)" in error["message"], error
    assert env.fake.calls("through a 0700 directory") == 0 and env.fake.calls("a 0600 file") == 0
    # What she may read herself she may send: alice's 0644 file, and her own 0600 one.
    os.chmod(d.path(hidden), 0o644)
    as_client(f"""
import os
os.mkdir({d.path("refs-client")!r}, 0o700)
with open({d.path("refs-client", "mine.png")!r}, "wb") as f:
    f.write({png_for("MINE")!r})
os.chmod({d.path("refs-client", "mine.png")!r}, 0o600)
""")
    submit_as_client(d, "readable", {"prompt": "readable ones", "images": [
        hidden, "refs-client/mine.png"]})
    assert d.wait_finished("readable") == "done", d.log()[-2000:]
    assert env.fake.calls("readable ones") == 1
    assert d.stop() == 0


def test_a_reference_in_a_state_directory_is_refused(env):
    d = env.daemon()
    group_spool(d, 0o3775)
    d.start()
    d.submit("first", {"prompt": "a result"})
    assert d.wait_finished("first") == "done"
    (image,) = d.result("first")["images"]
    for task_id, path in (("indone", f"done/{image}"), ("dotted", f"./done/{image}")):
        submit_as_client(d, task_id, {"prompt": f"names {path}", "images": [path]})
        assert d.wait_finished(task_id) == "failed", d.log()[-2000:]
        error = d.result(task_id)["error"]
        assert "it is in a state directory" in error["message"], error
        assert env.fake.calls(f"names {path}") == 0
    assert d.stop() == 0

def test_a_ledger_month_the_group_may_write_is_not_believed(env):
    # A spool of the old recipe (umask 007) upgraded as contrib/README.md said before: ledger/
    # and providers/ made 0755, but ledger/MONTH/, its ended/ and providers/NAME/ left 2770. A
    # client there could crowd the month (every budgeted call on every host waited) or remove
    # or forge a host's spend. The daemon believes none of it: budgeted calls wait, said.
    d = env.daemon(verbose=True, spool__concurrency=1, budget__daily="100",
                   **{"prices__gpt-image-2": "0.01"})
    group_spool(d, 0o3775)
    d.start()
    d.submit("first", {"prompt": "first"})
    assert d.wait_finished("first") == "done", d.log()[-2000:]
    assert d.stop() == 0
    (month,) = [m for m in os.listdir(d.path("ledger")) if m.startswith("20")]
    for rel in (f"ledger/{month}", f"ledger/{month}/ended", "providers/apiyi",
                "providers/apiyi/calls"):
        os.chown(d.path(rel), 0, GROUP)
        os.chmod(d.path(rel), 0o2770)
    as_client(f"""
open({d.path("ledger", month, "planted.json")!r}, "w").close()
""")
    d.start()
    for rel in (f"ledger/{month}", "providers/apiyi"):
        d.wait_logged(f"'{d.path(rel)}' is writable by its group or others (mode 2770)")
    d.wait_logged(f"(chmod -R go-w '{d.spool}/ledger' '{d.spool}/providers'; spool-layout.md")
    since = len(d.log())
    d.submit("second", {"prompt": "second"})
    d.wait_logged("provider 'apiyi': no room among every host's calls", count=3, since=since)
    assert env.fake.calls("second") == 0 and d.state("second") == "new", d.log()[-2000:]
    # The operator's fix, as contrib/README.md says it now: the calls go.
    subprocess.run(["chmod", "-R", "go-w", d.path("ledger"), d.path("providers")], check=True)
    assert d.wait_finished("second", 40) == "done", d.log()[-2000:]
    d.wait_logged(f"'{d.path('ledger', month)}' is the daemon's alone again")
    assert env.fake.calls("second") == 1
    # Made writable again while the daemon holds it open: judged again at its next look.
    since = len(d.log())
    os.chmod(d.path("ledger", month), 0o2770)
    d.submit("third", {"prompt": "third"})
    d.wait_logged(f"'{d.path('ledger', month)}' is writable by its group or others", since=since)
    os.chmod(d.path("ledger", month), 0o2750)
    assert d.wait_finished("third", 40) == "done", d.log()[-2000:]
    assert d.stop() == 0

def test_a_ledger_a_client_made_is_moved_aside(env):
    # The root is sticky but the group may write it: a client may take a name it lacks. She
    # made ledger/ and providers/ before the first start (the start was refused), and again
    # after an operator cleared ledger/ (spool-layout.md, "A cleared ledger": budgeted calls
    # waited on every host). The daemon, the root's owner, moves hers aside and makes its own.
    d = env.daemon(spool__concurrency=1, budget__daily="100", **{"prices__gpt-image-2": "0.01"})
    group_spool(d, 0o3775)
    as_client(f"""
import os
for name in ("ledger", "providers"):
    os.mkdir(os.path.join({d.spool!r}, name), 0o700)
""")
    d.start()
    for name in ("ledger", "providers"):
        (line,) = d.wait_logged(f"'{d.path(name)}' was owned by uid {CLIENT}, not by the "
                                "daemon's user (uid 0) or root")
        aside = line.split("moved aside as '")[1].split("'")[0]
        assert aside.startswith(f"{name}.untrusted."), line
        assert os.stat(d.path(aside)).st_uid == CLIENT
        assert os.stat(d.path(name)).st_uid == 0
    d.submit("first", {"prompt": "first"})
    assert d.wait_finished("first") == "done", d.log()[-2000:]
    # Cleared while it runs; she is first to make it again.
    since = len(d.log())
    subprocess.run(["rm", "-rf", d.path("ledger")], check=True)
    as_client(f"import os; os.mkdir({d.path('ledger')!r}, 0o700)")
    d.submit("second", {"prompt": "second"})
    d.wait_logged(f"'{d.path('ledger')}' was owned by uid {CLIENT}", since=since, timeout=30)
    assert d.wait_finished("second", 30) == "done", d.log()[-2000:]
    assert os.stat(d.path("ledger")).st_uid == 0
    assert d.stop() == 0


if __name__ == "__main__":
    run_tests([
        test_a_root_the_group_may_rename_in_is_refused,
        test_a_running_dir_a_client_made_is_refused,
        test_a_trusted_dir_the_group_may_write_is_refused,
        test_a_control_dir_a_client_made_is_not_followed,
        test_the_group_recipe_keeps_clients_out_of_the_state_dirs,
        test_a_reference_its_submitter_may_not_read_is_not_uploaded,
        test_a_reference_in_a_state_directory_is_refused,
        test_a_ledger_month_the_group_may_write_is_not_believed,
        test_a_ledger_a_client_made_is_moved_aside,
    ])
