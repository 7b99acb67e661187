#!/usr/bin/env python3
"""Self-check of the fake upstream (stdlib only): python3 tests/fake/selftest.py

Prints "ok - ..." per check and "N passed, 0 failed" at the end; exits non-zero on a failure.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from upstream import (FakeUpstream, KINDS, _prompt_sha, image_marker, jpeg_bytes,  # noqa: E402
                      png_for, png_index, png_prompt_sha256, webp_bytes)

KEY = "sk-test"
GEN = "/v1/images/generations"
NB = "/v1beta/models/gemini-3-pro-image-preview:generateContent"


def request(fake, method, path, body=b"", headers=None, key=KEY, conn=None, timeout=10):
    """(status, lowercased headers, body) of one request; conn may be reused (keep-alive)."""
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", fake.port, timeout=timeout)
    hdrs = dict(headers or {})
    if key:
        hdrs["Authorization"] = f"Bearer {key}"
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    try:
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        if own:
            conn.close()


def gen(fake, prompt, **fields):
    return request(fake, "POST", GEN, {"model": "gpt-image-2", "prompt": prompt, **fields})


def nb(fake, prompt, parts=()):
    return request(fake, "POST", NB, {"contents": [{"parts": [{"text": prompt}, *parts]}],
                                      "generationConfig": {"responseModalities": ["IMAGE"]}})


def fetch_url(url, timeout=10):
    host_port, _, path = url.split("//", 1)[1].partition("/")
    host, port = host_port.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("GET", "/" + path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def raw_request(fake, path, obj, key=KEY):
    """A socket with a complete request sent and nothing read (to hang up on)."""
    body = json.dumps(obj).encode()
    sock = socket.create_connection(("127.0.0.1", fake.port))
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
                 f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                 + body)
    return sock


def record(fake, prompt, index=-1):
    return [r for r in fake.snapshot() if r["prompt"] == prompt][index]


# ---------------------------------------------------------------------------------------------

def t_images():
    png = png_for("a cat", 2)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert png_prompt_sha256(png) == _prompt_sha("a cat") and png_index(png) == 2
    assert png_prompt_sha256(b"\x89PNG\r\n\x1a\n") is None and png_index(b"junk") is None
    assert jpeg_bytes("x").startswith(b"\xff\xd8\xff") and jpeg_bytes("x").endswith(b"\xff\xd9")
    w = webp_bytes("x", 1, pad=5)
    assert w[:4] == b"RIFF" and w[8:12] == b"WEBP" and int.from_bytes(w[4:8], "little") == len(w) - 8
    for blob in (jpeg_bytes("x", 1), w, png_for("x", 1, pad=1000)):
        assert image_marker(blob) == {"sha256": _prompt_sha("x"), "index": 1}, blob[:16]


def t_openai_b64(fake):
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=10)
    st, h, body = request(fake, "POST", GEN, {"model": "gpt-image-2", "prompt": "b64 one"}, conn=conn)
    assert st == 200 and h["transfer-encoding"] == "chunked" and h["x-request-id"], h
    doc = json.loads(body)
    assert set(doc) == {"created", "data", "usage"}
    assert set(doc["usage"]) == {"input_tokens", "input_tokens_details", "output_tokens",
                                 "output_tokens_details", "total_tokens"}
    img = base64.b64decode(doc["data"][0]["b64_json"])
    assert png_prompt_sha256(img) == _prompt_sha("b64 one") and png_index(img) == 0
    # keep-alive: the same connection serves a second request
    st, _, body = request(fake, "POST", GEN, {"model": "gpt-image-2", "prompt": "b64 two", "n": 3},
                          conn=conn)
    conn.close()
    imgs = [base64.b64decode(d["b64_json"]) for d in json.loads(body)["data"]]
    assert st == 200 and [png_index(i) for i in imgs] == [0, 1, 2]
    rec = record(fake, "b64 two")
    assert rec["billed"] and rec["status"] == 200 and rec["dialect"] == "openai"
    assert rec["model"] == "gpt-image-2" and rec["headers"]["authorization"] == f"Bearer {KEY}"
    assert fake.calls("b64 two") == 1 and fake.billed("b64 two") == 1


def t_datauri_and_formats(fake):
    fake.script("legacy", {"kind": "b64_datauri"})
    doc = json.loads(gen(fake, "legacy")[2])
    assert doc["data"][0]["b64_json"].startswith("data:image/png;base64,")
    assert "input_tokens_details" not in doc["usage"]
    fake.script("as jpeg", {"format": "jpeg"})
    img = base64.b64decode(json.loads(gen(fake, "as jpeg")[2])["data"][0]["b64_json"])
    assert img.startswith(b"\xff\xd8\xff") and png_prompt_sha256(img) == _prompt_sha("as jpeg")
    img = base64.b64decode(json.loads(gen(fake, "asked webp", output_format="webp")[2])
                           ["data"][0]["b64_json"])
    assert img[:4] == b"RIFF" and img[8:12] == b"WEBP"
    fake.script("big body", {"pad_mb": 2})
    st, _, body = gen(fake, "big body")
    assert st == 200 and 1.9e6 < len(body) < 2.3e6, len(body)


def t_url_ttl(fake):
    fake.script("by url", {"kind": "url", "ttl": 0.5, "url_fail_downloads": 1})
    st, _, body = gen(fake, "by url")
    url = json.loads(body)["data"][0]["url"]
    assert st == 200 and url.startswith(fake.base_url + "/results/") and url.endswith("?signature=x")
    assert fetch_url(url)[0] == 503                       # first download fails, as scripted
    st, img = fetch_url(url)
    assert st == 200 and png_prompt_sha256(img) == _prompt_sha("by url")
    time.sleep(0.6)
    assert fetch_url(url)[0] == 404                       # TTL over
    assert [d["status"] for d in fake.downloads[-3:]] == [503, 200, 404]
    assert "authorization" not in fake.downloads[-1]["headers"]


def t_gemini(fake):
    ref1, ref2 = png_for("ref one"), b"\xff\xd8\xffjpeg-ish"
    st, h, body = nb(fake, "nano cat", [
        {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(ref1).decode()}},
        {"inline_data": {"mime_type": "image/jpeg", "data": base64.b64encode(ref2).decode()}}])
    doc = json.loads(body)
    part = doc["candidates"][0]["content"]["parts"][0]["inlineData"]
    assert st == 200 and part["mimeType"] == "image/png" and doc["candidates"][0]["finishReason"] == "STOP"
    assert png_prompt_sha256(base64.b64decode(part["data"])) == _prompt_sha("nano cat")
    assert doc["usageMetadata"]["candidatesTokenCount"] == 1120
    assert doc["modelVersion"] == "gemini-3-pro-image-preview"
    rec = record(fake, "nano cat")
    assert rec["dialect"] == "gemini" and rec["model"] == "gemini-3-pro-image-preview"
    assert rec["refs"] == [ref1, ref2] and rec["ref_types"] == ["image/png", "image/jpeg"]

    fake.script("oss", {"kind": "nb_oss_url"})
    text = json.loads(nb(fake, "oss")[2])["candidates"][0]["content"]["parts"][0]["text"]
    assert fetch_url(text)[0] == 200
    fake.script("text first", {"kind": "gemini_text_first"})
    parts = json.loads(nb(fake, "text first")[2])["candidates"][0]["content"]["parts"]
    assert "text" in parts[0] and "inlineData" in parts[1]
    fake.script("refused", {"kind": "gemini_finish", "reason": "NO_IMAGE"})
    st, _, body = nb(fake, "refused")
    assert st == 200 and json.loads(body)["candidates"][0]["finishReason"] == "NO_IMAGE"
    assert fake.billed("refused") == 1                     # a 200 refusal is billed
    fake.script("safety", {"kind": "gemini_image_safety"})
    doc = json.loads(nb(fake, "safety")[2])
    assert doc["candidates"][0]["content"]["parts"] is None


def t_edits_multipart(fake):
    img1 = b"\x89PNG\r\n\x1a\n--not-a-boundary\r\n\r\nbinary\x00\xff"
    img2, mask = jpeg_bytes("second"), png_for("mask")
    boundary = "----fakeBoundary7MA4YWxkTrZu0gW"
    chunks = []
    for name, value in (("model", "gpt-image-2"), ("prompt", "edit: 猫 with hat"), ("size", "1024x1024")):
        chunks.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                      .encode() + value.encode() + b"\r\n")
    for name, fn, ctype, data in (("image[]", "a.png", "image/png", img1),
                                  ("image[]", "b.jpg", "image/jpeg", img2),
                                  ("mask", "mask.png", "image/png", mask)):
        chunks.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                      f'filename="{fn}"\r\nContent-Type: {ctype}\r\n\r\n'.encode() + data + b"\r\n")
    body = b"".join(chunks) + f"--{boundary}--\r\n".encode()
    st, _, resp = request(fake, "POST", "/v1/images/edits", body,
                          {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert st == 200, resp
    assert png_prompt_sha256(base64.b64decode(json.loads(resp)["data"][0]["b64_json"])) \
        == _prompt_sha("edit: 猫 with hat")
    rec = record(fake, "edit: 猫 with hat")
    assert rec["model"] == "gpt-image-2" and rec["refs"] == [img1, img2] and rec["mask"] == mask
    assert [p["name"] for p in rec["parts"]] == ["model", "prompt", "size", "image[]", "image[]", "mask"]
    assert rec["parts"][4]["filename"] == "b.jpg" and rec["parts"][4]["content_type"] == "image/jpeg"
    assert rec["parts"][2]["value"] == "1024x1024"


def t_errors(fake):
    fake.script("busy", {"kind": "429_retry_after", "retry_after": 3})
    st, h, body = gen(fake, "busy")
    err = json.loads(body)["error"]
    assert st == 429 and h["retry-after"] == "3" and h["content-type"] == "application/json"
    assert err == {"message": f"当前分组上游负载已饱和，请稍后再试 (request id: {h['x-request-id']})",
                   "type": "new_api_error", "param": "", "code": None}
    assert fake.billed("busy") == 0
    fake.script("ms", {"kind": "429_retry_after_ms", "retry_after_ms": 250})
    assert gen(fake, "ms")[1]["retry-after-ms"] == "250"
    fake.script("date", {"kind": "429_http_date", "retry_after": 5})
    assert gen(fake, "date")[1]["retry-after"].endswith(" GMT")
    fake.script("g429", "google_429")
    assert json.loads(nb(fake, "g429")[2])["error"]["details"][0]["retryDelay"] == "37s"
    fake.script("quota", "429_quota")
    assert json.loads(gen(fake, "quota")[2])["error"]["code"] == "insufficient_user_quota"
    fake.script("mod", {"kind": "400_moderation", "categories": ["violence"]})
    st, _, body = gen(fake, "mod")
    err = json.loads(body)["error"]
    assert st == 400 and err["code"] == "moderation_blocked"
    assert err["moderation_details"] == {"moderation_stage": "output", "categories": ["violence"]}
    fake.script("cdn", "524")
    st, h, _ = gen(fake, "cdn")
    assert st == 524 and h["content-type"].startswith("text/html") and fake.billed("cdn") == 1
    fake.script("restart", {"kind": "502"})
    st, _, body = gen(fake, "restart")
    assert st == 502 and body == b""
    fake.script("mal", "malformed_json")
    st, _, body = gen(fake, "mal")
    try:
        json.loads(body)
        raise AssertionError("malformed_json parsed")
    except ValueError:
        pass
    assert fake.billed("mal") == 1
    st, _, body = request(fake, "POST", "/v1/chat/completions", {"x": 1})
    assert st == 404 and "Invalid URL" in json.loads(body)["error"]["message"]
    st, _, _ = request(fake, "POST", GEN, b"{not json", {"Content-Type": "application/json"})
    assert st == 400
    # every kind builds a response, for both dialects
    for kind in KINDS:
        if kind in ("trickle", "tail_stall", "reset", "hang"):
            continue
        fake.script(f"each {kind}", {"kind": kind})
        for call in (gen, nb):
            st, h, _ = call(fake, f"each {kind}")
            assert h.get("x-request-id"), kind
            assert st != 500 or kind == "500", (kind, st)   # 500 would mean the builder failed


def t_directives_and_auth(fake):
    prompt = "a dog [fake:429|503_embedded|b64]"
    assert [gen(fake, prompt)[0] for _ in range(4)] == [429, 503, 200, 200]
    assert gen(fake, "slow [fake:b64 delay=0.3]")[0] == 200
    assert record(fake, "slow [fake:b64 delay=0.3]")["finished"] \
        - record(fake, "slow [fake:b64 delay=0.3]")["started"] >= 0.3
    st, h, body = request(fake, "POST", GEN, {"model": "m", "prompt": "locked"}, key="sk-wrong")
    assert st == 401 and json.loads(body)["error"]["message"] == \
        f"无效的令牌 (request id: {h['x-request-id']})"
    assert request(fake, "POST", GEN, {"model": "m", "prompt": "locked"}, key=None)[0] == 401
    old = fake.api_keys
    fake.api_keys = {"sk-wrong"}
    assert request(fake, "POST", GEN, {"model": "m", "prompt": "locked"}, key="sk-wrong")[0] == 200
    fake.api_keys = old
    assert fake.calls("locked") == 3 and fake.billed("locked") == 1


def t_concurrency(fake):
    fake.script("parallel", {"kind": "b64", "delay": 0.3})
    results = []
    threads = [threading.Thread(target=lambda i=i: results.append(gen(fake, f"parallel {i}")[0]))
               for i in range(20)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 20 and fake.max_inflight >= 20, (results, fake.max_inflight)
    assert time.monotonic() - t0 < 2.0
    # 200 simultaneous connections all get answered
    fake.script("crowd", {"kind": "b64", "delay": 0.5})
    results.clear()
    threads = [threading.Thread(target=lambda i=i: results.append(gen(fake, f"crowd {i}")[0]))
               for i in range(200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 200 and fake.max_inflight >= 150, fake.max_inflight
    assert fake.inflight == 0


def t_transport(fake):
    # hang-up while "generating": noticed, and still billed
    sock = raw_request(fake, GEN, {"model": "m", "prompt": "gone early [fake:b64 delay=30]"})
    fake.wait_for(lambda: fake.calls("gone early [fake:b64 delay=30]") == 1, 5)
    sock.close()
    fake.wait_for(lambda: record(fake, "gone early [fake:b64 delay=30]")["client_gone"], 5)
    assert fake.billed("gone early [fake:b64 delay=30]") == 1
    # hang: never answers, not billed
    fake.script("hangs", "hang")
    try:
        request(fake, "POST", GEN, {"model": "m", "prompt": "hangs"}, timeout=0.3)
        raise AssertionError("hang answered")
    except TimeoutError:
        pass
    fake.wait_for(lambda: record(fake, "hangs")["client_gone"], 5)
    assert not record(fake, "hangs")["billed"] and record(fake, "hangs")["status"] is None
    # reset mid-body
    fake.script("cut", {"kind": "reset", "fraction": 0.5, "pad_mb": 1})
    try:
        gen(fake, "cut")
        raise AssertionError("reset delivered a whole body")
    except (http.client.IncompleteRead, ConnectionResetError):
        pass
    assert fake.billed("cut") == 1
    # tail stall: every byte, then the terminator late
    fake.script("stall", {"kind": "tail_stall", "stall": 0.5})
    t0 = time.monotonic()
    st, _, body = gen(fake, "stall")
    assert st == 200 and json.loads(body)["data"] and time.monotonic() - t0 >= 0.5
    # trickle: 64 KB at 200 KB/s takes about 0.3 s
    fake.script("slow body", {"kind": "trickle", "kbps": 200, "pad_mb": 0.0625})
    t0 = time.monotonic()
    st, _, body = gen(fake, "slow body")
    assert st == 200 and len(body) > 60000 and 0.25 <= time.monotonic() - t0 < 2, time.monotonic() - t0
    # trickled error body, and a client leaving in the middle of a trickle
    fake.script("slow 429", {"kind": "trickle", "body": "429", "kbps": 1})
    assert gen(fake, "slow 429")[0] == 429 and fake.billed("slow 429") == 0
    fake.script("leaves", {"kind": "trickle", "kbps": 1, "pad_mb": 0.1})
    sock = raw_request(fake, GEN, {"model": "m", "prompt": "leaves"})
    assert sock.recv(100).startswith(b"HTTP/1.1 200")
    sock.close()
    fake.wait_for(lambda: record(fake, "leaves")["client_gone"], 5)
    assert fake.billed("leaves") == 1


def t_standalone():
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "upstream.py")
    with tempfile.TemporaryDirectory() as tmp:
        port_file = os.path.join(tmp, "port")
        proc = subprocess.Popen([sys.executable, here, "--port", "0", "--key", "sk-demo",
                                 "--port-file", port_file], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            line = proc.stdout.readline()
            port = int(open(port_file).read())
            assert line.strip() == f"fake upstream listening on http://127.0.0.1:{port}", line

            class Fake:
                pass
            f = Fake()
            f.port = port
            st, _, body = request(f, "POST", GEN, {"model": "m", "prompt": "demo [fake:429|b64]"},
                                  key="sk-demo")
            assert st == 429
            assert request(f, "POST", GEN, {"model": "m", "prompt": "demo [fake:429|b64]"},
                           key="sk-demo")[0] == 200
        finally:
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=10)
        assert proc.returncode == 0 and err == "", (proc.returncode, err)


def main() -> int:
    real_stderr, captured = sys.stderr, io.StringIO()
    passed = failed = 0
    fake = FakeUpstream(api_keys={KEY}).start()
    checks = [t_images] + [lambda f=f: f(fake) for f in (
        t_openai_b64, t_datauri_and_formats, t_url_ttl, t_gemini, t_edits_multipart, t_errors,
        t_directives_and_auth, t_concurrency, t_transport)] + [t_standalone]
    names = ["images"] + ["openai_b64", "datauri_and_formats", "url_ttl", "gemini", "edits_multipart",
                          "errors", "directives_and_auth", "concurrency", "transport"] + ["standalone"]
    sys.stderr = captured          # the fake must stay quiet on normal hang-ups
    try:
        for name, check in zip(names, checks):
            try:
                check()
                print(f"ok - {name}", flush=True)
                passed += 1
            except Exception as e:  # noqa: BLE001 - report and go on
                import traceback
                print(f"not ok - {name}: {e!r}\n{traceback.format_exc()}", flush=True)
                failed += 1
        fake.stop()
    finally:
        sys.stderr = real_stderr
    if captured.getvalue():
        print(f"not ok - stderr stayed quiet:\n{captured.getvalue()}")
        failed += 1
    else:
        print("ok - stderr stayed quiet")
        passed += 1
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
