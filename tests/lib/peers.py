"""peers.py - real servers we did not write, started by a test on loopback: an S3-compatible
store (s3rver, each request's SigV4 signature checked by the AWS SDK's signer) and a webhook
receiver (each delivery verified by the standardwebhooks library).

They live in tests/node, set up by contrib/install-deps.sh before any test runs; this module only starts them.
"""
import base64
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
NODE_DIR = os.path.join(os.path.dirname(HERE), "node")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


class NodePeer:
    """A server from tests/node on 127.0.0.1:port, printing "listening" when ready and one JSON
    line per request; its scratch directory outlives restarts (stop, then start again)."""

    script = None

    def __init__(self):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="imgspool-peer-")
        self.log_path = os.path.join(self.dir, "requests.log")
        self.proc = None

    def args(self):
        return []

    def start(self):
        offset = self._size()
        self.logf = open(self.log_path, "a")
        self.proc = subprocess.Popen(
            ["node", os.path.join(NODE_DIR, self.script), str(self.port)] + self.args(),
            stdin=subprocess.DEVNULL, stdout=self.logf, stderr=subprocess.STDOUT, cwd=NODE_DIR)
        _wait(lambda: "listening" in self._text()[offset:] or self.proc.poll() is not None, 20,
              f"{self.script} to listen")
        assert self.proc.poll() is None, f"{self.script} exited:\n{self._text()[-2000:]}"
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.logf.close()
        self.proc = None

    def close(self, keep=False):
        self.stop()
        if not keep:
            shutil.rmtree(self.dir, ignore_errors=True)

    def _size(self):
        try:
            return os.path.getsize(self.log_path)
        except OSError:
            return 0

    def _text(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def requests(self):
        """Every request seen so far, one dict per JSON line."""
        return [json.loads(line) for line in self._text().splitlines() if line.startswith("{")]


class S3Server(NodePeer):
    """s3rver, every request's SigV4 signature checked by @smithy/signature-v4. Its requests()
    have "method", "url", "signature" ("ok" or why not), "sha256", "status", and {"holding": url}
    for a PUT held put_delay_ms before s3rver sees it."""

    script = "s3server.js"
    ACCESS_KEY = "S3RVER"
    SECRET_KEY = "S3RVER"

    def __init__(self, bucket="imgs", put_delay_ms=0):
        super().__init__()
        self.bucket = bucket
        self.data = os.path.join(self.dir, "data")
        os.makedirs(self.data)
        self.put_delay_ms = put_delay_ms

    def args(self):
        return [self.data, self.bucket, str(self.put_delay_ms)]

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.port}"

    def get(self, key):
        """The object's bytes, or None if the bucket does not have it."""
        try:
            with urllib.request.urlopen(f"{self.endpoint}/{self.bucket}/{key}", timeout=10) as r:
                return r.read()
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise


class WebhookReceiver(NodePeer):
    """A webhook endpoint verifying each delivery with the standardwebhooks library. Its
    requests() have "path", "id", "timestamp", "verified", "error", "event", "status"."""

    script = "webhook_receiver.js"

    def __init__(self):
        super().__init__()
        self.secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()

    def args(self):
        return [self.secret]

    def url(self, path="/ok"):
        return f"http://127.0.0.1:{self.port}{path}"

    def set_gone(self, on):
        """Whether /switch... answers 410 Gone from now on (else 204)."""
        with urllib.request.urlopen(self.url("/_switch/on" if on else "/_switch/off"),
                                    timeout=10) as r:
            assert r.read() == (b"on" if on else b"off")
