#!/usr/bin/env python3
"""Who owns what in a spool shared by a group (contrib/README.md's recipe, spool-layout.md §12):
a client of the group (here uid 23456, group 4242, run through setpriv) must not be able to make
the daemon believe her files. With the old recipe (a root the group may write, no sticky bit)
she moved running/ aside and made her own: at the next start her forged answer was published as
a paid result; or she replaced control/ and cancelled another user's call. The daemon now
refuses such a root, refuses a state directory it trusts that someone else owns or may write,
and does not follow a replacement someone else made."""
import base64
import hashlib
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


if __name__ == "__main__":
    run_tests([
        test_a_root_the_group_may_rename_in_is_refused,
        test_a_running_dir_a_client_made_is_refused,
        test_a_trusted_dir_the_group_may_write_is_refused,
        test_a_control_dir_a_client_made_is_not_followed,
        test_the_group_recipe_keeps_clients_out_of_the_state_dirs,
    ])
