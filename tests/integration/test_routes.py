#!/usr/bin/env python3
"""Routes across two fake providers (issue 11): a canary's share, failover on 503s and holds and
back, the billed-retry budget across targets, targets that cannot serve a job, and costs that
add up to what both fakes billed."""
import math
import os
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import TEST_KEY, run_tests, wait_for  # noqa: E402
from upstream import FakeUpstream  # noqa: E402

A_MODEL, B_MODEL = "gpt-image-2", "gpt-image-1.5"


def two_providers(env, route, **settings):
    """A daemon whose provider "apiyi" is env.fake (A) and "b" a second fake (B), with
    [route images] lines from route. Returns (daemon, fake_b); fake_b stops with the test."""
    fake_b = FakeUpstream(api_keys={TEST_KEY}).start()
    env.daemons_extra_fakes = getattr(env, "daemons_extra_fakes", []) + [fake_b]
    env.fake.prices = [(A_MODEL, 0.04), ("gemini-*", 0.09)]
    fake_b.prices = [(B_MODEL, 0.02)]
    prices = {"prices__" + A_MODEL: "0.04", "prices__" + B_MODEL: "0.02", "prices__gemini-*": "0.09"}
    b = {"provider b__base_url": fake_b.base_url, "provider b__api_key_env": "IMGSPOOL_TEST_KEY",
         "provider b__timeout": 30, "provider b__connect_timeout": 5}
    routes = {f"route images__{k}": v for k, v in route.items()}
    d = env.daemon(**b, **routes, **prices, **settings)
    return d, fake_b


def stop_extra(env):
    for f in getattr(env, "daemons_extra_fakes", []):
        f.stop()


def wait_all(d, ids, timeout):
    """Waits until every job's file is in done/ or failed/ (one listing per look, not a stat
    per job), then reads the results."""
    want = set(ids)

    def finished():
        return {n[:-5] for n in d.listdir("done") + d.listdir("failed") if n.endswith(".json")
                and not n.endswith(".result.json")} & want

    wait_for(lambda: finished() == want, timeout,
             f"{len(ids)} jobs to finish (log: {d.log()[-2000:]})")
    return {i: d.result(i) for i in ids}


def check_costs(results, fakes):
    for r in results.values():
        for a in r["attempts"]:
            assert a["provider"] in ("apiyi", "b") and a["model"], a
            if a["billed"] == "no":
                assert a["cost"] == 0, a
                continue
            price = 0.09 if a["model"].startswith("gemini-") else {"apiyi": 0.04, "b": 0.02}[a["provider"]]
            images = a["cost"] / price         # per image: the images the call returned
            assert images >= 1 and math.isclose(images, round(images)), (a, price)
    total = sum(r["cost"]["amount"] for r in results.values())
    billed = sum(f.billed_total() for f in fakes)
    assert math.isclose(total, billed, abs_tol=1e-9), (total, billed)


def test_canary_gets_its_share(env):
    try:
        d, fake_b = two_providers(env, {"target": [f"apiyi/{A_MODEL} 90", f"b/{B_MODEL} 10"]},
                                  spool__concurrency=32, spool__poll_interval=5)
        d.start()
        ids = [f"1764068523.{i:06d}.4242.render-07.f{i * 7919 % 65536:04x}" for i in range(int(os.environ.get("CANARY_JOBS", 1000)))]
        for i in ids:
            d.submit(i, {"prompt": "a canary", "model": "images"})
        results = wait_all(d, ids, 300)
        on_b = sum(1 for r in results.values() if r["provider"] == "b")
        assert all(r["status"] == "succeeded" for r in results.values())
        assert 70 <= on_b <= 130, f"{on_b} of 1000 on the 10 % canary"
        assert len(fake_b.snapshot()) == on_b and len(env.fake.snapshot()) == 1000 - on_b
        assert all(r["model"] == (B_MODEL if r["provider"] == "b" else A_MODEL) for r in results.values())
        check_costs(results, [env.fake, fake_b])
    finally:
        stop_extra(env)


def test_503s_move_traffic_to_b_for_the_cooldown_and_back(env):
    try:
        down = threading.Event()
        down.set()
        env.fake.script(lambda rec: down.is_set(), ["503"])
        d, fake_b = two_providers(env, {"target": f"apiyi/{A_MODEL}", "fallback": f"b/{B_MODEL}"},
                                  retry__cooldown_failures=3, retry__cooldown_time=4,
                                  retry__cooldown_jitter=0, retry__max_retries=3)
        d.start()
        first = [f"down-{i}" for i in range(12)]
        for i in first:
            d.submit(i, {"prompt": f"job {i}", "model": "images"})
        results = wait_all(d, first, 60)
        assert all(r["status"] == "succeeded" and r["provider"] == "b" for r in results.values()), \
            [(i, r["status"], r["provider"]) for i, r in results.items()]
        failures = sorted(r["finished"] for r in env.fake.snapshot() if r["status"] == 503)
        assert len(failures) >= 3, failures
        tripped = failures[2]
        # Calls already on their way when the third 503 came back may land a moment later.
        during = [r for r in env.fake.snapshot() if tripped + 0.3 < r["started"] < tripped + 4]
        assert not during, f"{len(during)} call(s) to A during its cooldown"
        d.wait_logged("cooling down")
        down.clear()                           # A is back; after the cooldown it gets jobs again
        n = 0
        back = None
        deadline = time.monotonic() + 30
        while back is None and time.monotonic() < deadline:
            n += 1
            d.submit(f"later-{n}", {"prompt": f"later {n}", "model": "images"})
            r = wait_all(d, [f"later-{n}"], 20)[f"later-{n}"]
            results[f"later-{n}"] = r
            if r["provider"] == "apiyi":
                back = time.monotonic()
        assert back is not None, "A never got traffic back"
        first_a = min(r["started"] for r in env.fake.snapshot() if r["status"] == 200)
        assert first_a >= tripped + 3.9, f"A called again {first_a - tripped:.2f}s after it tripped"
        check_costs(results, [env.fake, fake_b])
    finally:
        stop_extra(env)


def test_a_held_for_its_balance_sends_everything_to_b(env):
    try:
        env.fake.script(lambda rec: True, ["403_quota"])
        d, fake_b = two_providers(env, {"target": [f"apiyi/{A_MODEL} 90", f"b/{B_MODEL} 10"]})
        d.start()
        ids = [f"broke-{i:02d}" for i in range(30)]
        for i in ids:
            d.submit(i, {"prompt": f"job {i}", "model": "images"})
        results = wait_all(d, ids, 60)
        assert d.listdir("failed") == [], d.listdir("failed")
        assert all(r["status"] == "succeeded" and r["provider"] == "b" for r in results.values())
        held = [r for r in results.values() if r["attempts"][0]["provider"] == "apiyi"]
        assert held and all(r["attempts"][0]["outcome"] == "hold" and
                            r["attempts"][0]["billed"] == "no" for r in held), held
        d.wait_logged("on hold")
        check_costs(results, [env.fake, fake_b])
    finally:
        stop_extra(env)


def test_failover_keeps_the_billed_retry_budget(env):
    try:
        env.fake.script("slow", [{"kind": "b64", "delay": 5}])
        d, fake_b = two_providers(env, {"target": f"apiyi/{A_MODEL}", "fallback": f"b/{B_MODEL}"},
                                  limits__timeout_min=1, retry__max_billed_retries=1)
        fake_b.script("slow", [{"kind": "b64", "delay": 5}])
        d.start()
        d.submit("slow", {"prompt": "slow", "model": "images", "timeout": 1})
        r = wait_all(d, ["slow"], 60)["slow"]
        assert r["status"] == "failed" and r["error"]["code"] == "timeout", r["error"]
        assert [(a["provider"], a["billed"]) for a in r["attempts"]] == \
            [("apiyi", "unknown"), ("b", "unknown")], r["attempts"]
        assert r["billed_attempts"] == 2 and r["cost"]["estimated"] is True, r
        assert env.fake.calls("slow") == 1 and fake_b.calls("slow") == 1
        wait_for(lambda: env.fake.billed("slow") == 1 and fake_b.billed("slow") == 1, 10,
                 "both fakes to book their call")
        check_costs({"slow": r}, [env.fake, fake_b])
    finally:
        stop_extra(env)


def test_targets_that_cannot_serve_are_skipped(env):
    try:
        d, fake_b = two_providers(env, {"target": "apiyi/gemini-3-pro-image-preview",
                                        "fallback": f"b/{B_MODEL} refs=0"})
        d.start()
        os.makedirs(d.path("refs"), exist_ok=True)
        from upstream import png_for
        with open(d.path("refs", "a.png"), "wb") as f:
            f.write(png_for("ref"))
        d.submit("one", {"prompt": "one", "model": "images"})
        d.submit("two", {"prompt": "two", "model": "images", "n": 2})
        d.submit("refs2", {"prompt": "refs and two", "model": "images", "n": 2, "images": ["refs/a.png"]})
        d.submit("bg", {"prompt": "transparent", "model": "images", "background": "transparent"})
        d.submit("both", {"prompt": "both", "model": "images", "provider": "b"})
        results = wait_all(d, ["one", "two", "refs2", "bg", "both"], 30)
        assert results["one"]["provider"] == "apiyi" and results["one"]["status"] == "succeeded"
        assert results["two"]["provider"] == "b" and len(results["two"]["images"]) == 2, results["two"]
        assert results["bg"]["provider"] == "b", results["bg"]
        r = results["refs2"]
        assert r["status"] == "failed" and r["error"]["code"] == "invalid_request", r["error"]
        assert "one image per call" in r["error"]["message"] and \
            "takes no reference images" in r["error"]["message"], r["error"]
        assert r["attempts"] == [] and env.fake.calls("refs and two") == 0 == fake_b.calls("refs and two")
        assert results["both"]["error"]["field"] == "provider", results["both"]["error"]
        gemini_calls = [x for x in env.fake.snapshot() if x["dialect"] == "gemini"]
        assert [x["prompt"] for x in gemini_calls] == ["one"], gemini_calls
        check_costs({k: v for k, v in results.items()}, [env.fake, fake_b])
    finally:
        stop_extra(env)


def test_a_restart_books_the_interrupted_call_to_its_target(env):
    try:
        env.fake.script("slow banana", [{"kind": "b64", "delay": 30}])
        # The first target is not the one called, so only the note of the call's target can
        # tell the restarted daemon where the interrupted call went.
        d, fake_b = two_providers(env, {"target": [f"b/{B_MODEL} 1",
                                                   "apiyi/gemini-3-pro-image-preview 1000000"]})
        d.start()
        d.submit("k", {"prompt": "slow banana", "model": "images"})
        wait_for(lambda: env.fake.inflight == 1, 10, "the call to A")
        assert any(n.endswith(".target") for n in os.listdir(d.path("running"))), "no target noted"
        d.kill()
        d.start()
        r = wait_all(d, ["k"], 30)["k"]
        assert [(a["provider"], a["model"], a["outcome"], a["billed"]) for a in r["attempts"]] == [
            ("apiyi", "gemini-3-pro-image-preview", "interrupted", "unknown"),
            ("b", B_MODEL, "succeeded", "yes")], r["attempts"]
        assert [a["cost"] for a in r["attempts"]] == [0.09, 0.02], r["attempts"]
        assert r["cost"] == {"amount": 0.11, "currency": "USD", "estimated": True}, r["cost"]
        # Sidecars go right after the job file moves.
        wait_for(lambda: not [n for n in os.listdir(d.path("running")) if n.startswith(("k@", ".k@"))],
                 10, "the job's files to leave running/")
    finally:
        stop_extra(env)


def test_a_routed_job_reserves_its_targets_price_against_the_budget(env):
    # The job's model names the route; its reservation must be the chosen target's price, or
    # every call of a routed job passes the budget check with nothing reserved.
    try:
        d, fake_b = two_providers(env, {"target": f"apiyi/{A_MODEL}"},
                                  provider__budget_daily="0.10")
        d.start()
        for i in range(6):
            d.submit(f"budget-{i}", {"prompt": f"budget {i}", "model": "images"})
        wait_for(lambda: "over its daily budget" in d.log(), 30, "the provider to be over budget")
        wait_for(lambda: len([n for n in d.listdir("done") if n.endswith(".result.json")]) == 2, 30,
                 "the two jobs the budget allows")
        assert abs(env.fake.billed_total() - 0.08) < 1e-9, \
            f"billed {env.fake.billed_total():.2f} against a budget of 0.10 at 0.04 a call"
        assert len(d.listdir("new")) == 4, d.listdir("new")
    finally:
        stop_extra(env)


if __name__ == "__main__":
    run_tests([test_canary_gets_its_share, test_503s_move_traffic_to_b_for_the_cooldown_and_back,
               test_a_held_for_its_balance_sends_everything_to_b,
               test_failover_keeps_the_billed_retry_budget, test_targets_that_cannot_serve_are_skipped,
               test_a_restart_books_the_interrupted_call_to_its_target,
               test_a_routed_job_reserves_its_targets_price_against_the_budget])
