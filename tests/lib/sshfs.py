"""sshfs.py - one directory seen through two independent sshfs mounts, a stand-in for NFS.

Two daemons that each watch their own mount of a shared spool cannot see each other's writes
through inotify, exactly as on NFS: inotify only reports changes made through the same kernel
mount. This module gives a test that situation on one machine, with nothing but loopback:

    from sshfs import TwoMounts, SshfsUnavailable
    with TwoMounts(base_dir) as m:      # base_dir: a scratch directory the test owns
        m.export      # base_dir/export: the real directory, the "file server's" disk
        m.mount_a     # base_dir/a: sshfs mount of export
        m.mount_b     # base_dir/b: a second, independent sshfs mount of export

A private sshd (own config, host key, client key, pid file, all in base_dir) listens on
127.0.0.1 and a free port; the system's sshd service is never started. Each mount is an
`sshfs -f` child of this process, with the caches turned off (attributes and directory entries
are fetched from the server every time, like NFS with actimeo=0) so a test does not wait on
cache expiry. Rename goes through OpenSSH's posix-rename extension, so it is atomic and replaces
an existing target without `workaround=rename` (which would make it non-atomic).

ensure_installed() checks that openssh-server, openssh-client, sshfs and fuse3 are there (it never
installs them: contrib/install-deps.sh does); SshfsUnavailable says what is missing, and the test
fails with that message. Cleanup never raises and leaves no mount behind.

Checked by the self-check on Debian 12 (sshfs 3.7.3, FUSE 3.14): the mounts come up in about
1 s. A write via one mount shows up via
the other at once. rename() is atomic, and a second rename of the same source via the other
mount fails with ENOENT. inotify on one mount never sees writes made via the other mount or
straight on the export.
Surprises worth knowing (SFTP v3 limits):
  * Times go over the wire as whole seconds: every mtime read via a mount is a whole number,
    and utime() with a fraction is truncated. os.utime(p, None) works and uses the clock of
    the sshfs client. sshfs treats an explicit time of 0 (the epoch) as "now".
  * Unlinking a file that is still open via the same mount renames it to .fuse_hidden* on the
    server; it goes away a few ms after the last close, so a scan of the directory made in
    between sees it. A file unlinked via the other mount can still be read through a handle
    already open.
  * sshd and the sshfs processes get PR_SET_PDEATHSIG, so they end when the thread that
    started them ends: use TwoMounts from the thread that runs the test.

Run `python3 sshfs.py` for a self-check of the properties the tests rely on.
"""
import atexit
import ctypes
import errno
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PACKAGES = ["openssh-server", "openssh-client", "sshfs", "fuse3"]
SETUP_TIMEOUT = 30.0

_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1


def _die_with_parent():
    """preexec_fn: the child gets SIGTERM when the thread that started it dies, so a killed test
    process does not leave sshd or a mount behind (sshfs unmounts itself on SIGTERM)."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class SshfsUnavailable(Exception):
    """sshfs cannot be set up on this machine; the message says why."""


def _which(name):
    path = os.environ.get("PATH", "") + ":" + SBIN_PATH
    return shutil.which(name, path=path)


def _env():
    env = dict(os.environ)
    env["PATH"] = env.get("PATH", "") + ":" + SBIN_PATH
    env["LC_ALL"] = "C"
    return env


def _run(argv, timeout=60, env=None, check=True):
    """Runs argv with no stdin; returns CompletedProcess. Raises SshfsUnavailable on failure."""
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=timeout, env=env or _env(),
                              text=True, errors="replace")
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SshfsUnavailable(f"{' '.join(argv)}: {exc}") from exc
    if check and proc.returncode != 0:
        tail = proc.stdout.strip()[-2000:]
        raise SshfsUnavailable(f"{' '.join(argv)} exited {proc.returncode}: {tail}")
    return proc


def _missing_tools():
    return [t for t in ("sshd", "sshfs", "ssh-keygen", "ssh") if not _which(t)] + \
        ([] if _which("fusermount3") or _which("fusermount") else ["fusermount3"])


def ensure_installed():
    """Raises SshfsUnavailable, saying what to install, when a tool is missing: tests never
    install packages (contrib/install-deps.sh does, and `make test` runs it first)."""
    missing = _missing_tools()
    if missing:
        raise SshfsUnavailable(f"missing {', '.join(missing)}: run contrib/install-deps.sh "
                               f"(it installs {' '.join(PACKAGES)})")
    if not os.path.exists("/dev/fuse"):
        raise SshfsUnavailable("/dev/fuse is missing (FUSE not available in this container)")
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        raise SshfsUnavailable("/dev/fuse is not readable and writable by this user")


_sshfs_opts = None


def _sshfs_cache_opts():
    """The cache-off options this sshfs accepts, learned once from `sshfs -h`."""
    global _sshfs_opts
    if _sshfs_opts is None:
        helptext = _run([_which("sshfs"), "-h"], timeout=20, check=False).stdout
        opts = []
        if "dir_cache=" in helptext:
            opts.append("dir_cache=no")         # sshfs 3.x name
        elif "cache=" in helptext:
            opts.append("cache=no")             # sshfs 2.x name
        # FUSE high-level options: no kernel caching of attributes, names or missing names.
        opts += ["attr_timeout=0", "entry_timeout=0", "negative_timeout=0"]
        _sshfs_opts = opts
    return list(_sshfs_opts)


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ssh_banner(port):
    """True when something on 127.0.0.1:port answers with an SSH banner. Sends a banner back so
    that sshd does not log a kex_exchange_identification error for the probe."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
            s.settimeout(1.0)
            ok = s.recv(64).startswith(b"SSH-")
            if ok:
                s.sendall(b"SSH-2.0-imgspool-probe\r\n")
            return ok
    except OSError:
        return False


def _read(path, limit=4000):
    try:
        with open(path, "r", errors="replace") as f:
            return f.read()[-limit:].strip()
    except OSError:
        return ""


class TwoMounts:
    """base_dir/export served by a private sshd and mounted twice, at base_dir/a and base_dir/b."""

    def __init__(self, base_dir, timeout=SETUP_TIMEOUT):
        self.base_dir = os.path.abspath(base_dir)
        self.export = os.path.join(self.base_dir, "export")
        self.mount_a = os.path.join(self.base_dir, "a")
        self.mount_b = os.path.join(self.base_dir, "b")
        self.timeout = timeout
        self.port = None
        self.sshd = None
        self.sshfs_procs = []       # (mountpoint, Popen)
        self._closed = False
        self._ssh_dir = os.path.join(self.base_dir, "ssh")
        self.client_key = os.path.join(self._ssh_dir, "client_ed25519")
        self.sshd_log = os.path.join(self._ssh_dir, "sshd.log")
        self.setup_seconds = None

    # -- lifecycle ----------------------------------------------------------------------------

    def __enter__(self):
        self.open()
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def open(self):
        started = time.monotonic()
        ensure_installed()
        atexit.register(self.close)
        try:
            for d in (self.export, self.mount_a, self.mount_b, self._ssh_dir):
                os.makedirs(d, exist_ok=True)
            os.chmod(self._ssh_dir, 0o700)
            self._make_keys()
            self._start_sshd()
            self._mount(self.mount_a, "a")
            self._mount(self.mount_b, "b")
        except BaseException:
            self.close()
            raise
        self.setup_seconds = time.monotonic() - started
        return self

    def close(self):
        """Unmounts both mounts and stops sshd. Never raises; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        for mountpoint, proc in reversed(self.sshfs_procs):
            try:
                self._unmount(mountpoint, proc)
            except BaseException:   # noqa: BLE001 - cleanup must not raise
                pass
        self.sshfs_procs = []
        try:
            self._stop(self.sshd)
        except BaseException:   # noqa: BLE001
            pass
        self.sshd = None
        try:
            atexit.unregister(self.close)
        except Exception:   # noqa: BLE001
            pass

    # -- pieces ------------------------------------------------------------------------------

    def _make_keys(self):
        keygen = _which("ssh-keygen")
        self.host_key = os.path.join(self._ssh_dir, "host_ed25519")
        for key in (self.host_key, self.client_key):
            if not os.path.exists(key):
                _run([keygen, "-q", "-t", "ed25519", "-N", "", "-C", "imgspool-test",
                      "-f", key], timeout=20)
        self.authorized_keys = os.path.join(self._ssh_dir, "authorized_keys")
        shutil.copyfile(self.client_key + ".pub", self.authorized_keys)
        os.chmod(self.authorized_keys, 0o600)

    def _write_sshd_config(self, port):
        self.sshd_config = os.path.join(self._ssh_dir, "sshd_config")
        with open(self.sshd_config, "w") as f:
            f.write("\n".join([
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {self.host_key}",
                f"PidFile {os.path.join(self._ssh_dir, 'sshd.pid')}",
                f"AuthorizedKeysFile {self.authorized_keys}",
                "PermitRootLogin prohibit-password",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "StrictModes no",
                "UseDNS no",
                "X11Forwarding no",
                "PrintMotd no",
                "Subsystem sftp internal-sftp",
                "LogLevel ERROR",
                "",
            ]))

    def _start_sshd(self):
        sshd = _which("sshd")
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)   # privilege separation dir
        last_error = ""
        for _attempt in range(3):   # a port picked by bind(0) can be taken before sshd binds it
            port = _free_port()
            self._write_sshd_config(port)
            # sshd must be started by absolute path (it re-executes itself).
            with open(self.sshd_log, "ab") as log:
                self.sshd = subprocess.Popen(
                    [os.path.abspath(sshd), "-D", "-e", "-f", self.sshd_config],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=_env(),
                    start_new_session=True, preexec_fn=_die_with_parent)
            deadline = time.monotonic() + self.timeout
            while time.monotonic() < deadline:
                if self.sshd.poll() is not None:
                    break
                if _ssh_banner(port):
                    self.port = port
                    return
                time.sleep(0.02)
            last_error = _read(self.sshd_log)
            self._stop(self.sshd)
            self.sshd = None
        raise SshfsUnavailable(f"private sshd did not come up: {last_error}")

    def _sshfs_argv(self, mountpoint):
        ssh_opts = ["IdentityFile=" + self.client_key, "IdentitiesOnly=yes",
                    "StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null",
                    "GlobalKnownHostsFile=/dev/null", "BatchMode=yes", "LogLevel=ERROR",
                    "ServerAliveInterval=5", "ServerAliveCountMax=3", "ConnectTimeout=10"]
        # reconnect: survive a dropped ssh connection. Not auto_unmount: its fusermount3
        # watchdog outlives sshfs and, where PID 1 does not reap, stays as a zombie per mount;
        # sshfs unmounts itself on SIGTERM, which PR_SET_PDEATHSIG sends if this process dies.
        opts = ssh_opts + _sshfs_cache_opts() + ["reconnect"]
        return [_which("sshfs"), "-f", "-p", str(self.port), "-o", ",".join(opts),
                f"root@127.0.0.1:{self.export}", mountpoint]

    def _mount(self, mountpoint, name):
        if os.path.ismount(mountpoint):
            raise SshfsUnavailable(f"{mountpoint} is already a mount point")
        log_path = os.path.join(self._ssh_dir, f"sshfs-{name}.log")
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(self._sshfs_argv(mountpoint), stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=log, env=_env(), start_new_session=True,
                                    preexec_fn=_die_with_parent)
        self.sshfs_procs.append((mountpoint, proc))
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if os.path.ismount(mountpoint):
                return
            if proc.poll() is not None:
                raise SshfsUnavailable(f"sshfs for {mountpoint} exited {proc.returncode}: "
                                       f"{_read(log_path)} / sshd: {_read(self.sshd_log)}")
            time.sleep(0.02)
        raise SshfsUnavailable(f"{mountpoint} not mounted after {self.timeout}s: "
                               f"{_read(log_path)}")

    @staticmethod
    def _quiet(argv, timeout=10):
        try:
            return subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, timeout=timeout,
                                  env=_env()).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    @staticmethod
    def _is_mounted(mountpoint):
        """Looks in /proc/self/mounts rather than stat(), which can hang on a dead FUSE mount."""
        want = mountpoint.replace("\\", "\\134").replace(" ", "\\040")
        try:
            with open("/proc/self/mounts") as f:
                return any(line.split()[1] == want for line in f if len(line.split()) > 1)
        except OSError:
            return False

    def _unmount(self, mountpoint, proc):
        fusermount = _which("fusermount3") or _which("fusermount")
        if self._is_mounted(mountpoint) and fusermount:
            self._quiet([fusermount, "-u", mountpoint])
            if self._is_mounted(mountpoint):
                self._quiet([fusermount, "-u", "-z", mountpoint])
        if self._is_mounted(mountpoint):
            self._quiet(["umount", "-l", mountpoint])
        self._stop(proc, grace=5.0)
        if self._is_mounted(mountpoint):      # sshfs killed before the kernel let go
            self._quiet(["umount", "-l", mountpoint])

    @staticmethod
    def _stop(proc, grace=5.0):
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)   # own session: reaches sshd's/sshfs's children
        except OSError:
            proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                proc.kill()
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass


# -- self-check ----------------------------------------------------------------------------------

def _wait(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    start = time.monotonic()
    while True:
        if pred():
            return time.monotonic() - start
        if time.monotonic() > deadline:
            return None
        time.sleep(0.01)


class _Inotify:
    """Minimal ctypes inotify: did anything happen in a directory within a timeout?"""

    IN_MODIFY, IN_CLOSE_WRITE, IN_MOVED_TO, IN_CREATE = 0x2, 0x8, 0x80, 0x100

    def __init__(self, path):
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        self.fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        mask = self.IN_MODIFY | self.IN_CLOSE_WRITE | self.IN_MOVED_TO | self.IN_CREATE
        if libc.inotify_add_watch(self.fd, os.fsencode(path), mask) < 0:
            err = ctypes.get_errno()
            os.close(self.fd)
            raise OSError(err, "inotify_add_watch")

    def saw_event(self, timeout):
        import select
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if ready:
            try:
                os.read(self.fd, 65536)
            except BlockingIOError:
                return False
            return True
        return False

    def close(self):
        os.close(self.fd)


def _self_check():
    results = []

    def report(name, ok, detail=""):
        results.append(ok)
        print(f"{'ok' if ok else 'FAIL'}: {name}{' - ' + detail if detail else ''}", flush=True)

    base = tempfile.mkdtemp(prefix="imgspool-sshfs-")
    try:
        t0 = time.monotonic()
        ensure_installed()
        print(f"info: ensure_installed took {time.monotonic() - t0:.2f}s")
        m = TwoMounts(base)
        try:
            m.open()
            report("setup", True, f"{m.setup_seconds:.2f}s (port {m.port}, sshfs -o "
                   f"{','.join(_sshfs_cache_opts() + ['reconnect'])})")
            a, b, x = m.mount_a, m.mount_b, m.export

            # 1. write through a, see through b and on the server's disk
            with open(os.path.join(a, "hello"), "w") as f:
                f.write("from a\n")
            waited = _wait(lambda: os.path.exists(os.path.join(b, "hello")))
            same = waited is not None and open(os.path.join(b, "hello")).read() == "from a\n"
            report("write via a visible via b", same,
                   f"{waited * 1000:.1f}ms" if waited is not None else "never")
            report("write via a lands in export", os.path.exists(os.path.join(x, "hello")))

            # 1b. overwrite content through b, read through a (page cache not stale)
            with open(os.path.join(b, "hello"), "w") as f:
                f.write("from b, longer\n")
            got = open(os.path.join(a, "hello")).read()
            report("rewrite via b read via a", got == "from b, longer\n", repr(got))

            # 2. rename: atomic, one winner across mounts
            src_a = os.path.join(a, "claim.job")
            with open(src_a, "w") as f:
                f.write("job\n")
            _wait(lambda: os.path.exists(os.path.join(b, "claim.job")))
            os.rename(src_a, os.path.join(a, "claim.job.taken-a"))
            try:
                os.rename(os.path.join(b, "claim.job"), os.path.join(b, "claim.job.taken-b"))
                report("second rename from b fails ENOENT", False, "rename from b succeeded")
            except OSError as exc:
                report("second rename from b fails ENOENT", exc.errno == errno.ENOENT,
                       errno.errorcode.get(exc.errno, str(exc.errno)))
            report("exactly one winner", sorted(n for n in os.listdir(x) if n.startswith("claim"))
                   == ["claim.job.taken-a"], str(sorted(os.listdir(x))))

            # 2b. rename over an existing file (replace) works, without workaround=rename
            for name, text in (("r.src", "new\n"), ("r.dst", "old\n")):
                with open(os.path.join(a, name), "w") as f:
                    f.write(text)
            try:
                os.rename(os.path.join(a, "r.src"), os.path.join(a, "r.dst"))
                got = open(os.path.join(b, "r.dst")).read()
                report("rename over existing target", got == "new\n"
                       and not os.path.exists(os.path.join(b, "r.src")), repr(got))
            except OSError as exc:
                report("rename over existing target", False, str(exc))

            # 2c. link(2) (used for no-replace claims) - report only
            try:
                os.link(os.path.join(a, "r.dst"), os.path.join(a, "r.link"))
                print("info: link() works over sshfs")
                os.unlink(os.path.join(a, "r.link"))
            except OSError as exc:
                print(f"info: link() over sshfs fails: {errno.errorcode.get(exc.errno)}")

            # 3. utime with explicit times, seen via b and on disk
            p_a, p_b = os.path.join(a, "hello"), os.path.join(b, "hello")
            os.utime(p_a, (1_000_000_000, 1_000_000_000))
            mt_b = os.stat(p_b).st_mtime
            mt_x = os.stat(os.path.join(x, "hello")).st_mtime
            report("utime(explicit) via a seen via b", mt_b == 1_000_000_000 == mt_x,
                   f"b={mt_b} export={mt_x}")
            before = time.time()
            os.utime(p_a, None)
            after = time.time()
            mt_b = os.stat(p_b).st_mtime
            report("utime(None) via a sets ~now", before - 2 <= mt_b <= after + 2,
                   f"mtime={mt_b:.3f} now={after:.3f}")
            os.utime(p_a, (1_000_000_000.75, 1_000_000_000.75))
            print(f"info: utime(1e9+0.75) via a reads back as {os.stat(p_b).st_mtime} via b, "
                  f"{os.stat(os.path.join(x, 'hello')).st_mtime} on disk")
            os.utime(p_a, (0, 0))
            print(f"info: utime(0, 0) via a reads back as {os.stat(p_b).st_mtime} via b")
            with open(os.path.join(x, "ns"), "w"):
                pass
            print(f"info: a file made on disk: mtime {os.stat(os.path.join(x, 'ns')).st_mtime} "
                  f"on disk, {os.stat(os.path.join(a, 'ns')).st_mtime} via a")

            # 4. unlink of a file still open elsewhere
            p = os.path.join(a, "open-unlink")
            with open(p, "w") as f:
                f.write("x\n")
            fh = open(p)
            os.unlink(p)
            hidden = [n for n in os.listdir(x) if n.startswith(".fuse_hidden")]
            print(f"info: unlink of a file open via the same mount leaves {hidden}")
            try:
                content = fh.read()
                print(f"info: read of unlinked-open file: {content!r}")
            except OSError as exc:
                print(f"info: read of unlinked-open file fails: {exc}")
            fh.close()
            gone = _wait(lambda: not [n for n in os.listdir(x) if n.startswith(".fuse_hidden")])
            report(".fuse_hidden removed after close", gone is not None,
                   f"after {gone * 1000:.0f}ms" if gone is not None else str(os.listdir(x)))

            # 5. inotify: a watch on a sees a's writes, a watch on b does not see a's writes
            try:
                wa, wb = _Inotify(a), _Inotify(b)
                with open(os.path.join(a, "notify-me"), "w") as f:
                    f.write("x\n")
                saw_a = wa.saw_event(1.0)
                saw_b = wb.saw_event(1.0)
                report("inotify on a sees write via a (control)", saw_a)
                report("inotify on b misses write via a (NFS-like)", not saw_b)
                with open(os.path.join(x, "notify-server"), "w") as f:
                    f.write("x\n")
                report("inotify on a misses write on server disk", not wa.saw_event(0.5))
                wa.close()
                wb.close()
            except OSError as exc:
                print(f"skip: inotify check: {exc}")

        finally:
            t_close = time.monotonic()
            m.close()
            print(f"info: close took {time.monotonic() - t_close:.2f}s, total "
                  f"{time.monotonic() - t0:.2f}s")
        report("no mounts left", not any(TwoMounts._is_mounted(p) for p in (m.mount_a, m.mount_b)))
        report("sshd stopped", not _ssh_banner(m.port))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    passed = sum(results)
    print(f"{passed} passed, {len(results) - passed} failed")
    return 0 if passed == len(results) else 1


if __name__ == "__main__":
    raise SystemExit(_self_check())
