#!/usr/bin/env python3
"""Publication: a reused id ends in exactly one state with only its own run's files; a directory
planted in the way ends the job with a reason instead of retrying for ever (issue 8, items 5, 6)."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import run_tests, wait_for  # noqa: E402


def files_of(d, state, task_id):
    return sorted(n for n in d.listdir(state) if n == task_id + ".json" or n.startswith(task_id + "."))


def test_a_reused_id_is_in_one_state_with_its_own_files(env):
    d = env.daemon().start()
    env.fake.script("first run", ["b64"])
    d.submit("reused", {"prompt": "first run", "n": 2})
    assert d.wait_finished("reused") == "done"
    assert files_of(d, "done", "reused") == ["reused.1.png", "reused.2.png", "reused.json",
                                              "reused.result.json"]
    env.fake.script("second run", ["400_moderation"])
    d.submit("reused", {"prompt": "second run"})
    wait_for(lambda: files_of(d, "failed", "reused") == ["reused.json", "reused.result.json"], 20,
             "the second run to fail")
    assert files_of(d, "done", "reused") == [], files_of(d, "done", "reused")
    assert d.state("reused") == "failed" and d.result("reused")["status"] == "failed"
    env.fake.script("third run", ["b64"])
    d.submit("reused", {"prompt": "third run"})
    wait_for(lambda: files_of(d, "done", "reused") == ["reused.json", "reused.png",
                                                      "reused.result.json"], 20, "the third run")
    assert files_of(d, "failed", "reused") == [], files_of(d, "failed", "reused")
    assert d.result("reused")["status"] == "succeeded"


def test_a_directory_planted_at_the_result_ends_the_job_with_a_reason(env):
    d = env.daemon().start()
    os.makedirs(d.path("done", "planted.result.json", "inside"))
    d.submit("planted", {"prompt": "a paid image with nowhere to go"})
    assert d.wait_finished("planted") == "failed"
    err = d.result("planted")["error"]
    assert err["code"] == "publish_failed" and "is a directory" in err["message"], err
    assert d.result("planted")["images"] == ["planted.png"]
    assert os.path.exists(d.path("failed", "planted.png"))
    assert env.fake.calls("a paid image with nowhere to go") == 1
    assert "retrying every" not in d.log()


def test_a_slow_fsync_does_not_cost_the_lease(env):
    """Every fsync of host A takes 3 s (strace injects the delay), longer than the 2 s lease:
    A must go on heartbeating the job it holds, so host B never takes it and calls again."""
    env.fake.script("slow disk", ["b64"])
    slow = ["strace", "-f", "-qq", "-o", "/dev/null", "-e", "trace=fsync",
            "-e", "inject=fsync:delay_enter=3000000"]
    settings = dict(spool__lease_timeout=2, spool__poll_interval=1)
    a = env.daemon(spool__host_id="hostA", wrapper=slow, **settings).start()
    a.submit("slowdisk", {"prompt": "slow disk"})
    wait_for(lambda: "slowdisk claimed" in a.log(), 20, "host A to claim the job")
    b = env.daemon(spool_dir=a.spool, spool__host_id="hostB", verbose=True, **settings).start()
    assert a.wait_finished("slowdisk", 90) == "done"
    assert env.fake.calls("slow disk") == 1, "host B took the job from a live host and paid again"
    assert "reclaimed" not in b.log(), b.log()[-2000:]


if __name__ == "__main__":
    run_tests([
        test_a_reused_id_is_in_one_state_with_its_own_files,
        test_a_directory_planted_at_the_result_ends_the_job_with_a_reason,
        test_a_slow_fsync_does_not_cost_the_lease,
    ])
