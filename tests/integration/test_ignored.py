#!/usr/bin/env python3
"""Entries of new/ the daemon ignores (a second link, a symlink, an over-size file) are looked at
again when they change, and the names it remembers never outlive the entries (issue 8, item 1)."""
import json
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import run_tests, wait_for  # noqa: E402


def wait_ignored(d, name):
    wait_for(lambda: f"ignoring 'new/{name}'" in d.log(), 10, f"new/{name} to be ignored")


def test_maildir_delivery_with_two_links_for_a_moment(env):
    d = env.daemon(verbose=True).start()
    tmp = d.path("tmp", "maildir.json")
    with open(tmp, "w") as f:
        json.dump({"prompt": "delivered the maildir way"}, f)
    os.link(tmp, d.path("new", "maildir.json"))      # link() into new/, then unlink() from tmp/
    wait_ignored(d, "maildir.json")
    os.unlink(tmp)
    assert d.wait_finished("maildir") == "done"


def test_job_renamed_over_an_ignored_symlink(env):
    d = env.daemon(verbose=True).start()
    os.symlink("/etc/hostname", d.path("new", "over-link.json"))
    wait_ignored(d, "over-link.json")
    d.submit("over-link", {"prompt": "renamed over a symlink"})
    assert d.wait_finished("over-link") == "done"


def test_job_renamed_over_an_ignored_oversize_file(env):
    d = env.daemon(verbose=True, limits__max_job_bytes=1024).start()
    d.submit("over-big", {"prompt": "x", "metadata": "y" * 70000})   # past any cap
    wait_ignored(d, "over-big.json")
    d.submit("over-big", {"prompt": "a small job renamed over a big one"})
    assert d.wait_finished("over-big") == "done"


def test_a_client_file_past_max_job_bytes_is_ignored(env):
    """The record headroom past max_job_bytes is for files the daemon wrote (issue 8, item 4)."""
    d = env.daemon(verbose=True, limits__max_job_bytes=1024).start()
    d.submit("a-bit-big", {"prompt": "x", "metadata": "y" * 2000})   # under the 64 KiB headroom
    wait_ignored(d, "a-bit-big.json")
    assert "larger than [limits] max_job_bytes" in d.log()
    assert d.state("a-bit-big") not in ("done", "failed")
    attempt = {"started_at": "2026-11-29T08:01:01.361+00:00", "latency_ms": 10, "provider": "apiyi",
               "model": "gpt-image-2", "http_status": 503, "transport": "done", "outcome": "retry",
               "billed": "no", "cost": 0.0, "error_code": "upstream_unavailable",
               "request_id": "r" * 32}
    # Written by the daemon's user with its records (as imgspool retry leaves it): still runs.
    job = {"prompt": "with records", "metadata": "y" * 600,
           "imgspool": {"attempts": [attempt, attempt], "retry_count": 2, "billed_retries": 0,
                        "crashes": 0}}
    assert len(json.dumps(job)) > 1024
    d.submit("records", job)
    assert d.wait_finished("records") == "done", d.log()[-2000:]


def known_after_next_rescan(d):
    """The count of remembered names that the next full rescan logs."""
    seen = len(re.findall(r"rescan of new/.*", d.log()))
    d.wait_rescans(1)
    lines = re.findall(r"rescan of new/: \d+ entries, \d+ stat'ed, \d+ pending, (\d+) known", d.log())
    assert len(lines) > seen, "the rescan does not say how many names it remembers"
    return int(lines[-1])


def test_removed_names_are_forgotten(env):
    d = env.daemon(verbose=True).start()
    new = d.path("new")
    names = [f"gone-{i:05d}.json" for i in range(5000)]
    for name in names:
        os.symlink("/nonexistent", os.path.join(new, name))   # each ignored, logged once
    wait_for(lambda: known_after_next_rescan(d) >= 5000, 60, "5000 names to be remembered")
    for name in names:
        os.unlink(os.path.join(new, name))
    assert known_after_next_rescan(d) == 0, "names of removed entries are still remembered"


if __name__ == "__main__":
    run_tests([
        test_maildir_delivery_with_two_links_for_a_moment,
        test_job_renamed_over_an_ignored_symlink,
        test_job_renamed_over_an_ignored_oversize_file,
        test_a_client_file_past_max_job_bytes_is_ignored,
        test_removed_names_are_forgotten,
    ])
