#!/usr/bin/env python3
"""What the daemon trusts: secrets quoted back by an upstream, the daemon's records in job files,
sidecars in running/, responses that carry more than was asked for (issue 8)."""
import json
import os
import sys
import time

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


CDN_524 = (b"<!DOCTYPE html><html><head><title>api-cf.apiyi.com | 524: A timeout occurred</title>"
           b"</head><body><h1>A timeout occurred</h1><p>Error code 524</p></body></html>")


def plant_dead_hosts_job(d, task_id, job, sidecars, host="deadhost"):
    """What a daemon that died leaves in running/: its job file and its saved sidecars, with a
    lease that ran out long ago."""
    os.makedirs(d.path("running"), exist_ok=True)
    path = d.path("running", f"{task_id}@{host}.json")
    with open(path, "w") as f:
        json.dump(job, f)
    for suffix, body in sidecars.items():
        with open(d.path("running", f".{task_id}@{host}.{suffix}"), "wb") as f:
            f.write(body)
    old = time.time() - 600
    os.utime(path, (old, old))


def test_reclaim_carries_every_saved_response(env):
    env.fake.script("reclaimed after a 524", ["b64"])
    d = env.daemon(spool__lease_timeout=2)
    plant_dead_hosts_job(d, "r524", {"prompt": "reclaimed after a 524"},
                         {"response.524": CDN_524})
    d.start()
    assert d.wait_finished("r524") == "done", d.log()
    r = d.result("r524")
    assert [a["http_status"] for a in r["attempts"]] == [524, 200], r["attempts"]
    assert r["billed_attempts"] == 2 and r["retry_count"] == 1, r
    assert env.fake.calls("reclaimed after a 524") == 1
    wait_for(lambda: os.listdir(d.path("running")) == [], 10, "the sidecars to be removed")


def test_more_images_than_asked_are_dropped(env):
    env.fake.script("one wanted", [{"kind": "url", "images": 10}])
    env.fake.script("two wanted", [{"kind": "b64", "images": 5}])
    d = env.daemon().start()
    d.submit("one", {"prompt": "one wanted"})
    d.submit("two", {"prompt": "two wanted", "n": 2})
    assert d.wait_finished("one") == "done" and d.wait_finished("two") == "done"
    r = d.result("one")
    assert r["images"] == ["one.png"] and r["images_dropped"] == 9, r
    assert len(env.fake.downloads) == 1, f"{len(env.fake.downloads)} images were downloaded"
    r = d.result("two")
    assert r["images"] == ["two.1.png", "two.2.png"] and r["images_dropped"] == 3, r
    assert sorted(n for n in d.listdir("done") if n.startswith(("one", "two"))) == [
        "one.json", "one.png", "one.result.json", "two.1.png", "two.2.png", "two.json",
        "two.result.json"], d.listdir("done")


def test_image_urls_on_private_addresses_are_refused(env):
    env.fake.script("internal url", [{"kind": "url"}])
    d = env.daemon(limits__allow_private_downloads="no").start()
    d.submit("internal", {"prompt": "internal url"})
    assert d.wait_finished("internal") == "failed"
    r = d.result("internal")
    assert r["error"]["code"] == "download_failed", r["error"]
    assert "127.0.0.1" in r["error"]["message"] and "allow_private_downloads" in r["error"]["message"]
    assert env.fake.downloads == [], "a loopback URL was fetched"
    assert env.fake.calls("internal url") == 1


if __name__ == "__main__":
    run_tests([
        test_key_quoted_back_is_redacted_everywhere,
        test_reclaim_carries_every_saved_response,
        test_more_images_than_asked_are_dropped,
        test_image_urls_on_private_addresses_are_refused,
    ])
