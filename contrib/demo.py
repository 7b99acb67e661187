#!/usr/bin/env python3
"""make demo: the daemon against the fake upstream on loopback; one job goes from new/ to done/.

The demo has a spool of its own, build/demo/spool, never ./spool: a daemon from `make run` may be
watching ./spool, and it must not claim the demo's job, nor the demo daemon a real one. Nothing
goes to /tmp; build/demo/ stays for a look afterwards (`make clean` removes it).
usage: demo.py IMGSPOOLD IMGSPOOL"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
daemon = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build", "imgspoold")
client = sys.argv[2] if len(sys.argv) > 2 else os.path.join(ROOT, "build", "imgspool")
work = os.path.join(ROOT, "build", "demo")
spool = os.path.join(work, "spool")
port_file = os.path.join(work, "port")
shutil.rmtree(work, ignore_errors=True)
os.makedirs(work)

fake = subprocess.Popen([sys.executable, os.path.join(ROOT, "tests", "fake", "upstream.py"),
                         "--port", "0", "--key", "sk-demo", "--port-file", port_file],
                        stdout=subprocess.DEVNULL)
procs = [fake]
try:
    deadline = time.monotonic() + 10
    while not (os.path.exists(port_file) and open(port_file).read().strip()):
        if time.monotonic() > deadline or fake.poll() is not None:
            sys.exit("demo: the fake upstream did not start")
        time.sleep(0.05)
    port = open(port_file).read().strip()
    config = os.path.join(work, "demo.ini")
    with open(config, "w") as f:
        f.write(f"[spool]\ndir = {spool}\npoll_interval = 2\nhost_id = demo\n"
                f"[provider apiyi]\nbase_url = http://127.0.0.1:{port}\napi_key_env = DEMO_KEY\n")
    env = dict(os.environ, DEMO_KEY="sk-demo")
    d = subprocess.Popen([daemon, "-c", config], env=env)
    procs.append(d)
    job = os.path.join(work, "job.json")
    with open(job, "w") as f:
        json.dump({"prompt": "a lighthouse at dusk, oil painting", "size": "1024x1024",
                   "metadata": {"demo": True}}, f)
    # The daemon creates them too (whoever is first wins); the client wants new/ and done/.
    for sub in ("tmp", "new", "running", "deferred", "done", "failed"):
        os.makedirs(os.path.join(spool, sub), exist_ok=True)
    sub = subprocess.run([client, "-d", spool, "submit", job], capture_output=True, text=True)
    if sub.returncode != 0:
        sys.exit(f"demo: imgspool submit failed: {sub.stderr.strip()}")
    task_id = sub.stdout.strip()
    print(f"demo: {client} -d {spool} submit {job} -> {task_id}")
    waited = subprocess.run([client, "-d", spool, "wait", "-t", "30", task_id],
                            capture_output=True, text=True)
    if waited.returncode != 0:
        sys.exit(f"demo: the job did not succeed (exit {waited.returncode}): {waited.stderr.strip()}")
    result = json.loads(waited.stdout)
    print(f"demo: done -> {os.path.join(spool, 'done', result['images'][0])}")
    print(json.dumps(result, indent=2))
finally:
    for p in reversed(procs):
        p.send_signal(signal.SIGTERM)
        p.wait()
