#!/usr/bin/env python3
"""What the daemon trusts: secrets quoted back by an upstream, the daemon's records in job files,
sidecars in running/, responses that carry more than was asked for (issue 8)."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import TEST_KEY, run_tests, wait_for  # noqa: E402


def files_under(root):
    for dirpath, _, names in os.walk(root):
        for name in names:
            yield os.path.join(dirpath, name)


def test_key_quoted_back_is_redacted_everywhere(env):
    env.fake.script("echo my key", ["400_key_echo"])
    d = env.daemon().start()
    d.submit("echo", {"prompt": "echo my key"})
    assert d.wait_finished("echo") == "failed"
    r = d.result("echo")
    assert r["error"]["code"] == "invalid_request", r["error"]
    message = r["error"]["upstream_message"]
    assert "[redacted]" in message and "unsupported size" in message, message
    for path in files_under(d.spool):
        with open(path, "rb") as f:
            assert TEST_KEY.encode() not in f.read(), f"the key is in {path}"
    assert TEST_KEY not in d.log()


if __name__ == "__main__":
    run_tests([
        test_key_quoted_back_is_redacted_everywhere,
    ])
