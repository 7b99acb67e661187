#!/usr/bin/env python3
"""The daemon as a service (issue 9): journald priorities, systemd notify and watchdog,
reload, cost-safe stop, metrics."""
import os
import re
import signal
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import run_tests, wait_for  # noqa: E402


def test_journal_lines_carry_their_priority(env):
    d = env.daemon(key=None).start(journal=True)
    raw = d.raw_log()
    assert re.search(r"^<6>imgspoold: ready", raw, re.M), raw
    # A hold needs an operator but is not an error: a warning.
    assert re.search(r"^<4>imgspoold: warning: provider 'apiyi' is on hold", raw, re.M), raw
    assert not re.search(r"^\d{4}-", raw, re.M), "the journal stamps lines itself"
    lines = [line for line in raw.splitlines() if line]
    assert all(re.match(r"<[3-7]>", line) for line in lines), lines


def test_lines_elsewhere_carry_a_timestamp(env):
    d = env.daemon(key=None).start()
    raw = d.raw_log()
    lines = [line for line in raw.splitlines() if line]
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d "
    assert lines and all(re.match(stamp, line) for line in lines), raw
    assert not re.search(r"^<\d>", raw, re.M), raw


if __name__ == "__main__":
    run_tests([
        test_journal_lines_carry_their_priority,
        test_lines_elsewhere_carry_a_timestamp,
    ])
