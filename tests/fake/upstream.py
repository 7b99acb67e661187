#!/usr/bin/env python3
"""A fake APIYI upstream on loopback, for imgspool's integration tests and `make demo`.

It speaks both wire dialects of shared/upstream-api.md with the bodies of its section 6:
  POST /v1/images/generations             OpenAI dialect, JSON body
  POST /v1/images/edits                   OpenAI dialect, multipart/form-data
  POST /v1beta/models/{model}:generateContent   Gemini dialect
  GET  /results/<token>/<file>            images handed out by URL responses, until their TTL ends

Standard library only (Python 3.11).  In-process use:

    fake = FakeUpstream(api_keys={"sk-test"}).start()
    fake.script("a cat", [{"kind": "429"}, {"kind": "b64", "delay": 0.5}])
    ... run the daemon against fake.base_url ...
    fake.wait_for(lambda: fake.billed("a cat") == 1, 10)
    fake.stop()

Standalone: python3 upstream.py --port 0 --key sk-demo [--port-file PATH] [--verbose]

A prompt may carry its own script: "a cat [fake:429_retry_after retry_after=1|b64]" answers the
first request for that exact prompt with a 429 and every later one with an image.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import dataclasses
import email.message
import email.utils
import fnmatch
import hashlib
import http.server
import json
import os
import re
import secrets
import select
import signal
import socket
import socketserver
import struct
import sys
import threading
import time
import uuid
import zlib
from typing import Any, Callable

__all__ = [
    "FakeUpstream", "png_for", "jpeg_bytes", "webp_bytes", "image_marker",
    "png_prompt_sha256", "png_index", "parse_directive", "KINDS",
]

# ---------------------------------------------------------------------------------------------
# Images.  Every image carries the sha256 of the prompt it was made for and its index in the
# response, so a test can prove that each stored file belongs to its own job.

MARK_SHA = "imgspool-prompt-sha256"
MARK_INDEX = "imgspool-index"
_PNG_SIG = b"\x89PNG\r\n\x1a\n"


def _prompt_sha(prompt: str) -> str:
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()


def _png_chunk(ctype: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", zlib.crc32(ctype + data))


def png_for(prompt: str, index: int = 0, *, pad: int = 0) -> bytes:
    """A valid 8x8 RGB PNG whose colour comes from the prompt; pad adds that many bytes in a
    private ancillary chunk (decoders skip it) to make large bodies."""
    r, g, b = hashlib.sha256(f"{index}\0{prompt}".encode("utf-8")).digest()[:3]
    row = b"\0" + bytes((r, g, b)) * 8          # filter type 0, then 8 RGB pixels
    chunks = [
        _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0)),
        _png_chunk(b"tEXt", MARK_SHA.encode() + b"\0" + _prompt_sha(prompt).encode()),
        _png_chunk(b"tEXt", MARK_INDEX.encode() + b"\0" + str(index).encode()),
        _png_chunk(b"IDAT", zlib.compress(row * 8)),
    ]
    if pad > 0:
        chunks.append(_png_chunk(b"paDd", bytes(pad)))
    chunks.append(_png_chunk(b"IEND", b""))
    return _PNG_SIG + b"".join(chunks)


def _marker_text(prompt: str, index: int) -> bytes:
    return f"{MARK_SHA}={_prompt_sha(prompt)} {MARK_INDEX}={index}".encode()


def jpeg_bytes(prompt: str = "", index: int = 0, *, pad: int = 0) -> bytes:
    """SOI, a COM segment holding the marker, optional padding COM segments, EOI.  Right magic
    (FF D8 FF) and structure for sniffing; it holds no scan, so decoders will reject it."""
    def com(data: bytes) -> bytes:
        return b"\xff\xfe" + struct.pack(">H", len(data) + 2) + data

    segments = [com(_marker_text(prompt, index))]
    while pad > 0:                               # a segment holds at most 65533 bytes
        n = min(pad, 65533)
        segments.append(com(bytes(n)))
        pad -= n
    return b"\xff\xd8" + b"".join(segments) + b"\xff\xd9"


def webp_bytes(prompt: str = "", index: int = 0, *, pad: int = 0) -> bytes:
    """A RIFF/WEBP container holding the marker in an "ISPM" chunk (plus an optional "PAD "
    chunk).  Right magic for sniffing; there is no VP8 bitstream, so decoders will reject it."""
    def chunk(fourcc: bytes, data: bytes) -> bytes:
        return fourcc + struct.pack("<I", len(data)) + data + (b"\0" if len(data) % 2 else b"")

    body = b"WEBP" + chunk(b"ISPM", _marker_text(prompt, index))
    if pad > 0:
        body += chunk(b"PAD ", bytes(pad))
    return b"RIFF" + struct.pack("<I", len(body)) + body


_MARKER_RE = re.compile(rb"imgspool-prompt-sha256=([0-9a-f]{64}) imgspool-index=(\d+)")


def image_marker(data: bytes) -> dict | None:
    """{"sha256": hex, "index": int} read from an image made here (PNG tEXt chunks, or the marker
    text of jpeg_bytes/webp_bytes), else None."""
    if data.startswith(_PNG_SIG):
        found: dict = {}
        pos = len(_PNG_SIG)
        while pos + 12 <= len(data):
            (length,) = struct.unpack(">I", data[pos:pos + 4])
            ctype, payload = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
            if ctype == b"tEXt":
                key, _, value = payload.partition(b"\0")
                if key == MARK_SHA.encode():
                    found["sha256"] = value.decode("latin-1")
                elif key == MARK_INDEX.encode() and value.isdigit():
                    found["index"] = int(value)
            elif ctype == b"IEND":
                break
            pos += 12 + length
        return found if len(found) == 2 else None
    m = _MARKER_RE.search(data[:4096])
    return {"sha256": m.group(1).decode(), "index": int(m.group(2))} if m else None


def png_prompt_sha256(data: bytes) -> str | None:
    """The prompt sha256 embedded in an image made here (PNG, and also jpeg_bytes/webp_bytes)."""
    marker = image_marker(data)
    return marker["sha256"] if marker else None


def png_index(data: bytes) -> int | None:
    """The 0-based image index embedded in an image made here."""
    marker = image_marker(data)
    return marker["index"] if marker else None


_FORMATS = {  # output format -> (maker, MIME type, file extension used in result URLs)
    "png": (png_for, "image/png", "png"),
    "jpeg": (jpeg_bytes, "image/jpeg", "jpeg"),
    "webp": (webp_bytes, "image/webp", "webp"),
}

# ---------------------------------------------------------------------------------------------
# Responses.  A builder turns the request context into a Reply; how the Reply travels (at once,
# trickled, stalled, cut) is decided separately, so every fault works with every body.


@dataclasses.dataclass
class Reply:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    chunked: bool = False      # success bodies travel chunked, like the real gateway's large ones


@dataclasses.dataclass
class _Ctx:
    fake: "FakeUpstream"
    rec: dict
    step: dict
    rid: str
    params: dict               # the request's own fields: n, output_format, quality, imageSize
    bearer: str

    @property
    def prompt(self) -> str:
        return self.rec["prompt"] or ""

    @property
    def model(self) -> str:
        return self.rec["model"] or ""

    def opt(self, name: str, default: Any) -> Any:
        return self.step.get(name, default)

    def fmt(self) -> str:
        fmt = str(self.opt("format", self.params.get("output_format") or "png")).lower()
        return "jpeg" if fmt == "jpg" else fmt if fmt in _FORMATS else "png"

    def count(self) -> int:
        try:
            n = int(self.opt("images", self.params.get("n") or 1))
        except (TypeError, ValueError):
            n = 1
        return max(1, min(n, 10))

    def images(self) -> list[tuple[bytes, str, str]]:
        """(bytes, MIME type, extension) for each image of this response."""
        maker, mime, ext = _FORMATS[self.fmt()]
        n = self.count()
        # pad_mb is the size of the JSON body; base64 makes 3 raw bytes into 4 characters.
        pad = int(float(self.opt("pad_mb", 0)) * (1 << 20) * 3 / 4 / n)
        return [(maker(self.prompt, i, pad=pad), mime, ext) for i in range(n)]

    def suffix(self, message: str) -> str:
        return f"{message} (request id: {self.rid})"


def _json(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _error(status: int, error: dict, headers: list | None = None) -> Reply:
    return Reply(status, _json({"error": error}), headers=headers or [])


def _html(status: int, title: str, host: str = "nginx") -> Reply:
    page = (f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1>"
            f"</center>\r\n<hr><center>{host}</center>\r\n</body>\r\n</html>\r\n")
    return Reply(status, page.encode(), "text/html; charset=utf-8")


def _text_tokens(ctx: _Ctx) -> int:
    return max(1, len(ctx.prompt) // 4)


# -- success, OpenAI dialect --

_OUTPUT_TOKENS = {"low": 196, "medium": 1056, "high": 4160}


def _openai_usage(ctx: _Ctx, details: bool = True) -> dict:
    text_in, image_in = _text_tokens(ctx), 388 * len(ctx.rec["refs"])
    out = _OUTPUT_TOKENS.get(str(ctx.params.get("quality")), 1056) * ctx.count()
    if not details:
        return {"input_tokens": text_in + image_in, "output_tokens": out,
                "total_tokens": text_in + image_in + out}
    return {"input_tokens": text_in + image_in,
            "input_tokens_details": {"image_tokens": image_in, "text_tokens": text_in},
            "output_tokens": out,
            "output_tokens_details": {"image_tokens": out, "text_tokens": 0},
            "total_tokens": text_in + image_in + out}


def _openai_b64(ctx: _Ctx, datauri: bool = False) -> Reply:
    data = []
    for img, mime, _ in ctx.images():
        data.append({"b64_json": (f"data:{mime};base64," if datauri else "") + _b64(img)})
    body = {"created": int(time.time()), "data": data,
            "usage": _openai_usage(ctx, details=not datauri)}
    return Reply(200, _json(body), chunked=True)


def _result_urls(ctx: _Ctx) -> list[str]:
    ttl = float(ctx.opt("ttl", 600))
    fails = int(ctx.opt("url_fail_downloads", 0))
    hangs = int(ctx.opt("url_hang_downloads", 0))    # that many downloads never answer
    return [ctx.fake._publish(img, mime, ext, ttl, fails, hangs) for img, mime, ext in ctx.images()]


def _openai_url(ctx: _Ctx) -> Reply:
    body = {"created": int(time.time()), "data": [{"url": u} for u in _result_urls(ctx)]}
    return Reply(200, _json(body), chunked=True)


# -- success, Gemini dialect --

def _gemini_usage(ctx: _Ctx, out: int | None = None) -> dict:
    prompt = _text_tokens(ctx) + 258 * len(ctx.rec["refs"])
    if out is None:
        per_image = 2000 if str(ctx.params.get("imageSize", "")).upper() == "4K" else 1120
        out = per_image * ctx.count()
    return {"promptTokenCount": prompt, "candidatesTokenCount": out, "totalTokenCount": prompt + out}


def _gemini_body(ctx: _Ctx, parts: list, out: int | None = None) -> Reply:
    body = {"candidates": [{"content": {"role": "model", "parts": parts},
                            "finishReason": "STOP", "index": 0}],
            "usageMetadata": _gemini_usage(ctx, out),
            "modelVersion": ctx.model}
    return Reply(200, _json(body), chunked=True)


def _gemini_inline(ctx: _Ctx, datauri: bool = False) -> list:
    return [{"inlineData": {"mimeType": mime,
                            "data": (f"data:{mime};base64," if datauri else "") + _b64(img)}}
            for img, mime, _ in ctx.images()]


def _gemini_oss(ctx: _Ctx) -> Reply:
    form = "![image]({})" if ctx.opt("markdown", False) else "{}"
    return _gemini_body(ctx, [{"text": form.format(u)} for u in _result_urls(ctx)])


def _success(ctx: _Ctx, kind: str) -> Reply:
    gemini = ctx.rec["dialect"] == "gemini"
    if kind == "b64":
        return _gemini_body(ctx, _gemini_inline(ctx)) if gemini else _openai_b64(ctx)
    if kind == "b64_datauri":
        return _gemini_body(ctx, _gemini_inline(ctx, True)) if gemini else _openai_b64(ctx, True)
    if kind == "url":                           # the Gemini counterpart of a URL is NB-OSS
        return _gemini_oss(ctx) if gemini else _openai_url(ctx)
    if kind == "gemini_text_first":
        return _gemini_body(ctx, [{"text": "Here is the image you asked for."}] + _gemini_inline(ctx))
    return _gemini_oss(ctx)                     # nb_oss_url


# -- gateway and upstream errors (section 6 bodies) --

_SATURATED = "当前分组上游负载已饱和，请稍后再试"


def _rate_limited(ctx: _Ctx, kind: str) -> Reply:
    headers = []
    if kind == "429_retry_after":
        headers.append(("Retry-After", str(ctx.opt("retry_after", "7"))))
    elif kind == "429_retry_after_ms":
        headers.append(("retry-after-ms", str(ctx.opt("retry_after_ms", "1500"))))
    elif kind == "429_http_date":
        when = time.time() + float(ctx.opt("retry_after", 7))
        headers.append(("Retry-After", email.utils.formatdate(when, usegmt=True)))
    return _error(429, {"message": ctx.suffix(_SATURATED), "type": "new_api_error",
                        "param": "", "code": None}, headers)


def _moderation(ctx: _Ctx, status: int) -> Reply:
    categories = ctx.opt("categories", ["sexual"])
    if isinstance(categories, str):             # from a directive: categories=sexual,violence
        categories = categories.split(",")
    message = ("Your request was rejected by the safety system. If you believe this is an error, "
               f"contact us at help.openai.com and include the request ID {uuid.uuid4()}. "
               f"safety_violations=[{', '.join(categories)}].")
    return _error(status, {"message": ctx.suffix(message), "type": "image_generation_user_error",
                           "param": None, "code": "moderation_blocked",
                           "moderation_details": {"moderation_stage": ctx.opt("stage", "output"),
                                                  "categories": categories}})


def _masked(key: str) -> str:
    return key[:3] + "*" * max(0, len(key) - 7) + key[-4:] if len(key) > 7 else "sk-…"


def _json_escaped(text: str) -> bytes:
    """text with every '-' written as a \\u escape: the same string to a JSON parser, but not
    text's bytes (a redaction of the raw body does not see it)."""
    return text.replace("-", "\\u002d").encode()


def _key_in_usage(ctx: _Ctx) -> Reply:
    """A 200 with the image, whose usage has a member named by the caller's key, escaped."""
    reply = _openai_b64(ctx)
    reply.body = reply.body.replace(b'"usage":{', b'"usage":{"' + _json_escaped(ctx.bearer) +
                                    b'":1,', 1)
    return reply


def _key_echo_escaped(ctx: _Ctx) -> Reply:
    return Reply(400, b'{"error":{"message":"invalid request for token ' +
                 _json_escaped(ctx.bearer) + b': unsupported size","type":"invalid_request_error",'
                 b'"param":"size","code":"invalid_size"}}')


_ERRORS: dict[str, Callable[[_Ctx], Reply]] = {
    "429_quota": lambda ctx: _error(429, {
        "message": _SATURATED, "type": "insufficient_quota", "code": "insufficient_user_quota"}),
    "google_429": lambda ctx: _error(429, {
        "code": 429,
        "message": "You exceeded your current quota, please check your plan and billing details.",
        "status": "RESOURCE_EXHAUSTED",
        "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                     "retryDelay": str(ctx.opt("retry_delay", "37s"))}]}),
    "503": lambda ctx: _error(503, {
        "message": ctx.suffix(f"分组 default 下模型 {ctx.model} 无可用渠道（distributor）"),
        "type": "new_api_error", "param": "", "code": "model_not_found"}),
    "503_embedded": lambda ctx: _error(503, {
        "message": '{\n  "error": {\n    "code": 503,\n    "message": "The model is overloaded. '
                   'Please try again later.",\n    "status": "UNAVAILABLE"\n  }\n}\n',
        "code": 503, "status": ""}),
    # A gateway container restarting: nginx answers with an empty body, or its HTML page (html=1).
    "502": lambda ctx: _html(502, "502 Bad Gateway") if ctx.opt("html", False) else Reply(502),
    # Section 6 gives no 500 body; this is new-api's usual relay failure.
    "500": lambda ctx: _error(500, {
        "message": ctx.suffix("do request failed"), "type": "new_api_error", "param": "",
        "code": "do_request_failed"}),
    "504": lambda ctx: _html(504, "504 Gateway Time-out"),
    "524": lambda ctx: Reply(524, b"<!DOCTYPE html><html><head><title>api-cf.apiyi.com | 524: "
                                  b"A timeout occurred</title></head><body><h1>A timeout occurred"
                                  b"</h1><p>Error code 524</p></body></html>",
                             "text/html; charset=UTF-8"),
    "400_unknown_parameter": lambda ctx: _error(400, {
        "message": ctx.suffix(f"Unknown parameter: '{ctx.opt('param', 'response_format')}'."),
        "type": "invalid_request_error", "param": ctx.opt("param", "response_format"),
        "code": "unknown_parameter"}),
    "400_invalid_image": lambda ctx: _error(400, {
        "message": "Invalid image file or mode for image 1, please check your image file.",
        "type": "invalid_request_error", "param": "image", "code": "invalid_image_file"}),
    "400_invalid_value": lambda ctx: _error(400, {
        "message": "Invalid value: 'hd'. Supported values are: 'low', 'medium', 'high', and 'auto'.",
        "type": "invalid_request_error", "param": "quality", "code": "invalid_value"}),
    "gemini_400": lambda ctx: _error(400, {
        "code": 400, "message": str(ctx.opt("message", "Request contains an invalid argument.")),
        "status": "INVALID_ARGUMENT"}),
    "404": lambda ctx: _error(404, {
        "message": f"Invalid URL (POST {ctx.rec['path']})", "type": "invalid_request_error",
        "param": None, "code": None}),
    "413": lambda ctx: _html(413, "413 Request Entity Too Large"),
    # Section 6 gives no 422 body; an illustrative one in the gateway envelope.
    "422": lambda ctx: _error(422, {
        "message": ctx.suffix("Unprocessable Entity: width and height must be multiples of 16"),
        "type": "invalid_request_error", "param": "size", "code": "invalid_size"}),
    "401_openai": lambda ctx: _error(401, {
        "message": f"Incorrect API key provided: {_masked(ctx.bearer)}. You can find your API key "
                   "at https://platform.openai.com/account/api-keys.",
        "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}),
    "403_quota": lambda ctx: _error(403, {
        "message": "用户额度不足, 剩余额度: ＄0.000000", "type": "new_api_error",
        "code": "insufficient_user_quota"}),
    # A gateway that quotes the caller's key back in full (new-api forks have done so).
    "400_key_echo": lambda ctx: _error(400, {
        "message": ctx.suffix(f"invalid request for token {ctx.bearer}: unsupported size"),
        "type": "invalid_request_error", "param": "size", "code": "invalid_size"}),
    # The same, the key spelt with JSON escapes: in the message, or as a member name of a 200's
    # usage (which the result publishes as returned).
    "400_key_echo_escaped": _key_echo_escaped,
    "200_key_in_usage": _key_in_usage,
    "400_moderation": lambda ctx: _moderation(ctx, 400),
    "403_moderation": lambda ctx: _moderation(ctx, 403),
    "400_content_policy": lambda ctx: _error(400, {
        "code": "content_policy_violation",
        "message": "Your request was rejected as a result of our safety system. Your prompt may "
                   "contain text that is not allowed by our safety system.",
        "param": None, "type": "invalid_request_error"}),
}
for _kind in ("429", "429_retry_after", "429_retry_after_ms", "429_http_date"):
    _ERRORS[_kind] = lambda ctx, k=_kind: _rate_limited(ctx, k)
del _kind


# -- HTTP 200 without an image (billed) --

def _refusal_body(ctx: _Ctx, kind: str) -> dict:
    usage0 = {"promptTokenCount": _text_tokens(ctx), "candidatesTokenCount": 0,
              "totalTokenCount": _text_tokens(ctx)}
    if kind == "gemini_image_safety":
        return {"candidates": [{"content": {"parts": None}, "finishReason": "IMAGE_SAFETY",
                                "finishMessage": "Unable to show the generated image. The image was "
                                                 "filtered out because it violated Google's Generative "
                                                 "AI Prohibited Use policy. You will not be charged "
                                                 "for this request.",
                                "index": 0}],
                "usageMetadata": {"promptTokenCount": 531, "candidatesTokenCount": 0,
                                  "totalTokenCount": 824, "thoughtsTokenCount": 293},
                "modelVersion": ctx.model}
    if kind == "gemini_silent":
        return {"candidates": [{"content": {"parts": []}, "finishReason": "STOP"}],
                "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 0}}
    if kind == "gemini_text_only":
        return {"candidates": [{"content": {"role": "model",
                                            "parts": [{"text": "I'm unable to help with this task."}]},
                                "finishReason": "STOP"}],
                "usageMetadata": {"promptTokenCount": 40, "candidatesTokenCount": 173}}
    if kind == "gemini_prompt_blocked":
        return {"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
                "usageMetadata": {"promptTokenCount": 12559, "totalTokenCount": 12559}}
    if kind == "gemini_finish":                 # output blocked: content missing, finishReason set
        return {"candidates": [{"finishReason": str(ctx.opt("reason", "SAFETY")), "index": 0}],
                "usageMetadata": usage0, "modelVersion": ctx.model}
    if kind == "gemini_candidates_empty":
        return {"candidates": [], "usageMetadata": usage0, "modelVersion": ctx.model}
    if kind == "gemini_candidates_null":
        return {"candidates": None, "usageMetadata": usage0, "modelVersion": ctx.model}
    return {"created": int(time.time()), "data": [],      # openai_empty_data
            "usage": {"input_tokens": _text_tokens(ctx), "output_tokens": 0,
                      "total_tokens": _text_tokens(ctx)}}


def _malformed(ctx: _Ctx, kind: str) -> Reply:
    if kind == "malformed_json":                # a well-framed body whose JSON stops half-way
        whole = _success(ctx, "b64").body
        return Reply(200, whole[:len(whole) // 2], chunked=True)
    junk = "!!not*base64~~" if kind == "bad_base64" else _b64(b"this is not an image\n" * 8)
    if ctx.rec["dialect"] == "gemini":
        return _gemini_body(ctx, [{"inlineData": {"mimeType": "image/png", "data": junk}}])
    return Reply(200, _json({"created": int(time.time()), "data": [{"b64_json": junk}],
                             "usage": _openai_usage(ctx)}), chunked=True)


_SUCCESS_KINDS = ("b64", "b64_datauri", "url", "gemini_text_first", "nb_oss_url")
_REFUSAL_KINDS = ("gemini_image_safety", "gemini_silent", "gemini_text_only", "gemini_prompt_blocked",
                  "gemini_finish", "gemini_candidates_empty", "gemini_candidates_null",
                  "openai_empty_data")
_MALFORMED_KINDS = ("malformed_json", "bad_base64", "not_image")
_TRANSPORT_KINDS = ("trickle", "tail_stall", "reset", "hang")

#: Every step kind the fake understands.
KINDS = _SUCCESS_KINDS + tuple(_ERRORS) + _REFUSAL_KINDS + _MALFORMED_KINDS + _TRANSPORT_KINDS


def _build(ctx: _Ctx, kind: str) -> Reply:
    if kind in _SUCCESS_KINDS:
        return _success(ctx, kind)
    if kind in _ERRORS:
        return _ERRORS[kind](ctx)
    if kind in _REFUSAL_KINDS:
        return Reply(200, _json(_refusal_body(ctx, kind)), chunked=True)
    if kind in _MALFORMED_KINDS:
        return _malformed(ctx, kind)
    raise ValueError(f"unknown step kind {kind!r}")


def _billed(status: int | None) -> bool:
    # Section 1.10: a 200 (image or not) and a CDN 524 mean the generation ran; 4xx/429/5xx did not.
    return status in (200, 524)


# ---------------------------------------------------------------------------------------------
# Scripting


_DIRECTIVE_RE = re.compile(r"\[fake:([^\]]+)\]")


def _scalar(text: str) -> Any:
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def parse_directive(prompt: str) -> list[dict] | None:
    """The steps of a "[fake:KIND key=value ...|KIND2 ...]" directive in prompt, else None."""
    m = _DIRECTIVE_RE.search(prompt or "")
    if not m:
        return None
    steps = []
    for segment in m.group(1).split("|"):
        words = segment.split()
        if words:
            step: dict = {"kind": words[0]}
            for word in words[1:]:
                key, sep, value = word.partition("=")
                step[key] = _scalar(value) if sep else True
            steps.append(step)
    return steps or None


def _as_step(step: Any) -> dict:
    step = {"kind": step} if isinstance(step, str) else dict(step)
    step.setdefault("kind", "b64")
    return step


@dataclasses.dataclass
class _Script:
    match: str | Callable[[dict], bool]
    steps: list[dict]
    used: int = 0

    def matches(self, rec: dict) -> bool:
        if callable(self.match):
            return bool(self.match(rec))
        return self.match in (rec["prompt"] or "")


# ---------------------------------------------------------------------------------------------
# HTTP


_GEMINI_PATH = re.compile(r"/v1beta/models/([^/:]+):generateContent")
_RESULT_PATH = re.compile(r"/results/([0-9a-f]+)/[^/]+")
_TICK = 0.05           # pacing and polling step, seconds


class _Gone(Exception):
    """The client closed the connection (or the fake is stopping)."""


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn), which can stall for seconds.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request, client_address) -> None:
        # A client hanging up is normal here; anything else is a bug in the fake, so show it.
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"     # keep-alive: libcurl reuses connections
    server_version = "fake-apiyi/1"

    def version_string(self) -> str:
        return self.server_version

    @property
    def fake(self) -> "FakeUpstream":
        return self.server.fake        # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        self.fake._track(self.connection, True)

    def finish(self) -> None:
        self.fake._track(self.connection, False)
        super().finish()

    # -- low-level I/O --

    def _write(self, data: bytes) -> None:
        try:
            self.wfile.write(data)
        except OSError as e:
            raise _Gone from e

    def _wait(self, seconds: float) -> None:
        """Sleep, watching the socket: raise _Gone as soon as the client hangs up (EOF or reset)
        or the fake stops."""
        deadline = time.monotonic() + seconds
        sock = self.connection
        try:
            poller = select.poll()             # not select(): fds may exceed FD_SETSIZE
            poller.register(sock, select.POLLIN | select.POLLPRI)
        except (OSError, ValueError) as e:     # the socket was closed by stop()
            raise _Gone from e
        while True:
            if self.fake._stopping.is_set():
                raise _Gone
            left = deadline - time.monotonic()
            if left <= 0:
                return
            events = poller.poll(min(_TICK, left) * 1000)
            if not events:
                continue
            if any(ev & (select.POLLHUP | select.POLLERR | select.POLLNVAL) for _, ev in events):
                raise _Gone
            try:
                if sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"":
                    raise _Gone
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as e:               # reset by the peer
                raise _Gone from e
            # The client sent more bytes (a pipelined request): not a hang-up; don't spin.
            time.sleep(_TICK)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            pieces = []
            while True:
                line = self.rfile.readline(1 << 16)
                if not line:
                    raise _Gone
                size = int(line.split(b";")[0].strip(), 16)    # ValueError: bad framing
                if size == 0:
                    while self.rfile.readline(1 << 16) not in (b"\r\n", b"\n", b""):
                        pass                   # trailers
                    return b"".join(pieces)
                pieces.append(self._read_exact(size))
                self.rfile.readline(1 << 16)
        return self._read_exact(int(self.headers.get("Content-Length") or 0))

    def _read_exact(self, n: int) -> bytes:
        data = self.rfile.read(n)
        if len(data) < n:
            raise _Gone
        return data

    def _reset(self) -> None:
        """Abort the connection with a TCP RST rather than a FIN."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        # Mark the socket closed now: the real close (the RST, thanks to SO_LINGER 0) happens when
        # finish() closes rfile, before socketserver's shutdown(SHUT_WR) could send a FIN.
        self.connection.close()

    def _send(self, reply: Reply, rid: str, step: dict | None = None) -> None:
        """Send reply, applying the transport fault the step asks for (trickle, tail_stall, reset)."""
        step = step or {}
        mode = step.get("kind") if step.get("kind") in _TRANSPORT_KINDS else None
        chunked = reply.chunked or mode == "tail_stall"   # a stalled tail needs a terminator
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        id_header = step.get("request_id_header", "x-request-id")
        for name in (("x-request-id", "request-id") if id_header == "both" else (id_header,)):
            self.send_header(name, rid)
        for name, value in reply.headers:
            self.send_header(name, value)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(len(reply.body)))
        try:
            self.end_headers()
        except OSError as e:
            raise _Gone from e

        body = reply.body
        limit = len(body)
        if mode == "reset":
            limit = int(len(body) * min(max(float(step.get("fraction", 0.5)), 0.0), 1.0))
        if mode == "trickle":
            piece = max(1, int(float(step.get("kbps", 64)) * 1024 * _TICK))
        else:   # "several chunks" ("pieces", 4 unless the step says), at most 256 KiB each
            piece = max(1, min(256 << 10, -(-len(body) // int(step.get("pieces", 4)))))
        # A step that says its "pieces" gets a chunked body's end with its last piece: a client
        # reads the whole answer at once.
        end_with_last = chunked and "pieces" in step and mode is None
        pos = 0
        while pos < limit:
            data = body[pos:min(limit, pos + piece)]
            pos += len(data)
            end = b"0\r\n\r\n" if end_with_last and pos >= limit else b""
            self._write(b"%x\r\n%s\r\n%s" % (len(data), data, end) if chunked else data)
            if mode == "trickle" and pos < limit:
                self._wait(_TICK)
        if mode == "reset":
            self._reset()
            return
        if chunked and not end_with_last:
            if mode == "tail_stall":
                self._wait(float(step.get("stall", 30)))
            self._write(b"0\r\n\r\n")

    # -- endpoints --

    def do_GET(self) -> None:
        try:
            m = _RESULT_PATH.fullmatch(self.path.split("?", 1)[0])
            if not m:
                self._send(self._not_found("GET"), self.fake._new_rid())
                return
            found = self.fake._fetch(m.group(1), self.path, self.headers)
            if found is None:
                self._send(Reply(404, b"404 Not Found: the result has expired or never existed\n",
                                 "text/plain"), self.fake._new_rid())
            elif found == "hang":
                self._wait(3600)                  # until the client hangs up
            elif found is False:
                self._send(Reply(503, b"503 Service Unavailable\n", "text/plain"),
                           self.fake._new_rid())
            else:
                self._send(Reply(200, found[0], found[1]), self.fake._new_rid())
        except _Gone:
            self.close_connection = True

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        gemini = _GEMINI_PATH.fullmatch(path)
        try:
            try:
                body = self._read_body()
            except ValueError:                 # broken chunked framing
                self.close_connection = True
                self._send(_error(400, {"message": "bad chunked request body",
                                        "type": "invalid_request_error", "param": None,
                                        "code": None}), self.fake._new_rid())
                return
            if gemini:
                self.fake._generate(self, "gemini", path, body, gemini.group(1))
            elif path in ("/v1/images/generations", "/v1/images/edits"):
                self.fake._generate(self, "openai", path, body, None)
            else:
                self._send(self._not_found("POST"), self.fake._new_rid())
        except _Gone:
            self.close_connection = True

    def _not_found(self, method: str) -> Reply:
        return _error(404, {"message": f"Invalid URL ({method} {self.path.split('?', 1)[0]})",
                            "type": "invalid_request_error", "param": None, "code": None})


# ---------------------------------------------------------------------------------------------
# Request parsing


def _multipart(content_type: str, body: bytes) -> list[dict]:
    """The parts of a multipart/form-data body, in order: {"name", "filename", "content_type",
    "data"} for files and {"name", "value"} for fields."""
    header = email.message.Message()
    header["Content-Type"] = content_type
    boundary = header.get_param("boundary")
    if not boundary:
        raise ValueError("multipart body without a boundary")
    parts = []
    # Every delimiter is CRLF "--" boundary; the first one may lack the CRLF.
    sections = (b"\r\n" + body).split(b"\r\n--" + str(boundary).encode("latin-1"))
    for section in sections[1:]:
        if section.startswith(b"--"):
            break                              # the closing delimiter
        head, sep, data = section.partition(b"\r\n\r\n")
        if not sep:
            raise ValueError("multipart part without a header block")
        meta = email.message.Message()
        for line in head.decode("utf-8", "replace").split("\r\n")[1:]:
            name, colon, value = line.partition(":")
            if colon:
                meta[name.strip()] = value.strip()
        name = meta.get_param("name", header="content-disposition")
        name = email.utils.collapse_rfc2231_value(name) if name is not None else None
        filename = meta.get_filename()
        if filename is not None or name in ("image[]", "image", "mask"):
            parts.append({"name": name, "filename": filename,
                          "content_type": meta.get("Content-Type"), "data": data})
        else:
            parts.append({"name": name, "value": data.decode("utf-8", "replace")})
    return parts


def _parse_request(rec: dict, content_type: str, body: bytes) -> tuple[dict, str | None]:
    """Fill rec (prompt, model, json, parts, refs, mask) from the body.  Returns the request's
    own parameters and an error message if the request is unusable."""
    if rec["dialect"] == "openai" and content_type.lower().startswith("multipart/form-data"):
        try:
            parts = _multipart(content_type, body)
        except ValueError as e:
            return {}, str(e)
        rec["parts"] = parts
        fields = {p["name"]: p["value"] for p in parts if "value" in p}
        for p in parts:
            if p["name"] in ("image[]", "image"):
                rec["refs"].append(p["data"])
                rec["ref_types"].append(p["content_type"])
            elif p["name"] == "mask":
                rec["mask"] = p["data"]
        rec["model"], rec["prompt"] = fields.get("model"), fields.get("prompt")
        return fields, None if rec["prompt"] is not None else "Missing required parameter: 'prompt'."

    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return {}, "We could not parse the JSON body of your request."
    rec["json"] = obj
    if not isinstance(obj, dict):
        return {}, "We could not parse the JSON body of your request."
    if rec["dialect"] == "openai":
        rec["model"] = obj.get("model")
        prompt = obj.get("prompt")
        rec["prompt"] = prompt if isinstance(prompt, str) else None
        return obj, None if rec["prompt"] is not None else "Missing required parameter: 'prompt'."

    texts = []
    try:
        parts = obj["contents"][0]["parts"]
    except (KeyError, IndexError, TypeError):
        parts = []
    for part in parts if isinstance(parts, list) else []:
        if not isinstance(part, dict):
            continue
        if isinstance(part.get("text"), str):
            texts.append(part["text"])
        inline = part.get("inlineData", part.get("inline_data"))
        if isinstance(inline, dict):
            try:
                rec["refs"].append(base64.b64decode(inline.get("data") or ""))
            except (binascii.Error, ValueError):
                rec["refs"].append(b"")
            rec["ref_types"].append(inline.get("mimeType", inline.get("mime_type")))
    rec["prompt"] = "\n".join(texts) if texts else None
    config = obj.get("generationConfig")
    image_config = config.get("imageConfig") if isinstance(config, dict) else None
    params = dict(image_config) if isinstance(image_config, dict) else {}
    return params, None if texts else "* GenerateContentRequest.contents: contents is not specified"


# ---------------------------------------------------------------------------------------------


class FakeUpstream:
    """The fake gateway.  All mutable state is guarded by self.lock (re-entrant, so a script's
    match callable may call calls()/billed())."""

    def __init__(self, api_keys: set[str] | list[str] | tuple[str, ...] = ("sk-test",), *,
                 verbose: bool = False) -> None:
        self.lock = threading.RLock()
        self.api_keys = set(api_keys)
        self.default: dict | str = {"kind": "b64"}
        self.requests: list[dict] = []
        self.downloads: list[dict] = []
        self.inflight = 0
        self.max_inflight = 0
        self.verbose = verbose
        # What a billed generation costs, by model (fnmatch pattern, first match wins): a number
        # per image, or {"input": RATE, "output": RATE} per million tokens of the usage the fake
        # answered with.  Each billed request records its "price"; billed_total() sums them.
        self.prices: list[tuple[str, Any]] = []
        self.port = 0
        self.base_url = ""
        self._scripts: list[_Script] = []
        self._directive_uses: dict[str, int] = {}
        self._results: dict[str, dict] = {}
        self._conns: set[socket.socket] = set()
        self._rid_seq = 0
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --

    def start(self, port: int = 0) -> "FakeUpstream":
        self._stopping.clear()
        self._server = _Server(("127.0.0.1", port), _Handler)
        self._server.fake = self            # type: ignore[attr-defined]
        self.port = self._server.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(_TICK,),
                                        name="fake-upstream", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and drop every open connection (waiting handlers give up at once)."""
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        with self.lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread:
            self._thread.join()
        self._server = None

    def __enter__(self) -> "FakeUpstream":
        return self.start() if self._server is None else self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- test API --

    def script(self, match: str | Callable[[dict], bool], steps: list | dict | str) -> None:
        """Requests whose prompt contains match (or for which match(record) is true) get steps in
        order, the last one repeating.  The first matching script wins; scripting the same string
        again replaces its earlier script."""
        steps = [steps] if isinstance(steps, (dict, str)) else list(steps)
        if not steps:
            raise ValueError("a script needs at least one step")
        with self.lock:
            if isinstance(match, str):
                self._scripts = [s for s in self._scripts if s.match != match]
            self._scripts.append(_Script(match, [_as_step(s) for s in steps]))

    def snapshot(self) -> list[dict]:
        with self.lock:
            return [dict(r) for r in self.requests]

    def _received(self) -> int:
        with self.lock:
            return len(self.requests)

    def calls(self, prompt: str) -> int:
        """Generation requests received with exactly this prompt (401s included)."""
        with self.lock:
            return sum(1 for r in self.requests if r["prompt"] == prompt)

    def billed(self, prompt: str) -> int:
        with self.lock:
            return sum(1 for r in self.requests if r["prompt"] == prompt and r["billed"])

    def billed_total(self) -> float:
        """What every billed request so far cost, by self.prices (unpriced ones count 0)."""
        with self.lock:
            return sum(r.get("price") or 0 for r in self.requests if r["billed"])

    def _price(self, rec: dict, count: int, reply: Reply) -> float | None:
        for pattern, price in self.prices:
            if not fnmatch.fnmatchcase(rec["model"] or "", pattern):
                continue
            if not isinstance(price, dict):
                return float(price) * count
            try:
                usage = json.loads(reply.body)
                usage = usage.get("usage") or usage.get("usageMetadata") or {}
            except (ValueError, AttributeError):
                usage = {}
            tokens_in = usage.get("input_tokens", usage.get("promptTokenCount", 0))
            tokens_out = usage.get("output_tokens", usage.get("candidatesTokenCount", 0))
            tokens_out += usage.get("thoughtsTokenCount", 0)     # Google bills thinking as output
            return (tokens_in * price.get("input", 0) + tokens_out * price.get("output", 0)) / 1e6
        return None

    def wait_for(self, pred: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = pred()
            if value:
                return value
            if time.monotonic() >= deadline:
                raise AssertionError(f"fake upstream: timed out after {timeout:g} s waiting for "
                                     f"{what or getattr(pred, '__name__', 'condition')}; "
                                     f"{len(self.requests)} request(s) so far")
            time.sleep(0.02)

    # -- internals used by the handler --

    def _update(self, rec: dict, **fields: Any) -> None:
        with self.lock:
            rec.update(fields)

    def _track(self, conn: socket.socket, alive: bool) -> None:
        with self.lock:
            (self._conns.add if alive else self._conns.discard)(conn)

    def _new_rid(self) -> str:
        # The new-api shape: a timestamp, digits, then random letters ("20260715212753274771513fAg1k3QO").
        with self.lock:
            self._rid_seq += 1
            seq = self._rid_seq
        now = time.time()
        alnum = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
        tail = "".join(secrets.choice(alnum) for _ in range(8))
        return f"{time.strftime('%Y%m%d%H%M%S', time.localtime(now))}" \
               f"{int(now * 1e6) % 1000000:06d}{seq % 1000:03d}{tail}"

    def _publish(self, data: bytes, mime: str, ext: str, ttl: float, fails: int,
                 hangs: int = 0) -> str:
        token = secrets.token_hex(8)
        with self.lock:
            self._results[token] = {"data": data, "mime": mime, "fails": fails, "hangs": hangs,
                                    "expires": time.monotonic() + ttl}
        return f"{self.base_url}/results/{token}/sample.{ext}?signature=x"

    def _fetch(self, token: str, path: str, headers: Any) -> tuple[bytes, str] | bool | str | None:
        """A result's (bytes, MIME type); False for a scripted download failure; "hang" for a
        download that never answers; None once gone."""
        with self.lock:
            res = self._results.get(token)
            if res is not None and time.monotonic() >= res["expires"]:
                del self._results[token]
                res = None
            if res is None:
                found, status = None, 404
            elif res.get("hangs", 0) > 0:
                res["hangs"] -= 1
                found, status = "hang", 0
            elif res["fails"] > 0:
                res["fails"] -= 1
                found, status = False, 503
            else:
                found, status = (res["data"], res["mime"]), 200
            self.downloads.append({"token": token, "path": path, "status": status,
                                   "headers": {k.lower(): v for k, v in headers.items()},
                                   "time": time.monotonic()})
        return found

    def _choose_step(self, rec: dict) -> dict:
        with self.lock:
            for s in self._scripts:
                if s.matches(rec):
                    step = s.steps[min(s.used, len(s.steps) - 1)]
                    s.used += 1
                    return dict(step)
            steps = parse_directive(rec["prompt"])
            if steps:
                used = self._directive_uses.get(rec["prompt"], 0)
                self._directive_uses[rec["prompt"]] = used + 1
                return steps[min(used, len(steps) - 1)]
            return _as_step(self.default)

    def _generate(self, h: _Handler, dialect: str, path: str, body: bytes, model: str | None) -> None:
        rid = self._new_rid()
        rec: dict = {"id": rid, "path": path, "dialect": dialect, "model": model, "prompt": None,
                     "headers": {k.lower(): v for k, v in h.headers.items()},
                     "json": None, "parts": [], "refs": [], "ref_types": [], "mask": None,
                     "started": time.monotonic(), "finished": None, "status": None,
                     "behaviour": None, "client_gone": False, "billed": False,
                     "price": 0}
        params, problem = _parse_request(rec, h.headers.get("Content-Type", ""), body)
        if dialect == "gemini":
            rec["model"] = model
        with self.lock:
            self.requests.append(rec)
            self.inflight += 1
            self.max_inflight = max(self.max_inflight, self.inflight)
            keys = set(self.api_keys)
        auth = h.headers.get("Authorization", "")
        bearer = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        try:
            if bearer not in keys:
                reply = _error(401, {"message": f"无效的令牌 (request id: {rid})",
                                     "type": "new_api_error", "param": "", "code": ""})
                self._update(rec, behaviour="auth", status=reply.status)
                h._send(reply, rid)
            elif problem:
                reply = (_error(400, {"code": 400, "message": problem, "status": "INVALID_ARGUMENT"})
                         if dialect == "gemini" else
                         _error(400, {"message": f"{problem} (request id: {rid})",
                                      "type": "invalid_request_error", "param": None, "code": None}))
                self._update(rec, behaviour="bad_request", status=reply.status)
                h._send(reply, rid)
            else:
                self._run_step(h, rec, params, bearer)
        except _Gone:
            self._update(rec, client_gone=True)
            h.close_connection = True
        finally:
            with self.lock:
                self.inflight -= 1
                rec["finished"] = time.monotonic()
            if self.verbose:
                print(f"fake upstream: {rid} {dialect} {rec['model']} {rec['behaviour']} -> "
                      f"{rec['status']}{' (client gone)' if rec['client_gone'] else ''}"
                      f"{' billed' if rec['billed'] else ''} prompt={(rec['prompt'] or '')[:60]!r}",
                      file=sys.stderr, flush=True)

    def _run_step(self, h: _Handler, rec: dict, params: dict, bearer: str) -> None:
        step = self._choose_step(rec)
        kind = step["kind"]
        self._update(rec, behaviour=kind)
        body_kind = step.get("body", "b64") if kind in _TRANSPORT_KINDS else kind
        # "Generating": nothing at all goes out, not even headers.  A client that hangs up
        # meanwhile is noticed at once; the real upstream would finish and bill anyway, so the
        # request is booked as billed right then instead of after the full delay.
        gone = False
        try:
            h._wait(float(step.get("delay", 0)))
            # A barrier: no answer before the fake has received this many generation requests
            # in all, so every call of a batch reached it before any was answered.
            while self._received() < int(step.get("after_requests", 0)):
                h._wait(_TICK)
            if kind == "hang":
                h._wait(float("inf"))
        except _Gone:
            gone = True
        if gone and (kind == "hang" or self._stopping.is_set()):
            raise _Gone                        # the generation never finished: nothing billed
        try:
            reply = _build(_Ctx(self, rec, step, rec["id"], params, bearer), body_kind)
        except (ValueError, TypeError) as e:   # a bad script: tell the test, loudly
            print(f"fake upstream: {e}", file=sys.stderr, flush=True)
            reply = _error(500, {"message": f"fake upstream: {e}", "type": "fake_error",
                                 "param": None, "code": None})
        # The generation is over: billed even if the client never reads the answer.
        ctx_count = _Ctx(self, rec, step, rec["id"], params, bearer).count()
        billed = _billed(reply.status)
        self._update(rec, billed=billed, price=self._price(rec, ctx_count, reply) if billed else 0)
        if gone:
            raise _Gone
        self._update(rec, status=reply.status)
        h._send(reply, rec["id"], step)


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Fake APIYI image upstream on 127.0.0.1.")
    ap.add_argument("--port", type=int, default=0, help="port to listen on (0: any free port)")
    ap.add_argument("--key", action="append", help="accepted API key (repeatable; default sk-demo)")
    ap.add_argument("--port-file", help="write the port number to this file once listening")
    ap.add_argument("--verbose", "-v", action="store_true", help="log each request to stderr")
    args = ap.parse_args(argv)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    fake = FakeUpstream(args.key or ["sk-demo"], verbose=args.verbose).start(args.port)
    if args.port_file:
        tmp = f"{args.port_file}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(f"{fake.port}\n")
        os.replace(tmp, args.port_file)        # readers never see a half-written file
    print(f"fake upstream listening on {fake.base_url}", flush=True)
    stop.wait()                                # the signal handlers run while it waits
    fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
