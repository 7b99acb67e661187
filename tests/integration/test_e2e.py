#!/usr/bin/env python3
"""End to end: a job file in new/ becomes an image and a result in done/ (issue 2)."""
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import IMGSPOOLD, TEST_KEY, run_tests, wait_for  # noqa: E402
from upstream import png_index, png_prompt_sha256  # noqa: E402


def fetch_status(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def sha(prompt):
    return hashlib.sha256(prompt.encode()).hexdigest()


def assert_image_for(data, prompt, index=0):
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "stored image is not a PNG"
    assert png_prompt_sha256(data) == sha(prompt), "stored image belongs to another prompt"
    assert png_index(data) == index, f"image index {png_index(data)}, want {index}"


def test_b64_success_and_result_fields(env):
    d = env.daemon().start()
    d.submit("cat-1", {"prompt": "a cat", "size": "1024x1024", "quality": "high",
                       "metadata": {"user": 42, "tags": ["x"]}})
    assert d.wait_finished("cat-1") == "done"
    assert_image_for(d.read("done", "cat-1.png"), "a cat")
    r = d.result("cat-1")
    assert r["task_id"] == "cat-1" and r["status"] == "succeeded", r
    assert r["images"] == ["cat-1.png"], r["images"]
    assert r["provider"] == "apiyi" and r["model"] == "gpt-image-2", r
    assert r["retry_count"] == 0 and r["billed_attempts"] == 1, r
    assert r["metadata"] == {"user": 42, "tags": ["x"]}, r["metadata"]
    assert r["usage"]["total_tokens"] > 0, r["usage"]
    assert r["error"] is None
    (a,) = r["attempts"]
    assert a["http_status"] == 200 and a["billed"] == "yes" and a["outcome"] == "succeeded", a
    assert a["request_id"], "the request id was not recorded"
    for key in ("created_at", "updated_at"):
        assert len(r[key]) >= 25 and r[key][10] == "T" and r[key][-6] in "+-", r[key]
    # What the upstream received: the OpenAI dialect, the key, and only the fields given.
    (req,) = [q for q in env.fake.snapshot() if q["prompt"] == "a cat"]
    assert req["path"] == "/v1/images/generations", req["path"]
    assert req["headers"]["authorization"] == "Bearer " + TEST_KEY
    assert req["json"] == {"model": "gpt-image-2", "prompt": "a cat", "size": "1024x1024",
                           "quality": "high"}, req["json"]
    assert d.listdir("running") == [] and d.listdir("new") == []


def test_data_uri_b64(env):
    env.fake.script("legacy", [{"kind": "b64_datauri"}])
    d = env.daemon().start()
    d.submit("legacy", {"prompt": "legacy prefix", "model": "gpt-image-2-all"})
    assert d.wait_finished("legacy") == "done"
    assert_image_for(d.read("done", "legacy.png"), "legacy prefix")


def test_url_is_downloaded_before_it_expires(env):
    # The link dies 5 s after it is handed out, and its first two downloads fail (the daemon
    # waits about 1 s, then about 2 s): the download is retried on its own, and the billed generation is
    # never repeated.
    env.fake.script("flux", [{"kind": "url", "ttl": 5, "url_fail_downloads": 2}])
    d = env.daemon().start()
    d.submit("flux", {"prompt": "flux skyline", "model": "flux-2-pro"})
    assert d.wait_finished("flux") == "done", d.result("flux")
    assert_image_for(d.read("done", "flux.png"), "flux skyline")
    assert env.fake.calls("flux skyline") == 1
    r = d.result("flux")
    assert r["billed_attempts"] == 1 and len(r["attempts"]) == 1, r
    downloads = [x["status"] for x in env.fake.downloads]
    assert downloads == [503, 503, 200], downloads
    # The link is dead soon after; the stored bytes are what counts.
    link = env.fake.base_url + env.fake.downloads[-1]["path"]
    wait_for(lambda: fetch_status(link) == 404, 10, "the link to expire")


def test_download_waits_are_capped(env):
    """Seven failed downloads in a row: the waits between tries double from 1 s up to
    [limits] download_retry_cap (1 s here), never beyond, so the link (alive 30 s) is fetched
    in time. Waits that doubled without a cap (1, 2, 4 ... 64 s) outlived it."""
    env.fake.script("capped", [{"kind": "url", "ttl": 30, "url_fail_downloads": 7}])
    d = env.daemon(limits__download_attempts=8, limits__download_retry_cap=1).start()
    d.submit("cap", {"prompt": "capped download", "model": "flux-2-pro"})
    assert d.wait_finished("cap", timeout=40) == "done", d.log()[-3000:]
    assert env.fake.calls("capped download") == 1
    downloads = env.fake.downloads
    assert [x["status"] for x in downloads] == [503] * 7 + [200], downloads
    gaps = [b["time"] - a["time"] for a, b in zip(downloads, downloads[1:])]
    # Each wait is the cap less up to a quarter; the upper bound leaves room for a loaded machine.
    assert all(0.7 <= g <= 4.0 for g in gaps), gaps
    assert d.stop() == 0


def test_gemini_native_with_text_part_first(env):
    env.fake.script("banana", [{"kind": "gemini_text_first"}])
    d = env.daemon().start()
    d.submit("nb", {"prompt": "banana poster", "model": "gemini-3-pro-image-preview",
                    "size": "1536x1024"})
    assert d.wait_finished("nb") == "done", d.result("nb")
    assert_image_for(d.read("done", "nb.png"), "banana poster")
    (req,) = [q for q in env.fake.snapshot() if q["prompt"] == "banana poster"]
    assert req["path"] == "/v1beta/models/gemini-3-pro-image-preview:generateContent", req["path"]
    assert req["headers"]["authorization"] == "Bearer " + TEST_KEY
    config = req["json"]["generationConfig"]
    assert config["imageConfig"] == {"aspectRatio": "3:2", "imageSize": "2K"}, config
    r = d.result("nb")
    assert r["dialect"] == "gemini" and r["usage"]["candidatesTokenCount"] == 1120, r


def test_n2_gives_two_images(env):
    d = env.daemon().start()
    d.submit("pair", {"prompt": "two dogs", "n": 2})
    assert d.wait_finished("pair") == "done"
    r = d.result("pair")
    assert r["images"] == ["pair.1.png", "pair.2.png"], r["images"]
    for i, name in enumerate(r["images"]):
        assert_image_for(d.read("done", name), "two dogs", i)
    (req,) = [q for q in env.fake.snapshot() if q["prompt"] == "two dogs"]
    assert req["json"]["n"] == 2


def test_job_written_slowly_into_new(env):
    # A client that writes straight into new/ (no tmp/ + rename) must not get a half file read.
    d = env.daemon(spool__settle_time=30, verbose=True).start()
    body = json.dumps({"prompt": "slow writer", "metadata": {"pad": "x" * 2000}}).encode()
    path = d.path("new", "slow.json")
    with open(path, "wb") as f:
        f.write(body[: len(body) // 2])
        f.flush()
        # Wait until two rescans have passed over the half-written file, then finish it.
        d.wait_rescans(2)
        assert d.state("slow") == "new" and d.listdir("failed") == []
        f.write(body[len(body) // 2:])
    assert d.wait_finished("slow") == "done", d.result("slow")
    assert env.fake.calls("slow writer") == 1
    assert d.listdir("failed") == [], d.listdir("failed")


def test_200_jobs_at_concurrency_16(env):
    env.fake.default = {"kind": "b64", "delay": 0.4}
    d = env.daemon(spool__concurrency=16).start()
    prompts = {f"job-{i:03d}": f"prompt number {i} {'x' * (i % 7)}" for i in range(200)}
    for task_id, prompt in prompts.items():
        d.submit(task_id, {"prompt": prompt})
    wait_for(lambda: len([n for n in d.listdir("done") if n.endswith(".result.json")]) == 200,
             120, "200 jobs in done/")
    assert env.fake.max_inflight >= 16, f"at most {env.fake.max_inflight} requests in flight"
    assert env.fake.max_inflight <= 16, f"{env.fake.max_inflight} in flight, concurrency is 16"
    for task_id, prompt in prompts.items():
        assert_image_for(d.read("done", task_id + ".png"), prompt)
        assert env.fake.calls(prompt) == 1, f"{prompt!r} called {env.fake.calls(prompt)} times"


def test_malformed_jobs_fail_with_clear_errors(env):
    d = env.daemon().start()
    old = time.time() - 3600
    bad_json = d.path("new", "broken.json")
    with open(bad_json, "w") as f:
        f.write('{"prompt": "x", ')
    os.utime(bad_json, (old, old))   # an hour old: not being written any more
    d.submit("wrong-n", {"prompt": "x", "n": "two"})
    d.submit("no-prompt", {"model": "gpt-image-2"})
    d.submit("typo", {"prompt": "x", "quailty": "high"})
    for task_id, field in (("broken", None), ("wrong-n", "n"), ("no-prompt", "prompt"),
                           ("typo", None)):
        assert d.wait_finished(task_id) == "failed", task_id
        r = d.result(task_id)
        assert r["status"] == "failed" and r["error"]["code"] == "invalid_job", r
        assert r["error"]["message"], r
        if field:
            assert r["error"]["field"] == field, r["error"]
        assert r["attempts"] == [] and r["billed_attempts"] == 0, r
    assert "JSON" in d.result("broken")["error"]["message"]
    assert env.fake.snapshot() == [], "a malformed job reached the upstream"
    # The daemon is still serving.
    d.submit("after", {"prompt": "still alive"})
    assert d.wait_finished("after") == "done"


def test_sigterm_with_jobs_in_flight_loses_nothing(env):
    env.fake.script("quick", [{"kind": "b64", "delay": 0.5}])
    env.fake.script("slow", [{"kind": "b64", "delay": 30}])
    d = env.daemon(spool__concurrency=4, spool__grace_period=3).start()
    ids = [f"q{i}" for i in range(2)] + [f"s{i}" for i in range(2)] + [f"w{i}" for i in range(4)]
    for i in ids:
        d.submit(i, {"prompt": ("quick " if i[0] == "q" else "slow ") + i})
    wait_for(lambda: env.fake.inflight >= 4, 10, "4 calls in flight")
    assert d.stop(signal.SIGTERM, timeout=20) == 0, d.log()
    states = {i: d.state(i) for i in ids}
    # Quick calls finished inside the grace period; slow ones and never-started ones are pending.
    assert all(states[i] == "done" for i in ids if i[0] == "q"), states
    assert all(states[i] == "new" for i in ids if i[0] != "q"), states
    assert d.listdir("running") == [], d.listdir("running")
    # A restart finishes them.
    env.fake.script("slow", [{"kind": "b64"}])
    d.start()
    for i in ids:
        assert d.wait_finished(i) == "done", i


def test_no_api_key_waits_then_resumes_on_sighup(env):
    d = env.daemon(key_file=True, verbose=True).start()
    d.wait_logged("cannot open api_key_file")
    d.wait_logged("on hold")
    d.submit("waiting", {"prompt": "patience"})
    d.submit("waiting2", {"prompt": "patience 2"})
    # Rescans pass: the jobs stay pending, nothing is failed, nothing is called.
    d.wait_rescans(2)
    assert d.state("waiting") == "new" and d.state("waiting2") == "new"
    assert env.fake.snapshot() == []
    d.write_key_file(TEST_KEY)
    d.send_signal(signal.SIGHUP)
    assert d.wait_finished("waiting") == "done"
    assert d.wait_finished("waiting2") == "done"
    assert d.flushed_log().count("is on hold") == 1, "the hold should be logged once"


def test_same_id_twice_runs_one_at_a_time(env):
    # "dup" and "dup.json" name the same task: they must not share running/dup@HOST.json.
    env.fake.script("dup first", [{"kind": "b64", "delay": 1}])
    d = env.daemon().start()
    d.submit("dup", {"prompt": "dup first"})
    wait_for(lambda: env.fake.inflight >= 1, 10, "the first call")
    with open(d.path("tmp", "dup"), "w") as f:
        json.dump({"prompt": "dup second"}, f)
    os.rename(d.path("tmp", "dup"), d.path("new", "dup"))
    wait_for(lambda: env.fake.calls("dup second") == 1, 20, "the second job to run after the first")
    wait_for(lambda: d.log().count("dup done:") == 2, 20, "both to finish")
    assert env.fake.calls("dup first") == 1
    assert_image_for(d.read("done", "dup.png"), "dup second")
    assert json.load(open(d.path("done", "dup.json")))["prompt"] == "dup second"


def test_cli_submit_status_wait(env):
    cli = os.path.join(os.path.dirname(IMGSPOOLD), "imgspool")
    env.fake.script("via the cli", [{"kind": "b64", "delay": 0.5}])
    d = env.daemon().start()
    run = lambda *args, **kw: subprocess.run([cli, "-d", d.spool, *args], capture_output=True,
                                             text=True, **kw)
    sub = run("submit", input='{"prompt": "via the cli", "metadata": {"k": 1}}')
    assert sub.returncode == 0, sub.stderr
    task_id = sub.stdout.strip()
    assert d.state(task_id) in ("new", "running", "done"), d.state(task_id)
    waited = run("wait", "-t", "20", task_id)
    assert waited.returncode == 0, (waited.returncode, waited.stderr)
    assert json.loads(waited.stdout)["images"] == [task_id + ".png"]
    assert run("status", task_id).returncode == 0
    bad = run("submit", "-i", "bad-one", input='{"prompt": "x", "n": "two"}')
    assert bad.returncode == 2 and '"n"' in bad.stderr, (bad.returncode, bad.stderr)
    assert not os.path.exists(d.path("new", "bad-one.json")), "an invalid job was submitted"
    assert run("status", "no-such-job").returncode == 4


def test_config_check(env):
    shipped = os.path.join(os.path.dirname(IMGSPOOLD), "..", "..", "etc", "imgspool.ini")
    res = subprocess.run([IMGSPOOLD, "-n", "-c", shipped], capture_output=True, text=True)
    assert res.returncode == 0, f"the shipped example config is rejected: {res.stderr}"
    d = env.daemon()
    ok = subprocess.run([IMGSPOOLD, "-n", "-c", d.config_path], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    with open(d.config_path, "a") as f:
        f.write("[provider second]\nconcurrency = many\n")
    lines = open(d.config_path).read().count("\n")
    bad = subprocess.run([IMGSPOOLD, "-n", "-c", d.config_path], capture_output=True, text=True)
    assert bad.returncode != 0
    assert f"{d.config_path}:{lines}:" in bad.stderr and "concurrency" in bad.stderr, bad.stderr
    with open(d.config_path, "w") as f:
        f.write("[spool]\nconcurency = 3\n")
    typo = subprocess.run([IMGSPOOLD, "-n", "-c", d.config_path], capture_output=True, text=True)
    assert typo.returncode != 0 and f"{d.config_path}:2:" in typo.stderr, typo.stderr
    assert "unknown key" in typo.stderr, typo.stderr


if __name__ == "__main__":
    run_tests([
        test_b64_success_and_result_fields,
        test_data_uri_b64,
        test_url_is_downloaded_before_it_expires, test_download_waits_are_capped,
        test_gemini_native_with_text_part_first,
        test_n2_gives_two_images,
        test_job_written_slowly_into_new,
        test_200_jobs_at_concurrency_16,
        test_malformed_jobs_fail_with_clear_errors,
        test_sigterm_with_jobs_in_flight_loses_nothing,
        test_no_api_key_waits_then_resumes_on_sighup,
        test_same_id_twice_runs_one_at_a_time,
        test_cli_submit_status_wait,
        test_config_check,
    ])
