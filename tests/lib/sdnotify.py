"""What systemd would hear of a daemon: the sd_notify(3) protocol on a datagram socket the test
owns (no systemd as PID 1 here)."""
import os
import socket
import threading
import time

from harness import SCRATCH


class NotifyListener:
    """What systemd would hear: a datagram socket of our own named by NOTIFY_SOCKET."""

    def __init__(self):
        self.path = os.path.join(SCRATCH, f"notify-{os.getpid()}-{time.monotonic_ns()}.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.messages = []          # (monotonic time, {key: value})
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.done.is_set():
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            fields = dict(line.split("=", 1) for line in data.decode().split("\n") if "=" in line)
            with self.lock:
                self.messages.append((time.monotonic(), fields))

    def env(self, watchdog_usec=None):
        env = {"NOTIFY_SOCKET": self.path}
        if watchdog_usec:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
        return env

    def seen(self, key, value=None):
        with self.lock:
            return [(t, m) for t, m in self.messages if key in m and (value is None or m[key] == value)]

    def first(self, key, value=None):
        got = self.seen(key, value)
        return got[0][0] if got else None

    def close(self):
        self.done.set()
        self.thread.join()
        self.sock.close()
        os.unlink(self.path)

    def stopping(self):
        """The STOPPING=1 messages so far: [(monotonic time, EXTEND_TIMEOUT_USEC in s)]."""
        return [(t, int(m["EXTEND_TIMEOUT_USEC"]) / 1e6) for t, m in self.seen("STOPPING", "1")
                if "EXTEND_TIMEOUT_USEC" in m]

    def stop_timeout_at(self, timeout_stop_sec, stop_at):
        """When systemd would SIGKILL, had its stop begun at stop_at with TimeoutStopSec=
        timeout_stop_sec: EXTEND_TIMEOUT_USEC only ever puts that off (man sd_notify)."""
        return max([stop_at + timeout_stop_sec] + [t + ext for t, ext in self.stopping()])
