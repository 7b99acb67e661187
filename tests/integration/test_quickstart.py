#!/usr/bin/env python3
"""A newcomer's first hour (issue 8, items 20-22): `make run`, `make test` and `make demo` build
the client too, the README's job.json is a valid job, the demo has a spool of its own and leaves
nothing in /tmp, and no test installs packages."""
import glob
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import IMGSPOOL, IMGSPOOLD, ROOT, SCRATCH, run_tests  # noqa: E402


def make_plan(target):
    """The commands `make TARGET` would run from scratch, without running them."""
    res = subprocess.run(["make", "-nB", "-C", ROOT, target], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_quick_start_targets_build_the_client(env):
    for target in ("run", "test", "demo"):
        plan = make_plan(target)
        assert re.search(r"-o build/imgspool\s", plan), f"make {target} does not build build/imgspool"
        assert re.search(r"-o build/imgspoold\s", plan), f"make {target} does not build build/imgspoold"


def test_readme_shows_a_valid_job_json(env):
    readme = open(os.path.join(ROOT, "README.md")).read()
    m = re.search(r"cat > job\.json <<'EOF'\n(.*?)\n\s*EOF\n", readme, re.S)
    assert m, "the README does not show the job.json it submits"
    assert "imgspool -d spool submit job.json" in readme
    job = os.path.join(SCRATCH, "job.json")
    with open(job, "w") as f:
        f.write("\n".join(line.strip() for line in m.group(1).splitlines()))
    spool = os.path.join(SCRATCH, "spool")
    # A spool as the daemon of `make run` leaves it (the client refuses a directory without
    # new/ and done/: a wrong -d must not be taken for a spool).
    for sub in ("tmp", "new", "running", "deferred", "done", "failed"):
        os.makedirs(os.path.join(spool, sub))
    try:
        res = subprocess.run([IMGSPOOL, "-d", spool, "submit", job], capture_output=True, text=True)
        assert res.returncode == 0, f"the README's job.json is refused: {res.stderr}"
        assert os.listdir(os.path.join(spool, "new")) == [res.stdout.strip() + ".json"]
    finally:
        subprocess.run(["rm", "-rf", spool, job])


def test_demo_has_a_spool_of_its_own(env):
    # A daemon from `make run` watches ./spool: the demo must not put its job there.
    before = set(glob.glob(os.path.join(ROOT, "spool", "*", "*")))
    res = subprocess.run([sys.executable, os.path.join(ROOT, "contrib", "demo.py"), IMGSPOOLD,
                          IMGSPOOL], capture_output=True, text=True, timeout=120,
                         stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stdout + res.stderr
    m = re.search(r"-> (\S+)\n", res.stdout)
    assert m and "demo: done" in res.stdout, res.stdout
    task_id = m.group(1)
    after = set(glob.glob(os.path.join(ROOT, "spool", "*", "*")))
    assert not [p for p in after - before if task_id in p], "the demo used ./spool"
    assert os.path.exists(os.path.join(ROOT, "build", "demo", "spool", "done", task_id + ".json"))
    # (run_tests checks that nothing was left in the temporary directory)


def test_no_test_installs_packages(env):
    deps = open(os.path.join(ROOT, "contrib", "install-deps.sh")).read()
    offenders = []
    for path in glob.glob(os.path.join(ROOT, "tests", "**", "*"), recursive=True):
        if not path.endswith((".py", ".sh")):
            continue
        for n, line in enumerate(open(path, errors="replace"), 1):
            code = line.split("#", 1)[0]
            if re.search(r"""["']apt-get["']|["']apt["']|["']dpkg["']|\bpip3? install|^\s*(sudo\s+)?apt(-get)? """, code):
                offenders.append(f"{os.path.relpath(path, ROOT)}:{n}: {line.strip()}")
    assert not offenders, "tests install packages:\n" + "\n".join(offenders)
    sys.path.insert(0, os.path.join(ROOT, "tests", "lib"))
    import sshfs
    for package in sshfs.PACKAGES + ["prometheus", "mandoc", "man-db", "systemd"]:
        assert re.search(rf"\b{re.escape(package)}\b", deps), f"install-deps.sh lacks {package}"


if __name__ == "__main__":
    run_tests([
        test_quick_start_targets_build_the_client,
        test_readme_shows_a_valid_job_json,
        test_demo_has_a_spool_of_its_own,
        test_no_test_installs_packages,
    ])
