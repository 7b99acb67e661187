#!/usr/bin/env python3
"""imgspool gallery in a real browser (Debian's chromium, headless): the pages show the
finished jobs newest first, so many a page, linked to each other and from an index; their
images render, and a hostile prompt is shown, never run."""
import hashlib
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import zlib

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import IMGSPOOL, process_stopped, run_tests, wait_for  # noqa: E402

HOSTILE = ("<script>document.body.setAttribute('data-pwned','script')</script>"
           "<img src=x onerror=\"document.body.setAttribute('data-pwned','onerror')\">")


def chromium(*args):
    """Headless Chromium with a profile of its own, removed afterwards."""
    browser = shutil.which("chromium")
    assert browser, "chromium is missing: run contrib/install-deps.sh"
    profile = tempfile.mkdtemp(prefix="chromium-")
    try:
        res = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",
                              "--disable-background-networking", "--no-first-run", "--disable-sync",
                              "--disable-component-update", "--hide-scrollbars",
                              f"--user-data-dir={profile}", *args],
                             capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    return res


def decode_png(data):
    """(width, height, rows of RGB tuples) of an 8-bit RGB or RGBA PNG, standard library only."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and color in (2, 6), (depth, color)
            bpp = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw, stride, prev, rows = zlib.decompress(idat), width * bpp, bytearray(width * bpp), []
    for y in range(height):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append([tuple(line[i:i + 3]) for i in range(0, stride, bpp)])
        prev = line
    return width, height, rows


def colour_of(prompt, index=0):
    """The colour of the fake upstream's image for prompt (tests/fake/upstream.py png_for)."""
    return tuple(hashlib.sha256(f"{index}\0{prompt}".encode()).digest()[:3])


def test_gallery_in_chromium(env):
    env.fake.script(HOSTILE, [{"kind": "b64"}])
    env.fake.script("refused one", [{"kind": "400_content_policy"}])
    d = env.daemon().start()
    prompts = ["a red lighthouse", "a green field", HOSTILE]
    for i, prompt in enumerate(prompts):
        d.submit(f"g{i}", {"prompt": prompt})
        d.wait_finished(f"g{i}")
    d.submit("g-bad", {"prompt": "refused one"})
    assert d.wait_finished("g-bad") == "failed"
    out = os.path.join(d.dir, "gallery")
    res = subprocess.run([IMGSPOOL, "-d", d.spool, "gallery", "-o", out], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout == f"{out}/index.html: 4 job(s) on 1 page(s)\n", res.stdout
    assert "4 finished job(s): 3 done, 1 failed" in open(os.path.join(out, "index.html")).read()
    page = os.path.join(out, "page-1.html")
    html = open(page, encoding="utf-8").read()
    assert "<script>document" not in html and "&lt;script&gt;" in html, "the prompt was not escaped"
    # Newest first: g-bad finished last.
    order = [html.index(f">g{i}<") for i in ("-bad", "2", "1", "0")]
    assert order == sorted(order), order
    assert "content_refused" in html

    dom = chromium("--dump-dom", "file://" + page)
    assert dom.returncode == 0 and "<main>" in dom.stdout, dom.stderr[-2000:]
    body = re.search(r"<body[^>]*>", dom.stdout).group(0)
    assert "data-pwned" not in body, f"a script in a prompt ran: {body}"
    assert "<img src=\"x\"" not in dom.stdout, "a prompt became an element"
    assert "&lt;script&gt;document.body" in dom.stdout, "the hostile prompt is not shown as text"

    shot = os.path.join(d.dir, "shot.png")
    res = chromium("--window-size=1400,1000", f"--screenshot={shot}", "file://" + page)
    assert res.returncode == 0 and os.path.exists(shot), res.stderr[-2000:]
    width, height, rows = decode_png(open(shot, "rb").read())
    counts = {}
    for row in rows:
        for px in row:
            counts[px] = counts.get(px, 0) + 1
    for prompt in prompts:
        # Each 8x8 image is drawn 180x180: a block of its one colour, unless it did not load.
        assert counts.get(colour_of(prompt), 0) > 5000, f"the image of {prompt!r} did not render"


def dom_of(page):
    dom = chromium("--dump-dom", "file://" + page)
    assert dom.returncode == 0 and "</body>" in dom.stdout, dom.stderr[-2000:]
    return dom.stdout


def test_gallery_pages_in_chromium(env):
    # At 100 000 jobs the one page was 56 MB, more than a browser can use: -n JOBS a page.
    d = env.daemon().start()
    prompts = [f"a lighthouse, take {i}" for i in range(5)]
    for i, prompt in enumerate(prompts):   # one after the other: j4 finishes last
        d.submit(f"j{i}", {"prompt": prompt})
        assert d.wait_finished(f"j{i}") == "done"
    out = os.path.join(d.dir, "www")

    def gallery(per_page):
        res = subprocess.run([IMGSPOOL, "-d", d.spool, "gallery", "-o", out, "-n", str(per_page)],
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        return res.stdout
    assert gallery(1) == f"{out}/index.html: 5 job(s) on 5 page(s)\n"
    # Fewer pages than last time: the pages past the last one go, nothing else does.
    open(os.path.join(out, "page-9.txt"), "w").close()
    assert gallery(2) == f"{out}/index.html: 5 job(s) on 3 page(s)\n"
    assert sorted(os.listdir(out)) == [".gallery.lock", "index.html", "page-1.html", "page-2.html",
                                       "page-3.html", "page-9.txt"], os.listdir(out)

    index = dom_of(os.path.join(out, "index.html"))
    assert "5 finished job(s): 5 done, 0 failed" in index, index
    rows = re.findall(r'<tr><td><a href="(page-\d\.html)">page \d</a></td><td class="n">(\d)</td>',
                      index)
    assert rows == [("page-1.html", "2"), ("page-2.html", "2"), ("page-3.html", "1")], rows
    want = {1: ["j4", "j3"], 2: ["j2", "j1"], 3: ["j0"]}
    for n, ids in want.items():
        dom = dom_of(os.path.join(out, f"page-{n}.html"))
        assert re.findall(r"<dt>id</dt><dd>(j\d)</dd>", dom) == ids, (n, dom[-3000:])
        prev = re.findall(r'<a rel="prev" href="([^"]+)"', dom)
        nxt = re.findall(r'<a rel="next" href="([^"]+)"', dom)
        # The links at the top and at the foot of the page, to pages that are there.
        assert prev == ([f"page-{n - 1}.html"] * 2 if n > 1 else []), (n, prev)
        assert nxt == ([f"page-{n + 1}.html"] * 2 if n < 3 else []), (n, nxt)
        assert all(os.path.exists(os.path.join(out, link)) for link in prev + nxt)
        assert dom.count('<a href="index.html">index</a>') == 2, n

    # The middle page shows its own two images, and only those.
    shot = os.path.join(d.dir, "shot.png")
    res = chromium("--window-size=1400,1000", f"--screenshot={shot}",
                   "file://" + os.path.join(out, "page-2.html"))
    assert res.returncode == 0 and os.path.exists(shot), res.stderr[-2000:]
    counts = {}
    for row in decode_png(open(shot, "rb").read())[2]:
        for px in row:
            counts[px] = counts.get(px, 0) + 1
    for i, prompt in enumerate(prompts):
        shown = counts.get(colour_of(prompt), 0) > 5000
        assert shown == (i in (1, 2)), f"j{i}'s image {'not ' if i in (1, 2) else ''}on page 2"


def test_gallery_writes_through_no_planted_link(env):
    # -o may name a directory others can write (a web root): the names the gallery writes
    # under, .index.html.PID.tmp and .page-1.html.PID.tmp, may be planted there as symlinks to
    # a file of the user running it. That file must stay as it was.
    d = env.daemon().start()
    d.submit("p1", {"prompt": "a page"})
    assert d.wait_finished("p1") == "done"
    out = os.path.join(d.dir, "www")
    os.makedirs(out)
    victims = [os.path.join(d.dir, f"victim{i}") for i in range(2)]
    for v in victims:
        with open(v, "w") as f:
            f.write("precious\n")
    pid = os.fork()
    if pid == 0:   # the child keeps its pid across exec: plant the links for it, then run
        try:
            for name, victim in zip(("index.html", "page-1.html"), victims):
                os.symlink(victim, os.path.join(out, f".{name}.{os.getpid()}.tmp"))
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            os.execv(IMGSPOOL, [IMGSPOOL, "-d", d.spool, "gallery", "-o", out])
        finally:
            os._exit(127)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, status
    for v in victims:
        assert open(v).read() == "precious\n", f"{v} was written through a planted link"
    html = open(os.path.join(out, "index.html"), encoding="utf-8").read()
    assert "1 finished job(s)" in html, html[-500:]
    html = open(os.path.join(out, "page-1.html"), encoding="utf-8").read()
    assert ">p1<" in html, html[-500:]
    assert sorted(os.listdir(out)) == [".gallery.lock", "index.html", "page-1.html"], os.listdir(out)


def test_a_long_prompt_is_cut_between_characters(env):
    # 599 ASCII bytes then two-byte characters: the 600-byte text and the 4000-byte title
    # would both end half-way through one.
    d = env.daemon().start()
    prompt = "a" * 599 + "\u00e9" * 2000
    html = page_of_one_job(d, "long-1", json.dumps({"prompt": prompt}))
    assert ">" + "a" * 599 + "&hellip;<" in html, html[-2000:]
    assert '"' + "a" * 599 + "\u00e9" * 1700 + "&hellip;\"" in html, html[-6000:]
    assert d.stop() == 0


def test_a_large_jobs_prompt_is_found_without_parsing_it(env):
    # The gallery parsed every job file whole for its prompt: a large one (64 MiB, nested deep)
    # took gigabytes, and one nested deeper than jansson goes had no prompt. Past 64 KiB the
    # prompt is found by a scan.
    d = env.daemon().start()
    deep = "[" * 3000 + "]" * 3000
    html = page_of_one_job(d, "deep-1", '{"prompt":"a deep prompt","metadata":{"deep":%s,"pad":"%s"}}'
                           % (deep, "x" * (70 << 10)))
    assert ">a deep prompt<" in html, html[-2000:]
    assert d.stop() == 0


def page_of_one_job(d, task_id, job_text):
    """The gallery's first page with one job done (its file job_text), decoded strictly (half a
    character raises)."""
    with open(d.path("done", task_id + ".json"), "w") as f:
        f.write(job_text)
    with open(d.path("done", task_id + ".result.json"), "w") as f:
        json.dump({"task_id": task_id, "status": "succeeded", "images": [], "attempts": []}, f)
    out = os.path.join(d.dir, "www")
    r = subprocess.run([IMGSPOOL, "-d", d.spool, "gallery", "-o", out], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    with open(os.path.join(out, "page-1.html"), "rb") as f:
        return f.read().decode("utf-8")

def wait_stopped_before_index(proc, who):
    """A run started with IMGSPOOLD_STOP_AT=gallery:pages-written stops there, the lock held."""
    def stopped():
        assert proc.poll() is None, f"{who} ended before its index"
        return process_stopped(proc.pid)
    wait_for(stopped, 20, f"{who} to stop before its index")


def test_runs_at_once_with_another_n(env):
    # Two runs on one directory, -n 1 and -n 500: the second overwrote page-1 and removed the
    # first's pages 2..4, then the first's index, written last, linked to pages that were gone.
    d = env.daemon().start()
    for i in range(4):
        with open(d.path("done", f"at-{i}.json"), "w") as f:
            json.dump({"prompt": f"at once {i}"}, f)
        with open(d.path("done", f"at-{i}.result.json"), "w") as f:
            json.dump({"task_id": f"at-{i}", "status": "succeeded", "images": [], "attempts": []}, f)
    out = os.path.join(d.dir, "www")

    def gallery(per_page, **kw):
        return subprocess.Popen([IMGSPOOL, "-d", d.spool, "gallery", "-o", out, "-n", str(per_page)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, **kw)
    # The first stops itself once its pages are written, before its index.
    first = gallery(1, env=dict(os.environ, IMGSPOOLD_STOP_AT="gallery:pages-written"))
    try:
        wait_stopped_before_index(first, "the first run")
        err_path = os.path.join(d.dir, "second.err")
        with open(err_path, "w") as err:
            second = gallery(500, stderr=err)

        def waits_or_ended():
            with open(err_path) as f:
                return second.poll() is not None or "waiting for another gallery run" in f.read()
        wait_for(waits_or_ended, 20, "the second run to wait or end")
    finally:
        first.send_signal(signal.SIGCONT)
        assert first.wait(timeout=60) == 0
    assert second.wait(timeout=60) == 0, open(err_path).read()
    # Whichever index is there links to pages that are there, each of its own run.
    index = open(os.path.join(out, "index.html"), encoding="utf-8").read()
    linked = re.findall(r'<a href="(page-\d+\.html)">', index)
    assert linked and sorted(n for n in os.listdir(out) if n.startswith("page-")) == sorted(linked), \
        (linked, os.listdir(out))
    for name in linked:
        html = open(os.path.join(out, name), encoding="utf-8").read()
        assert f"of {len(linked)}</h1>" in html, (name, html[:600])
    assert d.stop() == 0


def test_a_held_lock_is_waited_on_for_a_bounded_time(env):
    # gallery waited for DIR/.gallery.lock with no time limit: anyone who can write the output
    # directory (a web root) could hold it and block every run for ever.
    d = env.daemon().start()
    with open(d.path("done", "held-0.json"), "w") as f:
        json.dump({"prompt": "held lock"}, f)
    with open(d.path("done", "held-0.result.json"), "w") as f:
        json.dump({"task_id": "held-0", "status": "succeeded", "images": [], "attempts": []}, f)
    out = os.path.join(d.dir, "www")
    lock = os.path.join(out, ".gallery.lock")

    def gallery(*args, **kw):
        return subprocess.run([IMGSPOOL, "-d", d.spool, "gallery", "-o", out, *args],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
                              **kw)
    holder = subprocess.Popen([IMGSPOOL, "-d", d.spool, "gallery", "-o", out],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              env=dict(os.environ, IMGSPOOLD_STOP_AT="gallery:pages-written"))
    try:
        wait_stopped_before_index(holder, "the holder")
        for wait_s, waited in (("1", True), ("0", False)):
            r = gallery("-w", wait_s)
            assert r.returncode == 1, (wait_s, r.returncode, r.stderr)
            said = (f"imgspool: gallery: '{lock}' is still held by pid {holder.pid} (imgspool) "
                    f"after {wait_s} s: another gallery run (or anyone who can write '{out}') has "
                    f"it; nothing written (-w SECONDS waits longer)\n")
            assert r.stderr.endswith(said), (wait_s, r.stderr)
            assert (f"waiting for another gallery run on '{out}' (pid {holder.pid} (imgspool)) to "
                    "end (at most 1 s)\n" in r.stderr) == waited, r.stderr
        r = gallery("-w", "86401")
        assert r.returncode == 2 and "SECONDS to wait for another run: 0 to 86400" in r.stderr, r
    finally:
        holder.send_signal(signal.SIGCONT)
        assert holder.wait(timeout=60) == 0
    r = gallery("-w", "0")   # free again: taken at once
    assert r.returncode == 0 and "1 job(s) on 1 page(s)" in r.stdout, (r.stdout, r.stderr)
    assert d.stop() == 0


def test_a_lock_name_that_is_no_regular_file_is_named_so(env):
    # A .gallery.lock that was not a regular file gave "cannot lock ...: Invalid argument" (or
    # "Is a directory", "Too many levels of symbolic links"): nothing said what was wrong.
    d = env.daemon().start()
    target = os.path.join(d.dir, "elsewhere")
    plant = {"a directory": os.mkdir, "a FIFO": os.mkfifo,
             "a link to a missing file": lambda p: os.symlink(target, p)}
    for kind, make in plant.items():
        out = os.path.join(d.dir, "www-" + kind.replace(" ", "-"))
        os.makedirs(out)
        lock = os.path.join(out, ".gallery.lock")
        make(lock)
        r = subprocess.run([IMGSPOOL, "-d", d.spool, "gallery", "-o", out, "-w", "0"],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
        assert r.returncode == 1, (kind, r.returncode, r.stderr)
        assert r.stderr == (f"imgspool: gallery: '{lock}' is not a regular file; nothing "
                            "written\n"), (kind, r.stderr)
        assert os.listdir(out) == [".gallery.lock"], (kind, os.listdir(out))
    assert not os.path.lexists(target), "the link was followed"
    assert d.stop() == 0


if __name__ == "__main__":
    run_tests([test_gallery_in_chromium, test_gallery_pages_in_chromium,
               test_gallery_writes_through_no_planted_link,
               test_a_long_prompt_is_cut_between_characters,
               test_a_large_jobs_prompt_is_found_without_parsing_it, test_runs_at_once_with_another_n,
               test_a_held_lock_is_waited_on_for_a_bounded_time,
               test_a_lock_name_that_is_no_regular_file_is_named_so])
