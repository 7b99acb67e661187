#!/usr/bin/env python3
"""make install (issue 9): the tree a Debian admin expects, man pages that render and lint
clean and document every key, a unit systemd accepts, sandboxed to an exposure of 1.5 at most."""
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import ROOT, run_tests  # noqa: E402


def make_install(**variables):
    args = [f"{k}={v}" for k, v in variables.items()]
    res = subprocess.run(["make", "-s", "-C", ROOT, "install", *args], capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def lint(path):
    """mandoc -T lint, less what depends on this machine's installed manuals."""
    res = subprocess.run(["mandoc", "-T", "lint", path], capture_output=True, text=True)
    return [line for line in (res.stdout + res.stderr).splitlines()
            if "referenced manual not found" not in line and "mandoc.db" not in line]


def config_keys():
    """(section, key, type, min, max, default) of every row of src/config.c's key table."""
    src = open(os.path.join(ROOT, "src", "config.c")).read()
    rows = re.findall(r'\{ "(\w+)", "(\w+)", (T_\w+), [CP]\(\w+\), ([^,]+), ([^,]+),\s*"([^"]*)" \}', src)
    assert len(rows) > 40, f"the key table was not found ({len(rows)} rows)"
    value = lambda e: int(eval(e.replace("L", ""), {}))  # "1 << 20", "64L << 20", "30 * 86400"
    return [(s, k, t, value(lo), value(hi), d) for s, k, t, lo, hi, d in rows]


def test_install_tree_and_man_pages(env):
    with tempfile.TemporaryDirectory() as dest:
        make_install(DESTDIR=dest, PREFIX="/usr/local")
        p = os.path.join(dest, "usr", "local")
        for path in ("sbin/imgspoold", "bin/imgspool", "share/man/man8/imgspoold.8",
                     "share/man/man5/imgspool.ini.5", "share/doc/imgspool/imgspool.ini",
                     "lib/systemd/system/imgspoold.service"):
            assert os.path.isfile(os.path.join(p, path)), f"{path} is not installed"
        for exe in ("sbin/imgspoold", "bin/imgspool"):
            assert os.access(os.path.join(p, exe), os.X_OK), exe
        pages = [os.path.join(d, f) for d, _, fs in os.walk(os.path.join(p, "share", "man"))
                 for f in fs]
        sources = [f for f in os.listdir(os.path.join(ROOT, "contrib", "man"))]
        assert sorted(os.path.basename(x) for x in pages) == sorted(sources), (pages, sources)
        for page in pages:
            assert not page.endswith(".gz")
            problems = lint(page)
            assert not problems, "\n".join(problems)
            shown = subprocess.run(["man", "-l", page], capture_output=True, text=True,
                                   env=dict(os.environ, MANPAGER="cat", MANWIDTH="80"))
            assert shown.returncode == 0 and "NAME" in shown.stdout and \
                "DESCRIPTION" in shown.stdout, (page, shown.stderr)
            assert not shown.stderr.strip(), (page, shown.stderr)
        # The installed daemon checks the installed example.
        check = subprocess.run([os.path.join(p, "sbin", "imgspoold"), "-n", "-c",
                                os.path.join(p, "share", "doc", "imgspool", "imgspool.ini")],
                               capture_output=True, text=True)
        assert check.returncode == 0, check.stderr


def test_every_config_key_is_in_the_manual(env):
    page = open(os.path.join(ROOT, "contrib", "man", "imgspool.ini.5")).read()
    sections = {}
    for chunk in re.split(r"^\.Ss ", page, flags=re.M)[1:]:
        title = re.match(r"\[(\w+)", chunk).group(1)
        sections[title] = chunk
    missing = []
    for section, key, kind, lo, hi, default in config_keys():
        text = sections.get(section, "")
        m = re.search(rf"^\.It Cm {key} No = .*?\n(.*?)(?=^\.It |^\.El)", text, re.S | re.M)
        if not m:
            missing.append(f"[{section}] {key}: not documented")
            continue
        entry = " ".join(m.group(1).split())
        if default and f"Default {default}" not in entry:
            missing.append(f"[{section}] {key}: default {default!r} not stated: {entry[-80:]}")
        if kind == "T_INT" and f"from {lo} to {hi}" not in entry:
            missing.append(f"[{section}] {key}: range {lo}-{hi} not stated: {entry[-80:]}")
    assert not missing, "\n".join(missing)


def test_every_config_key_is_in_the_example_and_none_else(env):
    """etc/imgspool.ini shows every key of the table in its section, set or commented out; the
    manual and the example name no key the table lacks (but the lines of [route NAME] and
    [prices] currency, which are not in the table)."""
    keys = {(s, k) for s, k, _, _, _, _ in config_keys()}
    extra = {("route", "target"), ("route", "fallback"), ("route", "strategy"),
             ("prices", "currency")}
    text = open(os.path.join(ROOT, "etc", "imgspool.ini")).read()
    shown, section = set(), None
    for line in text.splitlines():
        m = re.match(r";?\[(\w+)", line)   # a header, or one commented out (";[route x]")
        if m:
            section = m.group(1)
            continue
        m = re.match(r";?(\w+) = ", line)
        if m and (section not in ("timeouts", "prices") or m.group(1) == "currency"):
            shown.add((section, m.group(1)))
    missing = sorted(f"[{s}] {k}" for s, k in keys - shown)
    assert not missing, "keys etc/imgspool.ini does not show: " + ", ".join(missing)
    unknown = sorted(f"[{s}] {k}" for s, k in shown - keys - extra)
    assert not unknown, "etc/imgspool.ini shows keys config.c does not take: " + ", ".join(unknown)
    page = open(os.path.join(ROOT, "contrib", "man", "imgspool.ini.5")).read()
    documented = set()
    for chunk in re.split(r"^\.Ss ", page, flags=re.M)[1:]:
        title = re.match(r"\[(\w+)", chunk).group(1)
        for key in re.findall(r"^\.It Cm (\w+) No =", chunk, flags=re.M):
            documented.add((title, key))
    unknown = sorted(f"[{s}] {k}" for s, k in documented - keys - extra)
    assert not unknown, "imgspool.ini(5) documents keys config.c does not take: " + ", ".join(unknown)


def test_example_config_says_what_differs_from_the_defaults(env):
    text = open(os.path.join(ROOT, "etc", "imgspool.ini")).read()
    header = text.split("\n[", 1)[0]
    defaults = {(s, k): d for s, k, _, _, _, d in config_keys()}
    section, differ = None, []
    for line in text.splitlines():
        if line.startswith("["):
            section = line.strip("[]").split()[0]
        elif section and "=" in line and not line.startswith(";"):
            key, value = (x.strip() for x in line.split("=", 1))
            if section in ("timeouts", "prices"):
                continue
            if defaults.get((section, key)) != value:
                differ.append(f"[{section}] {key}")
                assert re.search(rf"\[{section}\] {key}\b", header), \
                    f"[{section}] {key} = {value} differs from the built-in default " \
                    f"{defaults.get((section, key))!r}, and the comment at the top does not say so"
    assert differ == ["[spool] dir"], differ
    assert "[prices]" in header, "the example's [prices] are not built in: the header must say so"


def test_unit_is_accepted_and_sandboxed(env):
    with tempfile.TemporaryDirectory() as prefix:
        # Installed for real under a prefix of its own, so the unit's paths exist.
        make_install(PREFIX=prefix)
        unit = os.path.join(prefix, "lib", "systemd", "system", "imgspoold.service")
        text = open(unit).read()
        assert f"ExecStart={prefix}/sbin/imgspoold " in text, "the unit's paths do not follow PREFIX"
        assert "Type=notify" in text and "WatchdogSec=" in text
        assert "\nLimitCORE=0\n" in text, "a core file would hold the keys"
        env_ = dict(os.environ, MANPATH=os.path.join(prefix, "share", "man"))
        verify = subprocess.run(["systemd-analyze", "verify", unit], capture_output=True, text=True,
                                env=env_)
        assert verify.returncode == 0 and not verify.stderr.strip(), verify.stdout + verify.stderr
        security = subprocess.run(["systemd-analyze", "security", "--offline=yes", unit],
                                  capture_output=True, text=True)
        m = re.search(r"Overall exposure level for imgspoold.service: ([0-9.]+)", security.stdout)
        assert m, security.stdout + security.stderr
        assert float(m.group(1)) <= 1.5, f"exposure {m.group(1)}"


if __name__ == "__main__":
    run_tests([
        test_install_tree_and_man_pages,
        test_every_config_key_is_in_the_manual,
        test_every_config_key_is_in_the_example_and_none_else,
        test_example_config_says_what_differs_from_the_defaults,
        test_unit_is_accepted_and_sandboxed,
    ])
