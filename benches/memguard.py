#!/usr/bin/env python3
"""memguard's benchmarks on a real `paywarden serve` (release build), loopback only.

    python3 benches/memguard.py cost   [--rounds 3] [--seconds 10]
    python3 benches/memguard.py detect [--sizes 64,256,1024,4096] [--rate 500] [--cap 900]
    python3 benches/memguard.py predict [--size 4096] [--rate 500] [--limit-mib 2048] [--cap 1500]
    python3 benches/memguard.py soak   [--rate 300] [--seconds 1800] [--flat-last 600]

cost:    payments/s (wrk, closed loop, benches/wrk/payments.lua) on three servers started
         together, measured in alternation: memguard on with heap profiling (the default),
         heap profiling sampled but off (_RJEM_MALLOC_CONF=prof_active:false), and memguard
         off (--memory-guard off, prof:false). Prints each round and the median ratios.
detect:  for each leak size, `serve --fault leak=SIZE` under a fixed payment rate (oha -q,
         open loop); seconds from the first payment to `suspect`, `leaking`, and the heap
         diff naming the injecting function.
predict: one leaking server scraped every 5 s by a real Prometheus with the shipped rules
         (deploy/prometheus/rules.yml); seconds until memguard says `leaking` and until each
         Prometheus alert fires, and the ratio.
soak:    a clean server (with the benign cache and sawtooth patterns) under a fixed rate for
         SECONDS: every non-ok second and every alert event is counted (goal: none); over the
         last FLAT_LAST seconds, the heap's Theil-Sen slope and Mann-Kendall test (is growth
         different from zero?).

Needs wrk and prometheus (Debian packages) and oha (`cargo install oha`). Builds the release
binary unless SKIP_BUILD=1. Stops by itself.
"""

import argparse
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "paywarden")
TOKEN = "bench-admin-token-0123456789"
LEAK_FN = "paywarden_api::faults::leak_on_confirmed_payment"
PAY = "amount=1000&currency=usd&payment_method=pm_card_visa&confirm=true"


def machine():
    cores = os.cpu_count()
    mem = int(open("/proc/meminfo").read().split()[1]) // 1048576
    return f"{cores} cores, {mem} GiB, {os.uname().sysname} {os.uname().release}"


class Server:
    def __init__(self, args=(), env=None):
        self.dir = tempfile.mkdtemp(prefix="pw-bench-")
        e = dict(os.environ, PAYWARDEN_LOG="warn")
        e.update(env or {})
        self.out = open(os.path.join(self.dir, "out.txt"), "w+")
        self.log = open(os.path.join(self.dir, "serve.log"), "w")
        self.proc = subprocess.Popen(
            [BIN, "serve", "--listen", "127.0.0.1:0", "--data-dir", os.path.join(self.dir, "data"), "--admin-token", TOKEN, *args],
            stdout=self.out, stderr=self.log, env=e)
        for _ in range(200):
            text = open(self.out.name).read()
            m = re.search(r"listening on (\S+)", text)
            k = re.search(r"\(shown once\): (\S+)", text)
            if m and k:
                self.url, self.key = m.group(1), k.group(1)
                self.addr = self.url.replace("http://", "")
                return
            time.sleep(0.05)
        raise SystemExit(f"server did not start: {open(self.log.name).read()}")

    def get(self, path, token=TOKEN):
        req = urllib.request.Request(self.url + path, headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.read()

    def report(self):
        return json.loads(self.get("/admin/memory/leak-report"))

    def alerts(self):
        return json.loads(self.get("/admin/alerts"))

    def rss_mib(self):
        for line in open(f"/proc/{self.proc.pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def oha(server, rate, seconds):
    """Open-loop payment load at `rate`/s for `seconds`, in the background."""
    return subprocess.Popen(
        ["oha", "--no-tui", "-q", str(rate), "-z", f"{seconds}s", "-c", "64", "--latency-correction", "-m", "POST",
         "-H", f"Authorization: Bearer {server.key}", "-T", "application/x-www-form-urlencoded", "-d", PAY,
         f"{server.url}/v1/payment_intents"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wrk_rps(server, seconds, conns=32):
    env = dict(os.environ, PAYWARDEN_KEY=server.key)
    out = subprocess.run(["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "-s", os.path.join(ROOT, "benches/wrk/payments.lua"), server.url],
                         capture_output=True, text=True, env=env).stdout
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def cost(a):
    configs = [
        ("memguard on, heap profiling on (default)", [], {}),
        ("memguard on, heap profiling inactive", [], {"_RJEM_MALLOC_CONF": "prof_active:false"}),
        ("memguard off, profiling off", ["--memory-guard", "off"], {"_RJEM_MALLOC_CONF": "prof:false"}),
    ]
    servers = [Server(args, env) for _, args, env in configs]
    try:
        for s in servers:
            wrk_rps(s, 3)  # warm-up
        results = [[] for _ in configs]
        for r in range(a.rounds):
            for i, s in enumerate(servers):
                results[i].append(wrk_rps(s, a.seconds))
            print(f"round {r + 1}: " + ", ".join(f"{x[-1]:.0f}" for x in results), flush=True)
        med = [statistics.median(x) for x in results]
        for (name, _, _), m, x in zip(configs, med, results):
            print(f"{name}: median {m:.0f} payments/s (runs: {', '.join(f'{v:.0f}' for v in x)})")
        print(f"ratio default / memguard off: {med[0] / med[2]:.3f} (cost {100 * (1 - med[0] / med[2]):.1f} %)")
        print(f"ratio profiling on / inactive: {med[0] / med[1]:.3f} (cost {100 * (1 - med[0] / med[1]):.1f} %)")
        print(f"RSS after: " + ", ".join(f"{s.rss_mib():.0f} MiB" for s in servers))
    finally:
        for s in servers:
            s.stop()


def watch_leak(server, cap, started, on_tick=None):
    """Polls the leak report each second; returns seconds to suspect, leaking, site named."""
    t_suspect = t_leaking = t_site = None
    site = None
    while time.time() - started < cap:
        time.sleep(1)
        r = server.report()
        now = time.time() - started
        if t_suspect is None and r["state"] in ("suspect", "leaking"):
            t_suspect = now
        if t_leaking is None and r["state"] == "leaking":
            t_leaking = now
        sites = r.get("sites") or []
        if t_site is None and sites and sites[0]["function"] == LEAK_FN:
            t_site, site = now, sites[0]
        if on_tick and on_tick(now):
            break
        if t_leaking is not None and t_site is not None and on_tick is None:
            break
    return t_suspect, t_leaking, t_site, site


def detect(a):
    print(f"machine: {machine()}; rate {a.rate} payments/s (oha, open loop); cap {a.cap} s")
    for size in [int(x) for x in a.sizes.split(",")]:
        s = Server(["--fault", f"leak={size}"])
        load = oha(s, a.rate, a.cap + 5)
        started = time.time()
        try:
            ts, tl, tsite, site = watch_leak(s, a.cap, started)
            rate = f"{site['bytes_per_second'] / 1024:.0f} KiB/s at the site (injected {size * a.rate / 1024:.0f} KiB/s)" if site else "no site"
            fmt = lambda t: f"{t:.0f} s" if t is not None else f"> {a.cap} s"
            print(f"leak {size} B/payment: suspect {fmt(ts)}, leaking {fmt(tl)}, site named {fmt(tsite)}; {rate}", flush=True)
        finally:
            load.kill()
            s.stop()


PROM_CONFIG = """global:
  scrape_interval: 5s
  evaluation_interval: 5s
rule_files: ["{rules}"]
scrape_configs:
  - job_name: paywarden
    static_configs: [{{targets: ["{target}"]}}]
"""


def predict(a):
    limit = a.limit_mib << 20
    s = Server(["--fault", f"leak={a.size}", "--memory-limit", str(limit)])
    pdir = tempfile.mkdtemp(prefix="pw-prom-")
    cfg = os.path.join(pdir, "prometheus.yml")
    open(cfg, "w").write(PROM_CONFIG.format(rules=os.path.join(ROOT, "deploy/prometheus/rules.yml"), target=s.addr))
    prom = subprocess.Popen(["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={pdir}/data", "--web.listen-address=127.0.0.1:19090"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print(f"machine: {machine()}; leak {a.size} B/payment at {a.rate} payments/s, memory limit {a.limit_mib} MiB; "
          f"Prometheus scrape and rule evaluation every 5 s (recording group 15 s), shipped rules")
    time.sleep(3)
    load = oha(s, a.rate, a.cap + 5)
    started = time.time()
    fired = {}
    t_leaking = None

    def tick(now):
        nonlocal t_leaking
        if t_leaking is None and s.report()["state"] == "leaking":
            t_leaking = now
            print(f"memguard leaking after {now:.0f} s", flush=True)
        try:
            with urllib.request.urlopen("http://127.0.0.1:19090/api/v1/alerts", timeout=5) as r:
                for al in json.load(r)["data"]["alerts"]:
                    name = al["labels"]["alertname"]
                    if al["state"] == "firing" and name not in fired:
                        fired[name] = now
                        print(f"Prometheus {name} firing after {now:.0f} s (RSS {s.rss_mib():.0f} MiB)", flush=True)
        except OSError:
            pass
        return "PaywardenMemoryExhaustionPredicted" in fired

    try:
        watch_leak(s, a.cap, started, on_tick=tick)
    finally:
        load.kill()
        prom.terminate()
        prom.wait()
        s.stop()
        shutil.rmtree(pdir, ignore_errors=True)
    p = fired.get("PaywardenMemoryExhaustionPredicted")
    if t_leaking and p:
        print(f"predict_linear / memguard: {p:.0f} s / {t_leaking:.0f} s = {p / t_leaking:.1f}x sooner")
    else:
        print(f"predict_linear {'did not fire within ' + str(a.cap) + ' s' if not p else f'{p:.0f} s'}; memguard {t_leaking}")


def theil_sen(xs, ys):
    slopes = [(ys[j] - ys[i]) / (xs[j] - xs[i]) for i in range(len(xs)) for j in range(i + 1, len(xs)) if xs[j] != xs[i]]
    return statistics.median(slopes)


def mann_kendall(ys):
    n = len(ys)
    s = sum((ys[j] > ys[i]) - (ys[j] < ys[i]) for i in range(n) for j in range(i + 1, n))
    ties = {}
    for y in ys:
        ties[y] = ties.get(y, 0) + 1
    var = (n * (n - 1) * (2 * n + 5) - sum(t * (t - 1) * (2 * t + 5) for t in ties.values())) / 18
    z = (s - math.copysign(1, s)) / math.sqrt(var) if s != 0 else 0.0
    p = math.erfc(abs(z) / math.sqrt(2))  # two-sided
    return z, p


def soak(a):
    s = Server(["--fault", "cache=4194304", "--fault", "sawtooth=2097152"])
    load = oha(s, a.rate, a.seconds + 5)
    started = time.time()
    print(f"machine: {machine()}; clean soak at {a.rate} payments/s for {a.seconds} s, cache=4 MiB and sawtooth=2 MiB patterns")
    states = {}
    heap = []
    try:
        while time.time() - started < a.seconds:
            time.sleep(1)
            r = s.report()
            now = time.time() - started
            states[r["state"]] = states.get(r["state"], 0) + 1
            heap.append((now, r["memory"]["allocated_bytes"]))
            if int(now) % 300 == 0:
                print(f"  {now:.0f} s: {states}, heap {heap[-1][1] / 1048576:.1f} MiB, RSS {s.rss_mib():.0f} MiB", flush=True)
        alerts = s.alerts()
    finally:
        load.kill()
        s.stop()
    print(f"seconds by state: {states}; alert events: {len(alerts['events'])}; active alerts: {len(alerts['active'])}")
    last = [(t, y) for t, y in heap if t >= heap[-1][0] - a.flat_last]
    # Theil-Sen on 10-s medians (the pair count of 600 points is 180k: fine, but medians
    # also damp the per-second sawtooth).
    blocks = [last[i:i + 10] for i in range(0, len(last) - 9, 10)]
    xs = [statistics.median(t for t, _ in b) for b in blocks]
    ys = [statistics.median(y for _, y in b) for b in blocks]
    slope = theil_sen(xs, ys)
    z, p = mann_kendall(ys)
    print(f"last {a.flat_last} s: heap {ys[0] / 1048576:.1f} -> {ys[-1] / 1048576:.1f} MiB; Theil-Sen slope {slope:.0f} B/s "
          f"({slope * a.flat_last / 1048576:.2f} MiB over the span); Mann-Kendall z = {z:.2f}, two-sided p = {p:.3f} "
          f"({'not different from zero at 5 %' if p >= 0.05 else 'DIFFERENT from zero at 5 %'})")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cost")
    c.add_argument("--rounds", type=int, default=3)
    c.add_argument("--seconds", type=int, default=10)
    d = sub.add_parser("detect")
    d.add_argument("--sizes", default="4096,1024,256,64")
    d.add_argument("--rate", type=int, default=500)
    d.add_argument("--cap", type=int, default=900)
    p = sub.add_parser("predict")
    p.add_argument("--size", type=int, default=4096)
    p.add_argument("--rate", type=int, default=500)
    p.add_argument("--limit-mib", type=int, default=2048)
    p.add_argument("--cap", type=int, default=1500)
    s = sub.add_parser("soak")
    s.add_argument("--rate", type=int, default=300)
    s.add_argument("--seconds", type=int, default=1800)
    s.add_argument("--flat-last", type=int, default=600)
    a = ap.parse_args()
    for tool in ["wrk", "oha"] + (["prometheus"] if a.cmd == "predict" else []):
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: apt-get install wrk prometheus; cargo install oha")
    if not os.environ.get("SKIP_BUILD"):
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "paywarden"], cwd=ROOT, check=True)
    {"cost": cost, "detect": detect, "predict": predict, "soak": soak}[a.cmd](a)


if __name__ == "__main__":
    main()
