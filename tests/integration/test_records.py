#!/usr/bin/env python3
"""The daemon's records in a job file stay bounded however long the job lives, are spliced onto
the client's bytes, and every figure derived from them stays right (issue 8, item 4)."""
import json
import math
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import cli, run_tests, wait_for  # noqa: E402

LISTED = 16            # RECORD_ATTEMPTS_MAX
RECORDS_MAX = 48 << 10  # RECORD_TEXT_MAX
READ_HEADROOM = 64 << 10


def hold_attempt(i):
    """A hold probe as the daemon records one."""
    return {"started_at": "2026-11-29T08:01:%02d.361+00:00" % (i % 60), "latency_ms": 10 + i,
            "provider": "apiyi", "model": "gpt-image-2", "http_status": 401, "transport": "done",
            "outcome": "hold", "billed": "no", "cost": 0, "error_code": "auth",
            "request_id": "req-%08d" % i}


def test_a_long_hold_stays_readable(env):
    """A job held through hundreds of probes: its file in new/ had grown by every probe until no
    daemon could read it. Its records now keep the last attempts and a count of the others."""
    prompt = "held for a long time"
    env.fake.script(prompt, ["401_openai"] * 6 + ["b64"])
    d = env.daemon(verbose=True, limits__max_job_bytes=1024).start()
    attempts = []
    job = {"prompt": prompt, "imgspool": {"attempts": attempts, "retry_count": 0,
                                          "billed_retries": 0, "crashes": 0}}
    # What the daemon's user left after ~240 probes (as a file written by a daemon before this
    # fix): just under the read cap, so each further probe used to push it over.
    while len(json.dumps(job, separators=(",", ":"))) < 1024 + READ_HEADROOM - 600:
        attempts.append(hold_attempt(len(attempts)))
    seeded = len(attempts)
    d.submit("long-hold", json.dumps(job, separators=(",", ":")))
    assert d.wait_finished("long-hold", 60) == "done", d.log()[-3000:]
    r = d.result("long-hold")
    made = seeded + env.fake.calls(prompt)
    assert env.fake.calls(prompt) == 7, env.fake.calls(prompt)
    assert len(r["attempts"]) == LISTED and r["attempts_elided"] == made - LISTED, \
        (len(r["attempts"]), r["attempts_elided"], made)
    assert [a["outcome"] for a in r["attempts"][-7:]] == ["hold"] * 6 + ["succeeded"], r["attempts"]
    assert r["billed_attempts"] == env.fake.billed(prompt) == 1, r["billed_attempts"]
    records = json.loads(d.read("done", "long-hold.json"))["imgspool"]
    assert len(records["attempts"]) == LISTED and records["elided"]["attempts"] == made - LISTED, records
    assert len(json.dumps(records, separators=(",", ":"))) <= RECORDS_MAX
    d.wait_logged(f"attempt {made}: HTTP 200", what="the log numbering every attempt made")


def client_file_at(size, prompt):
    """A job of exactly size bytes whose numbers and escapes any JSON library would write
    differently (1e300 as 1.0000000000000001e+300, "\\u00e9" as "é")."""
    head = '{"prompt": "%s", "metadata": {"s": "caf\\u00e9 \\ud83d\\ude00 \\/", "n": [' % prompt
    tail = ']}}\n'
    numbers = []
    while len(head) + len(",".join(numbers + ["1e300"])) + len(tail) <= size:
        numbers.append("1e300")
    text = head + ",".join(numbers) + tail
    text = text.replace('"s": "', '"s": "' + "x" * (size - len(text)), 1)
    assert len(text.encode()) == size
    return text.encode()


def test_a_client_file_at_the_cap_survives_retries(env):
    """Re-serialising the client's JSON grew a file that passed max_job_bytes past the read cap
    at its first deferral; the records are now spliced onto its bytes, kept exactly, and the
    file is still the client's size when a hold puts it back in new/."""
    prompt = "exactly at the cap"
    env.fake.script(prompt, ["503", "401_openai", "503", "b64"])
    cap = 65536
    d = env.daemon(verbose=True, limits__max_job_bytes=cap, retry__max_retries=3).start()
    original = client_file_at(cap, prompt)
    d.submit("at-cap", original)
    assert d.wait_finished("at-cap", 60) == "done", d.log()[-3000:]
    assert env.fake.calls(prompt) == 4
    written = d.read("done", "at-cap.json")
    end = original.rindex(b"}")
    assert written.startswith(original[:end]) and written.endswith(original[end:]), \
        "the client's bytes are kept exactly"
    member = written[end:len(written) - (len(original) - end)]
    assert member.startswith(b',"imgspool":') and len(written) <= cap + READ_HEADROOM, len(written)
    doc = json.loads(written)
    assert doc["metadata"]["n"][0] == 1e300 and doc["metadata"]["s"].endswith("caf\u00e9 \U0001F600 /")
    assert [a["http_status"] for a in doc["imgspool"]["attempts"]] == [503, 401, 503, 200]
    assert d.result("at-cap")["retry_count"] == 2


def test_counters_stay_right_after_elision(env):
    """Billed calls early in a run, then many free retries: the billed ones leave the list, and
    billed_attempts and the cost still count them."""
    prompt = "billed early, then busy"
    env.fake.prices = [("gpt-image-2", 0.04)]
    env.fake.script(prompt, ["524", "524"] + ["503"] * 17 + ["b64"])
    d = env.daemon(retry__max_retries=20, retry__max_billed_retries=2, retry__backoff_cap_ms=100,
                   **{"prices__gpt-image-2": "0.04"}).start()
    d.submit("elided", {"prompt": prompt})
    assert d.wait_finished("elided", 90) == "done", d.log()[-3000:]
    r = d.result("elided")
    assert env.fake.calls(prompt) == 20
    assert len(r["attempts"]) == LISTED and r["attempts_elided"] == 4, r
    assert all(a["billed"] == "no" for a in r["attempts"][:-1]), "the billed 524s were elided"
    assert r["billed_attempts"] == env.fake.billed(prompt) == 3, r["billed_attempts"]
    assert r["retry_count"] == 19
    assert math.isclose(r["cost"]["amount"], 0.12) and r["cost"]["estimated"] is True, r["cost"]


def test_imgspool_cancel_and_retry_keep_the_client_bytes(env):
    """imgspool reads the records as the daemon does and splices them as the daemon does: a job
    held after 40 probes, cancelled and retried, keeps its bytes and its count of attempts."""
    prompt = "held, cancelled, retried"
    cap = 65536
    d = env.daemon(verbose=True, limits__max_job_bytes=cap).start()
    original = client_file_at(cap, prompt)
    end = original.rindex(b"}")
    records = {"attempts": [hold_attempt(i) for i in range(40)], "retry_count": 0,
               "billed_retries": 0, "crashes": 0}
    held = original[:end] + b',"imgspool":' + json.dumps(records).encode() + original[end:]
    with open(d.path("hold", "again.json"), "wb") as f:   # as imgspool hold leaves a held job
        f.write(held)
    r = cli(d.spool, "cancel", "again")
    assert r.returncode == 0, r
    cancelled = d.result("again")
    assert len(cancelled["attempts"]) == LISTED and cancelled["attempts_elided"] == 40 - LISTED, cancelled
    r = cli(d.spool, "retry", "again")
    assert r.returncode == 0, r
    assert d.wait_finished("again", 30) == "done", d.log()[-3000:]
    written = d.read("done", "again.json")
    assert written.startswith(original[:end]) and written.endswith(original[end:]), \
        "the client's bytes are kept exactly"
    runs = json.loads(written)["imgspool"]["runs"]
    assert [(run["status"], run["error_code"], run["elided"]["attempts"]) for run in runs] == \
        [("failed", "cancelled", 40 - LISTED)], runs
    assert env.fake.calls(prompt) == 1


if __name__ == "__main__":
    run_tests([
        test_a_long_hold_stays_readable,
        test_a_client_file_at_the_cap_survives_retries,
        test_counters_stay_right_after_elision,
        test_imgspool_cancel_and_retry_keep_the_client_bytes,
    ])
