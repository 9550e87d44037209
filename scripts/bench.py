#!/usr/bin/env python3
"""lockgraph side by side with Redis, etcd and the bare ZeroMQ echo floor, in one run.

Run through scripts/bench, which installs the servers and builds Release first. This
part starts every server on loopback ports of its own, pinned to CPU 0 (clients on CPU 1),
runs each workload against each target, repetition after repetition with the targets
interleaved (so that machine drift hits all alike), stops the servers, prints a Markdown
table and writes every raw figure and the ratios as JSON (bench/results/latest.json).
docs/performance.md explains the workloads and the figures.
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name: (seconds measured, warm-up ms, repetitions, fill leases, fill owners)
PROFILES = {
    "full": dict(seconds=3.0, warmup_ms=500, reps=3, leases=1_000_000, owners=100_000),
    "quick": dict(seconds=0.4, warmup_ms=150, reps=3, leases=1_000_000, owners=100_000),
    # The harness's own test: every step once, as small as it gets.
    "tiny": dict(seconds=0.15, warmup_ms=50, reps=1, leases=2_000, owners=200),
}


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pinned(cpu, argv):
    """argv run on one CPU, when the machine has more than one."""
    if cpu is None:
        return argv
    return ["taskset", "-c", str(cpu)] + argv


def wait_port(port, proc, name, deadline_s=30):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with status {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"{name} did not listen on port {port} within {deadline_s} s")


class Server:
    def __init__(self, name, argv, port, workdir, cpu, ready=None):
        self.name, self.port = name, port
        self.log_path = os.path.join(workdir, name + ".log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(pinned(cpu, argv), stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        try:
            wait_port(port, self.proc, name)
            if ready:
                ready(self)
        except Exception:
            self.stop()
            raise

    def rss_bytes(self):
        # taskset execs the server, so the pid is the server's own.
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError(f"{self.name}: no VmRSS")

    def stop(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=10)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


def etcd_ready(server, deadline_s=30):
    end = time.monotonic() + deadline_s
    url = f"http://127.0.0.1:{server.port}/health"
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if b'"true"' in r.read():
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError("etcd did not become healthy")


def version_of(argv):
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "unknown"


def machine():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "unknown"
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "os": platform.freedesktop_os_release().get("PRETTY_NAME", "unknown")
        if hasattr(platform, "freedesktop_os_release") else "unknown",
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "commit": commit,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


class Bench:
    def __init__(self, args):
        self.args = args
        self.profile = dict(PROFILES[args.profile])
        self.compare = os.path.join(args.build_dir, "bench", "lockgraph_compare")
        self.echo = os.path.join(args.build_dir, "bench", "lockgraph_echo")
        self.daemon = os.path.join(args.build_dir, "daemon", "lockgraphd")
        for path in (self.compare, self.echo, self.daemon):
            if not os.access(path, os.X_OK):
                raise RuntimeError(f"{path} is not built (run scripts/bench, which builds it)")
        two = (os.cpu_count() or 1) >= 2 and shutil.which("taskset") and not args.no_pin
        self.server_cpu, self.client_cpu = (0, 1) if two else (None, None)
        self.workdir = tempfile.mkdtemp(prefix="lockgraph-bench-")
        self.servers = {}
        self.runs = {}  # case key -> list of result objects, one per repetition

    # ---- servers
    def start_servers(self):
        a = self.args
        cpu = self.server_cpu

        def lockgraphd(name, fsync):
            port = free_port()
            data = os.path.join(self.workdir, name)
            argv = [self.daemon, "--listen", f"tcp://127.0.0.1:{port}", "--data-dir", data, "--fsync", fsync,
                    "--log-level", "warn"]
            self.servers[name] = Server(name, argv, port, self.workdir, cpu)

        port = free_port()
        self.servers["echo"] = Server("echo", [self.echo, "--listen", f"tcp://127.0.0.1:{port}"], port,
                                      self.workdir, cpu)
        lockgraphd("lockgraph_never", "never")
        lockgraphd("lockgraph_always", "always")
        lockgraphd("lockgraph_interval", "interval")
        if "redis" in a.targets:
            port = free_port()
            self.servers["redis"] = Server(
                "redis", ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                          "--appendonly", "no", "--protected-mode", "no", "--daemonize", "no",
                          "--dir", self.workdir], port, self.workdir, cpu)
        if "etcd" in a.targets:
            port, peer = free_port(), free_port()
            data = os.path.join(self.workdir, "etcd")
            self.servers["etcd"] = Server(
                "etcd", ["etcd", "--name", "bench", "--data-dir", data,
                         "--listen-client-urls", f"http://127.0.0.1:{port}",
                         "--advertise-client-urls", f"http://127.0.0.1:{port}",
                         "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                         "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                         "--initial-cluster", f"bench=http://127.0.0.1:{peer}",
                         "--log-level", "error"], port, self.workdir, cpu, ready=etcd_ready)

    def stop_servers(self):
        for s in self.servers.values():
            s.stop()

    def endpoint(self, server):
        s = self.servers[server]
        if server in ("redis", "etcd"):
            return f"127.0.0.1:{s.port}"
        return f"tcp://127.0.0.1:{s.port}"

    # ---- one run
    def run(self, key, server, target, workload, clients, extra=(), seconds=None, record=True):
        p = self.profile
        argv = [self.compare, "--target", target, "--workload", workload, "--endpoint", self.endpoint(server),
                "--clients", str(clients), "--seconds", str(seconds or p["seconds"]),
                "--warmup-ms", str(p["warmup_ms"]), *extra]
        out = subprocess.run(pinned(self.client_cpu, argv), capture_output=True, text=True,
                             timeout=600)
        try:
            result = json.loads(out.stdout.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            raise RuntimeError(f"{key}: lockgraph_compare printed no result (status {out.returncode}): "
                               f"{out.stderr.strip()[-500:]}")
        if out.returncode != 0 or result.get("failed_clients"):
            raise RuntimeError(f"{key}: {result.get('failed_clients')} client(s) failed: "
                               f"{result.get('first_failure', out.stderr.strip()[-500:])}")
        if result["ops"] == 0:
            raise RuntimeError(f"{key}: no operation completed: {json.dumps(result)}")
        result["server"] = server
        if record:
            self.runs.setdefault(key, []).append(result)
        log(f"{key}: {result['ops_per_s']:,.0f}/s p50 {result['p50_us']} us p99 {result['p99_us']} us"
            + (f", {result['errors']} errors" if result["errors"] else ""))
        return result

    def cases(self):
        """(key, server, target, workload, clients, extra): one repetition, floors first."""
        t = self.args.targets
        pipe = ["--pipeline", "16"]
        out = []
        for c in (1, 16, 50):
            out.append((f"lock/{c}/echo", "echo", "echo", "lock", c, ()))
            out.append((f"lock/{c}/lockgraph_never", "lockgraph_never", "lockgraph", "lock", c, ()))
            out.append((f"lock/{c}/lockgraph_always", "lockgraph_always", "lockgraph", "lock", c, ()))
            if "redis" in t:
                out.append((f"lock/{c}/redis", "redis", "redis", "lock", c, ()))
            if "etcd" in t:
                out.append((f"lock/{c}/etcd", "etcd", "etcd", "lock", c, ()))
        out.append(("pipeline/16/echo", "echo", "echo", "pipeline", 16, pipe))
        out.append(("pipeline/16/lockgraph_never", "lockgraph_never", "lockgraph", "pipeline", 16, pipe))
        if "redis" in t:
            out.append(("pipeline/16/redis", "redis", "redis", "pipeline", 16, pipe))
        out.append(("handover/16/lockgraph_never", "lockgraph_never", "lockgraph", "handover", 16, ()))
        if "redis" in t:
            out.append(("handover/16/redis", "redis", "redis", "handover", 16, ()))
        if "etcd" in t:
            out.append(("handover/16/etcd", "etcd", "etcd", "handover", 16, ()))
        # 8 pairs: 8 closing requests in flight at most, the floor is the echo at 8.
        out.append(("lock/8/echo", "echo", "echo", "lock", 8, ()))
        out.append(("deadlock/16/lockgraph_never", "lockgraph_never", "lockgraph", "deadlock", 16, ()))
        out.append(("ingest/4/lockgraph_interval", "lockgraph_interval", "lockgraph", "ingest", 4,
                    ["--batch", "256"]))
        return out

    def scale(self):
        """Workload 7: a fresh daemon, lock/16 empty, then filled with live leases."""
        p = self.profile
        port = free_port()
        name = "lockgraph_scale"
        argv = [self.daemon, "--listen", f"tcp://127.0.0.1:{port}", "--data-dir",
                os.path.join(self.workdir, name), "--fsync", "never", "--log-level", "warn"]
        self.servers[name] = Server(name, argv, port, self.workdir, self.server_cpu)
        for _ in range(p["reps"]):
            self.run("scale/16/empty", name, "lockgraph", "lock", 16)
        rss_before = self.servers[name].rss_bytes()
        t0 = time.monotonic()
        fill = self.run("scale/fill", name, "lockgraph", "fill", 2,
                        ["--leases", str(p["leases"]), "--owners", str(p["owners"]), "--ttl-ms", "86400000",
                         "--batch", "1024"], record=False)
        fill_s = time.monotonic() - t0
        if fill["ops"] != p["leases"] or fill["errors"]:
            raise RuntimeError(f"fill granted {fill['ops']} of {p['leases']} leases ({fill['error_kinds']})")
        rss_after_fill = self.servers[name].rss_bytes()
        for _ in range(p["reps"]):
            self.run("scale/16/full", name, "lockgraph", "lock", 16)
        # Read once the filled daemon has served the lock runs: the fill's journal may
        # have just started a snapshot, whose image is memory only while it is written.
        rss_after = self.servers[name].rss_bytes()
        self.scale_info = {
            "leases": p["leases"], "owners": p["owners"], "fill_seconds": round(fill_s, 2),
            "rss_before_bytes": rss_before, "rss_after_fill_bytes": rss_after_fill, "rss_after_bytes": rss_after,
            "rss_bytes_per_lease": round((rss_after - rss_before) / p["leases"], 1),
        }
        log(f"scale: {p['leases']:,} leases filled in {fill_s:.1f} s, "
            f"{self.scale_info['rss_bytes_per_lease']} B RSS per lease")

    # ---- summary
    def summary(self):
        out = {}
        for key, runs in self.runs.items():
            s = {}
            for field in ("ops_per_s", "p50_us", "p99_us", "p999_us"):
                values = [r[field] for r in runs]
                s[field] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
            s["errors"] = sum(r["errors"] for r in runs)
            s["repetitions"] = len(runs)
            out[key] = s
        return out

    def ratios(self, summ):
        def med(key, field):
            return summ[key][field]["median"] if key in summ else None

        def ratio(a, b):
            return round(a / b, 3) if a is not None and b else None

        r = {
            "lock_ops_1_vs_floor": ratio(med("lock/1/lockgraph_never", "ops_per_s"), med("lock/1/echo", "ops_per_s")),
            "lock_ops_16_vs_floor": ratio(med("lock/16/lockgraph_never", "ops_per_s"),
                                          med("lock/16/echo", "ops_per_s")),
            "lock_ops_50_vs_floor": ratio(med("lock/50/lockgraph_never", "ops_per_s"),
                                          med("lock/50/echo", "ops_per_s")),
            "rtt_p50_vs_floor": ratio(med("lock/1/lockgraph_never", "p50_us"), med("lock/1/echo", "p50_us")),
            "rtt_p50_16_vs_floor": ratio(med("lock/16/lockgraph_never", "p50_us"), med("lock/16/echo", "p50_us")),
            "pipeline_ops_16_vs_floor": ratio(med("pipeline/16/lockgraph_never", "ops_per_s"),
                                              med("pipeline/16/echo", "ops_per_s")),
            "deadlock_p99_vs_floor_p99": ratio(med("deadlock/16/lockgraph_never", "p99_us"),
                                               med("lock/8/echo", "p99_us")),
            "handover_p50_vs_floor_p50": ratio(med("handover/16/lockgraph_never", "p50_us"),
                                               med("lock/1/echo", "p50_us")),
            "scale_1m_vs_empty": ratio(med("scale/16/full", "ops_per_s"), med("scale/16/empty", "ops_per_s")),
            "always_vs_never_16": ratio(med("lock/16/lockgraph_always", "ops_per_s"),
                                        med("lock/16/lockgraph_never", "ops_per_s")),
            "always_vs_never_50": ratio(med("lock/50/lockgraph_always", "ops_per_s"),
                                        med("lock/50/lockgraph_never", "ops_per_s")),
            "lock_ops_16_vs_redis": ratio(med("lock/16/lockgraph_never", "ops_per_s"), med("lock/16/redis", "ops_per_s")),
            "lock_ops_50_vs_redis": ratio(med("lock/50/lockgraph_never", "ops_per_s"), med("lock/50/redis", "ops_per_s")),
            "pipeline_ops_16_vs_redis": ratio(med("pipeline/16/lockgraph_never", "ops_per_s"),
                                              med("pipeline/16/redis", "ops_per_s")),
            "lock_ops_16_vs_etcd": ratio(med("lock/16/lockgraph_always", "ops_per_s"), med("lock/16/etcd", "ops_per_s")),
            "lock_ops_50_vs_etcd": ratio(med("lock/50/lockgraph_always", "ops_per_s"), med("lock/50/etcd", "ops_per_s")),
            "handover_per_s_vs_redis": ratio(med("handover/16/lockgraph_never", "ops_per_s"),
                                             med("handover/16/redis", "ops_per_s")),
            "handover_per_s_vs_etcd": ratio(med("handover/16/lockgraph_never", "ops_per_s"),
                                            med("handover/16/etcd", "ops_per_s")),
            "ingest_events_per_s": med("ingest/4/lockgraph_interval", "ops_per_s"),
            "rss_bytes_per_lease": self.scale_info["rss_bytes_per_lease"] if self.scale_info else None,
        }
        return r


# (ratio key, target, "min" or "max") as the issue states them.
TARGETS = [
    ("lock_ops_16_vs_floor", 0.7, "min"),
    ("lock_ops_50_vs_floor", 0.7, "min"),
    ("rtt_p50_vs_floor", 1.3, "max"),
    ("deadlock_p99_vs_floor_p99", 2.0, "max"),
    ("handover_p50_vs_floor_p50", 1.5, "max"),
    ("scale_1m_vs_empty", 0.67, "min"),
    ("always_vs_never_50", 0.5, "min"),
    ("ingest_events_per_s", 1_000_000, "min"),
    ("rss_bytes_per_lease", 256, "max"),
    ("lock_ops_50_vs_redis", 1.0, "min"),
    ("lock_ops_16_vs_etcd", 10.0, "min"),
]
STRETCH = {"lock_ops_50_vs_redis", "lock_ops_16_vs_etcd"}

LABELS = {
    "echo": "ZeroMQ echo (floor)",
    "lockgraph_never": "lockgraph, fsync never",
    "lockgraph_always": "lockgraph, fsync always",
    "lockgraph_interval": "lockgraph, fsync interval",
    "redis": "Redis (no persistence)",
    "etcd": "etcd (fsync every write)",
    "empty": "lockgraph, empty",
    "full": "lockgraph, filled",
}
FLOOR = {  # case -> the floor case it is compared with, and on which figure
    "lock": lambda c: f"lock/{c}/echo",
    "pipeline": lambda c: f"pipeline/{c}/echo",
    "handover": lambda c: "lock/1/echo",
    "deadlock": lambda c: "lock/8/echo",
}


def fmt(v, digits=0):
    if v is None:
        return "–"
    if digits == 0:
        return f"{v:,.0f}"
    return f"{v:,.{digits}f}"


def markdown(summ, ratios, scale_info, profile_name, info):
    lines = [f"lockgraph bench ({profile_name}), {info['date']}, commit {info['commit']}: {info['cpu']}, "
             f"{info['cpus']} CPUs, {info['os']}, kernel {info['kernel']}", "",
             "| workload | clients | target | ops/s median (min–max) | p50 µs | p99 µs | ops/s ÷ floor | p50 ÷ floor |",
             "|---|---|---|---|---|---|---|---|"]
    for key, s in summ.items():
        workload, clients, target = key.split("/")
        o = s["ops_per_s"]
        floor_ops = floor_p50 = "–"
        floor_key = FLOOR.get(workload, lambda c: None)(clients) if workload != "scale" else None
        if floor_key and floor_key in summ and target != "echo":
            if workload in ("lock", "pipeline"):
                floor_ops = f"{o['median'] / summ[floor_key]['ops_per_s']['median']:.2f}"
            floor_p50 = f"{s['p50_us']['median'] / summ[floor_key]['p50_us']['median']:.2f}"
        unit = {"handover": " hand-overs/s", "deadlock": " cycles/s", "ingest": " events/s"}.get(workload, "")
        lines.append(f"| {workload} | {clients} | {LABELS.get(target, target)} | {fmt(o['median'])} "
                     f"({fmt(o['min'])}–{fmt(o['max'])}){unit} | {fmt(s['p50_us']['median'], 1)} | "
                     f"{fmt(s['p99_us']['median'], 1)} | {floor_ops} | {floor_p50} |")
    lines += ["", "| ratio | value | target | |", "|---|---|---|---|"]
    for key, target, kind in TARGETS:
        v = ratios.get(key)
        if v is None:
            verdict = "not run"
        else:
            met = v >= target if kind == "min" else v <= target
            verdict = ("met" if met else "not met") + (" (stretch)" if key in STRETCH else "")
        sign = "≥" if kind == "min" else "≤"
        lines.append(f"| {key} | {fmt(v, 3) if v is not None and v < 1000 else fmt(v)} | {sign} {target:g} | {verdict} |")
    if scale_info:
        lines += ["", f"Scale: {scale_info['leases']:,} live leases of {scale_info['owners']:,} owners, filled in "
                  f"{scale_info['fill_seconds']} s; daemon RSS {scale_info['rss_before_bytes'] / 2**20:.0f} MiB → "
                  f"{scale_info['rss_after_bytes'] / 2**20:.0f} MiB, {scale_info['rss_bytes_per_lease']} B per lease."]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(
        description="lockgraph side by side with Redis, etcd and the ZeroMQ echo floor (see docs/performance.md).")
    ap.add_argument("--build-dir", default=os.path.join(ROOT, "build", "release"),
                    help="build with lockgraphd, lockgraph_compare and lockgraph_echo (default build/release)")
    ap.add_argument("--quick", dest="profile", action="store_const", const="quick", default="full",
                    help="every workload briefly (a smoke check, under 2 minutes)")
    ap.add_argument("--tiny", dest="profile", action="store_const", const="tiny",
                    help="every step once on a tiny workload (the harness's own test)")
    ap.add_argument("--only", choices=["all", "lockgraph"], default="all",
                    help="'lockgraph': lockgraph and its echo floor only, no Redis or etcd")
    ap.add_argument("--out", help="where to write the JSON results (default bench/results/latest.json for "
                                  "the full run, latest-quick.json for --quick and --tiny, so that a smoke check "
                                  "does not overwrite the full run's figures)")
    ap.add_argument("--no-pin", action="store_true", help="do not pin servers to CPU 0 and clients to CPU 1")
    ap.add_argument("--keep", action="store_true", help="keep the servers' data and logs (their directory is printed)")
    args = ap.parse_args()
    if args.out is None:
        name = "latest.json" if args.profile == "full" else "latest-quick.json"
        args.out = os.path.join(ROOT, "bench", "results", name)
    args.targets = {"echo", "lockgraph"} | ({"redis", "etcd"} if args.only == "all" else set())

    bench = Bench(args)
    bench.scale_info = None
    started = time.monotonic()
    info = machine()
    info["redis"] = version_of(["redis-server", "--version"]) if "redis" in args.targets else None
    info["etcd"] = version_of(["etcd", "--version"]) if "etcd" in args.targets else None
    info["pinning"] = ("servers on CPU 0, clients on CPU 1" if bench.server_cpu is not None else "none")
    log(f"profile {args.profile}, {bench.profile['reps']} repetitions of {bench.profile['seconds']} s; "
        f"{info['pinning']}; servers' logs in {bench.workdir}")
    ok = False
    try:
        bench.start_servers()
        for rep in range(bench.profile["reps"]):
            log(f"repetition {rep + 1} of {bench.profile['reps']}")
            for case in bench.cases():
                bench.run(*case)
        bench.scale()
        ok = True
    finally:
        bench.stop_servers()
        if ok and not args.keep:
            shutil.rmtree(bench.workdir, ignore_errors=True)
        elif not ok:
            log(f"failed; servers' logs are kept in {bench.workdir}")

    summ = bench.summary()
    ratios = bench.ratios(summ)
    info["duration_s"] = round(time.monotonic() - started, 1)
    result = {"profile": args.profile, "settings": bench.profile, "machine": info, "summary": summ,
              "runs": bench.runs, "scale": bench.scale_info, "ratios": ratios,
              "targets": {k: {"target": t, "kind": kind} for k, t, kind in TARGETS}}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    print(markdown(summ, ratios, bench.scale_info, args.profile, info))
    log(f"wrote {args.out} in {info['duration_s']} s")


if __name__ == "__main__":
    try:
        main()
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        print(f"bench: {e}", file=sys.stderr)
        sys.exit(1)
