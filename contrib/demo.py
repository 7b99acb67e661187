#!/usr/bin/env python3
"""make demo: the daemon against the fake upstream on loopback; one job goes from new/ to done/."""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
daemon = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build", "imgspoold")
spool = os.path.join(ROOT, "spool")
work = tempfile.mkdtemp(prefix="imgspool-demo-")
port_file = os.path.join(work, "port")

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
        f.write(f"[spool]\ndir = {spool}\npoll_interval = 2\n"
                f"[provider apiyi]\nbase_url = http://127.0.0.1:{port}\napi_key_env = DEMO_KEY\n")
    env = dict(os.environ, DEMO_KEY="sk-demo")
    d = subprocess.Popen([daemon, "-c", config], env=env)
    procs.append(d)
    task_id = f"demo-{int(time.time())}-{os.getpid()}"
    for sub in ("tmp", "new"):  # the daemon creates them too; whoever is first wins
        os.makedirs(os.path.join(spool, sub), exist_ok=True)
    tmp = os.path.join(spool, "tmp", task_id + ".json")
    with open(tmp, "w") as f:
        json.dump({"prompt": "a lighthouse at dusk, oil painting", "size": "1024x1024",
                   "metadata": {"demo": True}}, f)
    os.rename(tmp, os.path.join(spool, "new", task_id + ".json"))
    print(f"demo: submitted spool/new/{task_id}.json")
    done = os.path.join(spool, "done", task_id + ".json")
    deadline = time.monotonic() + 30
    while not os.path.exists(done):
        if time.monotonic() > deadline:
            sys.exit("demo: the job did not finish within 30 s")
        time.sleep(0.05)
    with open(os.path.join(spool, "done", task_id + ".result.json")) as f:
        result = json.load(f)
    print(f"demo: done -> spool/done/{result['images'][0]}")
    print(json.dumps(result, indent=2))
finally:
    for p in reversed(procs):
        p.send_signal(signal.SIGTERM)
        p.wait()
