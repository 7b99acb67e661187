#!/usr/bin/env python3
"""What every job cost (issue 11): each attempt names its provider and model and carries its cost,
the result carries the total, and the totals add up to what the fake upstream billed."""
import math
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import run_tests  # noqa: E402

PRICES = {"currency": "EUR", "gpt-image-2": "0.04",
          "gemini-3-pro-image*@input": "2", "gemini-3-pro-image*@output": "120",
          "gemini-3-pro-image*": "0.134"}


def priced_daemon(env, **settings):
    env.fake.prices = [("gpt-image-2", 0.04),
                       ("gemini-3-pro-image*", {"input": 2, "output": 120})]
    prices = {f"prices__{k}": v for k, v in PRICES.items()}
    return env.daemon(limits__timeout_min=1, **prices, **settings).start()


def test_costs_add_up_to_what_was_billed(env):
    env.fake.script("plain", ["b64"])
    env.fake.script("busy then fine", ["503", "b64"])
    env.fake.script("slow then fine", [{"kind": "b64", "delay": 4}, "b64"])
    env.fake.script("a banana", ["b64"])
    env.fake.script("refused banana", ["gemini_image_safety"])
    env.fake.script("no price", ["b64"])
    d = priced_daemon(env)
    jobs = {"plain": {"prompt": "plain"},
            "busy": {"prompt": "busy then fine"},
            "slow": {"prompt": "slow then fine", "timeout": 1},
            "banana": {"prompt": "a banana", "model": "gemini-3-pro-image-preview"},
            "refused": {"prompt": "refused banana", "model": "gemini-3-pro-image-preview"},
            "unpriced": {"prompt": "no price", "model": "flux-2-pro"}}
    for task_id, job in jobs.items():
        d.submit(task_id, job)
    results = {}
    for task_id in jobs:
        d.wait_finished(task_id, 60)
        results[task_id] = d.result(task_id)
    for task_id, r in results.items():
        for a in r["attempts"]:
            assert a["provider"] == "apiyi" and a["model"] == (jobs[task_id].get("model") or "gpt-image-2"), a
            assert "cost" in a, a
        assert r["cost"]["currency"] == "EUR", r["cost"]

    def costs(task_id):
        return [a["cost"] for a in results[task_id]["attempts"]]

    assert costs("plain") == [0.04] and results["plain"]["cost"] == {
        "amount": 0.04, "currency": "EUR", "estimated": False}, results["plain"]
    assert costs("busy") == [0, 0.04] and results["busy"]["cost"]["amount"] == 0.04
    slow = results["slow"]
    assert [a["billed"] for a in slow["attempts"]] == ["unknown", "yes"], slow["attempts"]
    # The timed-out call counts at its per-image price, and makes the total an estimate.
    assert costs("slow") == [0.04, 0.04] and slow["cost"]["estimated"] is True, slow["cost"]
    assert math.isclose(slow["cost"]["amount"], 0.08), slow["cost"]
    banana = results["banana"]
    u = banana["usage"]
    want = (u["promptTokenCount"] * 2 + u["candidatesTokenCount"] * 120) / 1e6
    assert math.isclose(banana["cost"]["amount"], want, abs_tol=1e-9), (banana["cost"], want)
    refused = results["refused"]
    assert refused["status"] == "failed" and refused["attempts"][0]["billed"] == "yes"
    assert refused["cost"]["amount"] > 0, "a billed refusal costs its tokens"
    assert results["unpriced"]["cost"]["amount"] is None, "no price: null, not zero"
    assert costs("unpriced") == [None]

    total = sum(r["cost"]["amount"] for r in results.values() if r["cost"]["amount"] is not None)
    assert math.isclose(total, env.fake.billed_total(), abs_tol=1e-9), (total, env.fake.billed_total())


def test_no_prices_means_null_amounts(env):
    d = env.daemon().start()
    env.fake.script("x503", ["503", "b64"])
    d.submit("one", {"prompt": "x503"})
    assert d.wait_finished("one") == "done"
    r = d.result("one")
    assert r["cost"] == {"amount": None, "currency": "USD", "estimated": False}, r["cost"]
    assert [a["cost"] for a in r["attempts"]] == [0, None], r["attempts"]


if __name__ == "__main__":
    run_tests([test_costs_add_up_to_what_was_billed, test_no_prices_means_null_amounts])
