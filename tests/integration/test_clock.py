#!/usr/bin/env python3
"""Times: file times any client can set, the probe of the file server's clock, and hosts whose
clock is off (issue 8, items 2, 14 and 15)."""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import run_tests, wait_for  # noqa: E402

YEAR_2300 = 10_413_792_000          # past 2262: seconds * 1e9 no longer fits in 64 bits


def test_mtimes_past_2262_are_harmless(env):
    d = env.daemon(verbose=True).start()
    os.makedirs(d.path("tmp"), exist_ok=True)
    for name in ("future", "far-future"):
        path = d.path("tmp", name + ".json")
        with open(path, "w") as f:
            json.dump({"prompt": f"a job from {name}"}, f)
        when = YEAR_2300 if name == "future" else 2 ** 62
        os.utime(path, (when, when))
        os.rename(path, d.path("new", name + ".json"))
    with open(d.path("tmp", "left-behind.json"), "w") as f:
        f.write("{")
    os.utime(d.path("tmp", "left-behind.json"), (YEAR_2300, YEAR_2300))
    assert d.wait_finished("future") == "done"
    assert d.wait_finished("far-future") == "done"
    d.wait_rescans(2)
    assert not d.exited(), d.log()[-3000:]
    assert d.result("future")["created_at"].startswith("2300-"), d.result("future")["created_at"]


if __name__ == "__main__":
    run_tests([
        test_mtimes_past_2262_are_harmless,
    ])
