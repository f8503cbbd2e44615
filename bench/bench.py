#!/usr/bin/env python3
"""Benchmark pcce-proxy against nginx and HAProxy doing the same job.

One run on this machine starts a TLS stand-in for the Console (nginx), puts
pcce-proxy, nginx and HAProxy in front of it on loopback ports, drives each
with wrk in turn (and the upstream directly, as the floor), downloads 1 GiB
through each, runs pcce-proxy with a short token lifetime to prove that
refreshes cost no request, and writes a Markdown report.

Every figure is also given as a ratio to nginx's: absolute numbers on a
shared 2-core machine move from run to run, ratios measured side by side in
one run move much less. Python 3 standard library only.
"""

import argparse
import base64
import datetime
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
TEMPLATES = BENCH_DIR / "templates"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_PATH = "/api/v1/images?limit=50"
DOWNLOAD_BYTES = 1 << 30
TOOLS = ("wrk", "nginx", "haproxy", "curl", "openssl")
BASELINE = "nginx"


# ---------------------------------------------------------------- helpers


def log(message):
    """Progress goes to stderr; stdout carries only the report."""
    print(f"bench: {message}", file=sys.stderr, flush=True)


def free_port():
    """A loopback port nobody listens on right now (bind port 0, release)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def render(template, path, **values):
    """Fill {{NAME}} placeholders of a template; an unknown name is a bug."""
    text = (TEMPLATES / template).read_text()

    def fill(match):
        return str(values[match.group(1)])

    path.write_text(re.sub(r"\{\{([A-Z_]+)\}\}", fill, text))
    return path


def run_quiet(argv, timeout=60):
    """Run a short command, raise with its stderr if it fails."""
    done = subprocess.run(argv, capture_output=True, text=True,
                          timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed: {done.stderr.strip()}")
    return done.stdout


def parse_duration(text):
    """'20s', '500ms', '5m' -> seconds."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)", text)
    if not match:
        raise ValueError(f"duration {text!r}: expected e.g. 20s, 500ms, 5m")
    scale = {"ms": 0.001, "s": 1, "m": 60}[match.group(2)]
    return float(match.group(1)) * scale


# ------------------------------------------------------ process accounting


def descendants(pid):
    """pid and every live process below it (nginx master and workers)."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def cpu_seconds(pids):
    """User + system CPU time of the processes, all threads included."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1]
        except OSError:
            continue
        parts = fields.split()
        total += int(parts[11]) + int(parts[12])  # utime, stime
    return total / CLOCK_TICKS


def memory_kib(pids, key):
    """Sum of one /proc/<pid>/status figure (VmRSS, VmHWM) in KiB."""
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        match = re.search(rf"^{key}:\s+(\d+) kB", status, re.M)
        if match:
            total += int(match.group(1))
    return total


class RssSampler:
    """Samples the summed RSS of some processes every 100 ms in a thread.

    The sum over nginx's master and workers counts shared pages more than
    once; that overstates nginx a little, which the README says.
    """

    def __init__(self, pids, interval=0.1):
        self.pids = pids
        self.interval = interval
        self.start_kib = memory_kib(pids, "VmRSS")
        self.max_kib = self.start_kib
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _loop(self):
        while not self._stop.wait(self.interval):
            self.max_kib = max(self.max_kib, memory_kib(self.pids, "VmRSS"))


# ------------------------------------------------------------- processes


class Processes:
    """Everything the benchmark starts, stopped in reverse order at the end.

    Each child gets its own session, so a Ctrl-C reaches only this script,
    which then stops the children itself, by their ids.
    """

    def __init__(self):
        self.started = []

    def start(self, name, argv, log_path, env=None):
        out = open(log_path, "wb")
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True)
        out.close()
        self.started.append((name, proc))
        return proc

    def stop(self, proc, grace=5.0):
        if proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(grace)

    def stop_all(self):
        for name, proc in reversed(self.started):
            try:
                self.stop(proc)
            except Exception as err:  # keep stopping the others
                log(f"could not stop {name} (pid {proc.pid}): {err}")
        self.started.clear()


def wait_listening(port, proc, name, log_path, timeout=15.0):
    """Wait until something accepts on the port; fail if the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = Path(log_path).read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{name} did not listen on 127.0.0.1:{port} "
                       f"within {timeout:.0f}s")


# ---------------------------------------------------------------- fixtures


def make_certificates(work):
    """A private CA and a leaf for localhost/127.0.0.1 signed by it.

    A CA plus leaf rather than one self-signed leaf: strict verifiers
    (rustls) refuse a CA certificate used as a server certificate.
    """
    ca_key, ca = work / "ca.key", work / "ca.pem"
    key, csr, cert = work / "server.key", work / "server.csr", work / "server.pem"
    ext = work / "server.ext"
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n"
                   "basicConstraints=critical,CA:FALSE\n"
                   "keyUsage=critical,digitalSignature,keyEncipherment\n"
                   "extendedKeyUsage=serverAuth\n")
    run_quiet(["openssl", "req", "-x509", "-newkey", "ec",
               "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
               "-keyout", ca_key, "-out", ca, "-days", "2",
               "-subj", "/CN=pcce-proxy bench CA"])
    run_quiet(["openssl", "req", "-newkey", "ec",
               "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
               "-keyout", key, "-out", csr, "-subj", "/CN=localhost"])
    run_quiet(["openssl", "x509", "-req", "-in", csr, "-CA", ca,
               "-CAkey", ca_key, "-CAcreateserial", "-out", cert,
               "-days", "2", "-extfile", ext])
    return ca, cert, key


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token_prefix(lifetime_s=3600):
    """'header.payload.' of a JWT-shaped token with iat and exp.

    The upstream appends a per-login signature ($request_id, 32 hex digits),
    so each login yields a new token and the upstream can recognise its own.
    """
    now = int(time.time())
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64url(json.dumps({"sub": "bench", "iat": now,
                                 "exp": now + lifetime_s}).encode())
    return f"{header}.{payload}."


def images_json(target_bytes=2048):
    """A fixed JSON list of about 2 KB, free of ' and $ (nginx literals)."""
    items, text = [], "[]"
    for index in range(200):
        items.append({"_id": f"sha256:{index:064x}"[:24],
                      "repo": f"team/app-{index}", "tag": f"1.{index}",
                      "vulns": index % 7})
        candidate = json.dumps(items, separators=(",", ":"))
        if len(candidate) > target_bytes:
            break
        text = candidate
    return text


def make_download(path):
    """A sparse 1 GiB file: costs no disk, reads as zeros."""
    with open(path, "wb") as handle:
        handle.truncate(DOWNLOAD_BYTES)


# ----------------------------------------------------------------- targets


class Target:
    """One thing wrk is pointed at, and the processes whose cost it is."""

    def __init__(self, name, url, proc=None, headers=()):
        self.name = name
        self.url = url
        self.proc = proc
        self.headers = list(headers)
        self.pids = []

    def refresh_pids(self):
        self.pids = descendants(self.proc.pid) if self.proc else []


class Bench:
    """Starts the upstream and the proxies, measures, and reports."""

    def __init__(self, args):
        self.args = args
        self.procs = Processes()
        self.work = Path(tempfile.mkdtemp(prefix="pcce-bench-"))
        self.workers = os.cpu_count() or 1
        self.targets = {}
        self.results = {"load": [], "download": [], "refresh": None}

    # ------------------------------------------------------------ setup

    def nginx_user(self):
        """Workers as root when we are root: they read files in our temp dir."""
        return "user root;" if os.geteuid() == 0 else ""

    def start_upstream(self):
        log("starting the TLS upstream (nginx)")
        up = self.work / "upstream"
        up.mkdir()
        ca, cert, key = make_certificates(up)
        make_download(up / "download.bin")
        self.ca = ca
        self.token_prefix = token_prefix()
        self.static_token = self.token_prefix + secrets.token_hex(16)
        self.images = images_json()
        self.upstream_port = free_port()
        self.status_port = free_port()
        conf = render("upstream-nginx.conf", up / "nginx.conf",
                      USER=self.nginx_user(), WORKERS=self.workers,
                      DIR=up, PORT=self.upstream_port,
                      STATUS_PORT=self.status_port, CERT=cert, KEY=key,
                      TOKEN_PREFIX=self.token_prefix,
                      TOKEN_REGEX=re.escape(self.token_prefix) + "[0-9a-f]{32}",
                      IMAGES_JSON=self.images,
                      LISTEN_OPTIONS=" http2" if self.args.upstream_http2 else "")
        self.upstream_dir = up
        proc = self.procs.start("upstream", ["nginx", "-c", conf, "-p", up],
                                up / "stdout.log")
        wait_listening(self.upstream_port, proc, "upstream nginx",
                       up / "error.log")
        self.upstream = Target("upstream", None, proc)
        self.upstream.refresh_pids()
        direct = Target("direct", f"https://127.0.0.1:{self.upstream_port}"
                        f"{PAGE_PATH}&project=bench",
                        headers=[f"Authorization: Bearer {self.static_token}"])
        self.targets["direct"] = direct

    def start_nginx(self):
        log("starting nginx as the proxy")
        home = self.work / "nginx"
        home.mkdir()
        port = free_port()
        access = home / "access.log" if self.args.access_log else "off"
        conf = render("proxy-nginx.conf", home / "nginx.conf",
                      USER=self.nginx_user(), WORKERS=self.workers, DIR=home,
                      PORT=port, UPSTREAM_PORT=self.upstream_port,
                      TOKEN=self.static_token, CA=self.ca, ACCESS_LOG=access)
        proc = self.procs.start("nginx", ["nginx", "-c", conf, "-p", home],
                                home / "stdout.log")
        wait_listening(port, proc, "nginx", home / "error.log")
        self.targets["nginx"] = Target("nginx", self.local_url(port), proc)

    def start_haproxy(self):
        log("starting HAProxy as the proxy")
        home = self.work / "haproxy"
        home.mkdir()
        port = free_port()
        logging = self.args.access_log
        conf = render("haproxy.cfg", home / "haproxy.cfg",
                      WORKERS=self.workers, PORT=port,
                      UPSTREAM_PORT=self.upstream_port,
                      TOKEN=self.static_token, CA=self.ca,
                      LOG_GLOBAL="log stdout format raw local0" if logging else "",
                      LOG_DEFAULTS="log global\n    option httplog"
                      if logging else "")
        proc = self.procs.start("haproxy", ["haproxy", "-db", "-f", conf],
                                home / "haproxy.log")
        wait_listening(port, proc, "haproxy", home / "haproxy.log")
        self.targets["haproxy"] = Target("haproxy", self.local_url(port), proc)

    def start_pcce(self, name="pcce-proxy", lifetime="30m"):
        log(f"starting {name} (token_lifetime {lifetime})")
        home = self.work / name
        home.mkdir()
        (home / "password").write_text("bench-password\n")
        port = free_port()
        conf = render("pcce-proxy.toml", home / "config.toml", DIR=home,
                      PORT=port, UPSTREAM_PORT=self.upstream_port, CA=self.ca,
                      TOKEN_LIFETIME=lifetime,
                      LOG_LEVEL="info" if self.args.access_log else "warn",
                      HTTP_VERSION=self.args.http_version)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("PCCE_PROXY_")}
        proc = self.procs.start(name, [self.args.proxy_bin, "-c", conf, "run"],
                                home / "proxy.log", env=env)
        wait_listening(port, proc, name, home / "proxy.log")
        target = Target(name, self.local_url(port), proc)
        target.log_path = home / "proxy.log"
        return target

    @staticmethod
    def local_url(port):
        return f"http://127.0.0.1:{port}{PAGE_PATH}"

    # ----------------------------------------------------------- checks

    def upstream_status(self):
        """Connections the upstream has accepted so far (stub_status)."""
        url = f"http://127.0.0.1:{self.status_port}/status"
        with urllib.request.urlopen(url, timeout=5) as answer:
            lines = answer.read().decode().splitlines()
        return int(lines[2].split()[0])

    def count_lines(self, name):
        path = self.upstream_dir / name
        if not path.exists():
            return 0
        with open(path, "rb") as handle:
            return sum(1 for _ in handle)

    def curl(self, url, headers=(), output="-", max_time=30):
        argv = ["curl", "-sS", "--noproxy", "*", "--max-time", str(max_time),
                "--cacert", str(self.ca), "-o", output,
                "-w", "\n%{http_code} %{size_download} %{speed_download}"]
        for header in headers:
            argv += ["-H", header]
        done = subprocess.run(argv + [url], capture_output=True, text=True,
                              timeout=max_time + 10)
        body, _, tail = done.stdout.rpartition("\n")
        fields = tail.split()
        if done.returncode != 0 or len(fields) != 3:
            return 0, 0, 0.0, done.stderr.strip()
        return int(fields[0]), int(fields[1]), float(fields[2]), body

    def sanity_check(self):
        """Each target answers 200 with the page; no token gets a 401."""
        bare = f"https://127.0.0.1:{self.upstream_port}{PAGE_PATH}&project=bench"
        code, *_ = self.curl(bare)
        if code != 401:
            raise RuntimeError(f"upstream answered {code} without a token; "
                               "its credential check is not working")
        for target in self.targets.values():
            code, _, _, body = self.curl(target.url, target.headers)
            if code != 200 or body != self.images:
                raise RuntimeError(f"{target.name}: sanity request answered "
                                   f"{code}: {body[:200]}")
        self.rejected_baseline = self.count_lines("rejected.log")
        log("sanity check passed: every target answers 200 with the page")

    # ------------------------------------------------------------ load

    def wrk(self, target, connections, duration):
        threads = min(connections, self.args.wrk_threads)
        argv = ["wrk", "-t", str(threads), "-c", str(connections),
                "-d", f"{duration}s", "--latency", "--timeout", "5s"]
        for header in target.headers:
            argv += ["-H", header]
        done = subprocess.run(argv + [target.url], capture_output=True,
                              text=True, timeout=duration + 60)
        if done.returncode != 0:
            raise RuntimeError(f"wrk failed: {done.stderr.strip()}")
        return parse_wrk(done.stdout)

    def measure(self, target, connections, duration):
        target.refresh_pids()
        self.upstream.refresh_pids()
        accepts = self.upstream_status()
        cpu_before = cpu_seconds(target.pids)
        up_before = cpu_seconds(self.upstream.pids)
        with RssSampler(target.pids) as rss:
            stats = self.wrk(target, connections, duration)
        requests = max(stats["requests"], 1)
        stats.update(
            target=target.name, connections=connections,
            cpu_us_per_req=(cpu_seconds(target.pids) - cpu_before)
            * 1e6 / requests if target.pids else None,
            upstream_cpu_us_per_req=(cpu_seconds(self.upstream.pids)
                                     - up_before) * 1e6 / requests,
            upstream_conns=self.upstream_status() - accepts,
            max_rss_kib=rss.max_kib if target.pids else None)
        log(f"{target.name:>10} c={connections:<3} {stats['rps']:>9.0f} req/s "
            f"p99 {stats['p99_ms']:.2f} ms errors {stats['errors']}")
        return stats

    def load_runs(self):
        names = list(self.targets)
        for target in self.targets.values():
            self.wrk(target, 16, self.args.warmup)
        for round_index in range(self.args.rounds):
            for level, connections in enumerate(self.args.connections):
                shift = (round_index + level) % len(names)
                for name in names[shift:] + names[:shift]:
                    result = self.measure(self.targets[name], connections,
                                          self.args.duration)
                    result["round"] = round_index
                    self.results["load"].append(result)

    # -------------------------------------------------------- download

    def download(self, target):
        url = target.url.replace(PAGE_PATH, "/api/v1/download")
        if target.name == "direct":
            url = (f"https://127.0.0.1:{self.upstream_port}/api/v1/download"
                   "?project=bench")
        target.refresh_pids()
        cpu_before = cpu_seconds(target.pids)
        with RssSampler(target.pids) as rss:
            code, size, speed, detail = self.curl(url, target.headers,
                                                  output="/dev/null",
                                                  max_time=300)
        ok = code == 200 and size == DOWNLOAD_BYTES
        result = {"target": target.name, "ok": ok, "code": code, "bytes": size,
                  "mb_per_s": speed / 1e6,
                  "cpu_s": cpu_seconds(target.pids) - cpu_before
                  if target.pids else None,
                  "rss_start_kib": rss.start_kib if target.pids else None,
                  "rss_growth_kib": rss.max_kib - rss.start_kib
                  if target.pids else None}
        log(f"{target.name:>10} download {speed / 1e6:8.1f} MB/s "
            f"{'ok' if ok else 'FAILED: ' + str(detail)[:200]}")
        return result

    def download_runs(self):
        names = list(self.targets)
        for round_index in range(self.args.download_rounds):
            shift = round_index % len(names)
            for name in names[shift:] + names[:shift]:
                self.results["download"].append(
                    self.download(self.targets[name]))

    # --------------------------------------------------------- refresh

    def refresh_run(self):
        """pcce-proxy with a short token lifetime under steady load."""
        lifetime = self.args.refresh_lifetime
        target = self.start_pcce("pcce-proxy-refresh", lifetime)
        code, _, _, body = self.curl(target.url)
        if code != 200:
            raise RuntimeError(f"refresh proxy answered {code}: {body[:200]}")
        logins_before = self.count_lines("logins.log")
        rejected_before = self.count_lines("rejected.log")
        duration = self.args.refresh_duration
        log(f"refresh run: {duration}s at 16 connections, token_lifetime "
            f"{lifetime}")
        stats = self.wrk(target, 16, duration)
        half_life = parse_duration(lifetime) / 2
        proxy_log = target.log_path.read_text(errors="replace")
        self.results["refresh"] = {
            "duration_s": duration, "lifetime": lifetime,
            "requests": stats["requests"], "rps": stats["rps"],
            "errors": stats["errors"], "p99_ms": stats["p99_ms"],
            "max_ms": stats["max_ms"],
            "logins": self.count_lines("logins.log") - logins_before,
            "expected_logins": int(duration // half_life),
            "upstream_rejected": self.count_lines("rejected.log")
            - rejected_before,
            "proxy_warnings": len(re.findall(r"\b(WARN|ERROR)\b", proxy_log))}
        self.procs.stop(target.proc)

    # ------------------------------------------------------------- run

    def run(self):
        started = time.monotonic()
        try:
            self.start_upstream()
            if "direct" not in self.args.targets:
                self.targets.pop("direct")
            if "nginx" in self.args.targets:
                self.start_nginx()
            if "haproxy" in self.args.targets:
                self.start_haproxy()
            if "pcce-proxy" in self.args.targets:
                self.targets["pcce-proxy"] = self.start_pcce()
            self.sanity_check()
            self.load_runs()
            self.download_runs()
            if "pcce-proxy" in self.args.targets and self.args.refresh_duration:
                self.refresh_run()
            self.results["upstream_rejected"] = (
                self.count_lines("rejected.log") - self.rejected_baseline)
            for target in self.targets.values():
                target.refresh_pids()
                target.peak_kib = memory_kib(target.pids, "VmHWM")
        finally:
            self.procs.stop_all()
            if self.args.keep:
                log(f"kept logs and configs in {self.work}")
            else:
                shutil.rmtree(self.work, ignore_errors=True)
        self.results["elapsed_s"] = time.monotonic() - started
        return self.results


# -------------------------------------------------------------- wrk output


TIME_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def to_ms(text):
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    return float(match.group(1)) * TIME_UNITS[match.group(2)]


def parse_wrk(out):
    """Requests, rate, latency percentiles and errors from wrk --latency."""
    def find(pattern, default=None):
        match = re.search(pattern, out, re.M)
        if match is None and default is None:
            raise RuntimeError(f"unexpected wrk output:\n{out}")
        return match.groups() if match else default

    (requests,) = find(r"^\s*(\d+) requests in")
    (rps,) = find(r"^Requests/sec:\s+([\d.]+)")
    (p50,) = find(r"^\s+50%\s+(\S+)")
    (p99,) = find(r"^\s+99%\s+(\S+)")
    (max_latency,) = find(r"^\s+Latency\s+\S+\s+\S+\s+(\S+)")
    (non_2xx,) = find(r"Non-2xx or 3xx responses: (\d+)", ("0",))
    sockets = find(r"Socket errors: connect (\d+), read (\d+), "
                   r"write (\d+), timeout (\d+)", ("0", "0", "0", "0"))
    return {"requests": int(requests), "rps": float(rps),
            "p50_ms": to_ms(p50), "p99_ms": to_ms(p99),
            "max_ms": to_ms(max_latency), "non_2xx": int(non_2xx),
            "socket_errors": sum(int(n) for n in sockets),
            "errors": int(non_2xx) + sum(int(n) for n in sockets)}


# ------------------------------------------------------------------ report


def version_of(argv):
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unavailable"
    match = re.search(r"\d+\.\d+[\w.+~-]*", done.stdout + done.stderr)
    return match.group(0) if match else "unknown"


def proxy_commit():
    try:
        commit = run_quiet(["git", "-C", REPO_DIR, "rev-parse", "--short",
                            "HEAD"]).strip()
        dirty = run_quiet(["git", "-C", REPO_DIR, "status", "--porcelain",
                           "--", "src", "Cargo.toml", "Cargo.lock"]).strip()
        return commit + (" (with uncommitted changes)" if dirty else "")
    except (RuntimeError, OSError):
        return "unknown"


def median_of(rows, key):
    values = [row[key] for row in rows if row.get(key) is not None]
    return statistics.median(values) if values else None


def ratio(value, base):
    """'1.23×' of value to base; blank where either is missing."""
    if value is None or not base:
        return ""
    return f" ({value / base:.2f}×)"


def fmt(value, spec):
    return "n/a" if value is None else format(value, spec)


def load_table(results, order):
    lines = ["| conns | target | req/s | p50 ms | p99 ms | errors "
             "| proxy CPU µs/req | upstream CPU µs/req | upstream conns "
             "| max RSS MiB |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    levels = sorted({row["connections"] for row in results["load"]})
    for connections in levels:
        cells = {}
        for name in order:
            rows = [r for r in results["load"]
                    if r["target"] == name and r["connections"] == connections]
            if rows:
                cells[name] = {key: median_of(rows, key) for key in
                               ("rps", "p50_ms", "p99_ms", "cpu_us_per_req",
                                "upstream_cpu_us_per_req", "upstream_conns",
                                "max_rss_kib")}
                cells[name]["errors"] = sum(r["errors"] for r in rows)
        base = cells.get(BASELINE, {})
        for name, cell in cells.items():
            rss = cell["max_rss_kib"] / 1024 if cell["max_rss_kib"] else None
            base_rss = (base.get("max_rss_kib") or 0) / 1024 or None
            lines.append(
                f"| {connections} | {name} "
                f"| {cell['rps']:,.0f}{ratio(cell['rps'], base.get('rps'))} "
                f"| {cell['p50_ms']:.3f}{ratio(cell['p50_ms'], base.get('p50_ms'))} "
                f"| {cell['p99_ms']:.3f}{ratio(cell['p99_ms'], base.get('p99_ms'))} "
                f"| {cell['errors']} "
                f"| {fmt(cell['cpu_us_per_req'], '.1f')}"
                f"{ratio(cell['cpu_us_per_req'], base.get('cpu_us_per_req'))} "
                f"| {cell['upstream_cpu_us_per_req']:.1f}"
                f"{ratio(cell['upstream_cpu_us_per_req'], base.get('upstream_cpu_us_per_req'))} "
                f"| {cell['upstream_conns']:.0f} "
                f"| {fmt(rss, '.1f')}{ratio(rss, base_rss)} |")
    return lines


def download_table(results, order):
    lines = ["| target | MB/s | proxy CPU s/GiB | RSS at start MiB "
             "| RSS growth MiB (max − start) | ok |",
             "|---|---:|---:|---:|---:|---|"]
    cells = {}
    for name in order:
        rows = [r for r in results["download"] if r["target"] == name]
        if rows:
            cells[name] = {key: median_of(rows, key) for key in
                           ("mb_per_s", "cpu_s", "rss_start_kib",
                            "rss_growth_kib")}
            cells[name]["ok"] = all(r["ok"] for r in rows)
            cells[name]["max_growth"] = max(
                (r["rss_growth_kib"] for r in rows
                 if r["rss_growth_kib"] is not None), default=None)
    base = cells.get(BASELINE, {})
    for name, cell in cells.items():
        mib = (lambda kib: None if kib is None else kib / 1024)
        lines.append(
            f"| {name} | {cell['mb_per_s']:.0f}"
            f"{ratio(cell['mb_per_s'], base.get('mb_per_s'))} "
            f"| {fmt(cell['cpu_s'], '.2f')}{ratio(cell['cpu_s'], base.get('cpu_s'))} "
            f"| {fmt(mib(cell['rss_start_kib']), '.1f')} "
            f"| {fmt(mib(cell['max_growth']), '.1f')} "
            f"| {'yes' if cell['ok'] else 'NO'} |")
    return lines


def refresh_section(refresh):
    if refresh is None:
        return ["Not run (pcce-proxy not among the targets, or disabled)."]
    verdict = ("PASS" if refresh["errors"] == 0
               and refresh["upstream_rejected"] == 0
               and refresh["logins"] >= max(1, refresh["expected_logins"] - 1)
               else "FAIL")
    return [
        f"pcce-proxy with `auth.token_lifetime = \"{refresh['lifetime']}\"` "
        f"(refresh due at half-life) under {refresh['duration_s']} s of load "
        "at 16 connections:",
        "",
        "| requests | req/s | errors | p99 ms | max ms | logins seen "
        "| logins expected (≈) | 401s at upstream | proxy WARN/ERROR lines "
        "| verdict |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        f"| {refresh['requests']:,} | {refresh['rps']:,.0f} "
        f"| {refresh['errors']} | {refresh['p99_ms']:.3f} "
        f"| {refresh['max_ms']:.1f} | {refresh['logins']} "
        f"| {refresh['expected_logins']} | {refresh['upstream_rejected']} "
        f"| {refresh['proxy_warnings']} | {verdict} |"]


def report(results, args, bench):
    order = [n for n in ("direct", "nginx", "haproxy", "pcce-proxy")
             if n in bench.targets]
    versions = {
        "wrk": version_of(["wrk", "--version"]),
        "nginx": version_of(["nginx", "-v"]),
        "haproxy": version_of(["haproxy", "-v"]),
        "curl": version_of(["curl", "--version"]),
        "openssl": version_of(["openssl", "version"]),
        "python": platform.python_version()}
    if "pcce-proxy" in bench.targets:
        versions["pcce-proxy"] = (version_of([args.proxy_bin, "--version"])
                                  + f", commit {proxy_commit()}")
    peaks = ", ".join(f"{name} {bench.targets[name].peak_kib / 1024:.1f} MiB"
                      for name in order if bench.targets[name].pids)
    lines = [
        "# pcce-proxy benchmark",
        "",
        f"- date: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}",
        f"- machine: {os.cpu_count()} cores (nproc), kernel "
        f"{platform.release()}",
        f"- mode: {'quick' if args.quick else 'full'}: {args.rounds} round(s) "
        f"of {args.duration} s per target and level, median shown; "
        f"{args.download_rounds} download(s) of 1 GiB per target; "
        f"access logs {'on' if args.access_log else 'off'}; "
        f"upstream offers HTTP/2: {'yes' if args.upstream_http2 else 'no'}; "
        f"pcce-proxy console.http_version = {args.http_version}; "
        f"whole run {results['elapsed_s']:.0f} s",
        *[f"- {name}: {text}" for name, text in versions.items()],
        "",
        f"`{PAGE_PATH}` (a {len(bench.images)}-byte JSON answer) at each "
        f"concurrency; ratios in brackets are to {BASELINE}. `direct` is wrk "
        "straight to the TLS upstream (no proxy: the floor). Errors are "
        "non-2xx answers plus socket errors, summed over rounds. CPU is user+sys "
        "time of the proxy's processes per request served; upstream conns "
        "counts the TLS connections the upstream accepted during the "
        "measurement (a pool that keeps its connections opens few).",
        "",
        *load_table(results, order),
        "",
        "## 1 GiB download through each",
        "",
        *download_table(results, order),
        "",
        "## Token refresh under load",
        "",
        *refresh_section(results["refresh"]),
        "",
        f"Peak resident memory over the whole run (VmHWM, summed over each "
        f"proxy's processes): {peaks or 'n/a'}.",
        f"Non-2xx answers logged by the upstream after the sanity check: "
        f"{results.get('upstream_rejected', 'n/a')}.",
        ""]
    return "\n".join(lines)


# -------------------------------------------------------------------- main


def default_proxy_bin():
    if os.environ.get("PCCE_PROXY_BIN"):
        return os.environ["PCCE_PROXY_BIN"]
    target_dir = os.environ.get("CARGO_TARGET_DIR", REPO_DIR / "target")
    return str(Path(target_dir) / "release" / "pcce-proxy")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 3 s per run, one round")
    parser.add_argument("--duration", type=int,
                        help="seconds per wrk run (default 10, quick 3)")
    parser.add_argument("--rounds", type=int,
                        help="rounds over all targets (default 3, quick 1)")
    parser.add_argument("--connections", default="1,16,256",
                        help="concurrency levels (default 1,16,256)")
    parser.add_argument("--targets", default="direct,nginx,haproxy,pcce-proxy",
                        help="comma-separated subset of "
                             "direct,nginx,haproxy,pcce-proxy")
    parser.add_argument("--proxy-bin", default=default_proxy_bin(),
                        help="pcce-proxy release binary "
                             "(default $PCCE_PROXY_BIN or "
                             "$CARGO_TARGET_DIR/release/pcce-proxy)")
    parser.add_argument("--refresh-lifetime", default="20s",
                        help="auth.token_lifetime for the refresh run")
    parser.add_argument("--refresh-duration", type=int,
                        help="seconds of the refresh run, 0 skips it "
                             "(default 65, quick 25)")
    parser.add_argument("--no-access-log", dest="access_log",
                        action="store_false",
                        help="no per-request log lines in any proxy "
                             "(pcce-proxy at log.level = warn)")
    parser.add_argument("--upstream-http2", action="store_true",
                        help="the stand-in Console offers HTTP/2 (ALPN h2) "
                             "besides HTTP/1.1")
    parser.add_argument("--http-version", default="auto",
                        choices=["auto", "http1", "http2"],
                        help="console.http_version of pcce-proxy")
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--output", default=str(BENCH_DIR / "results"
                                                / "latest.md"))
    parser.add_argument("--keep", action="store_true",
                        help="keep the temp dir with configs and logs")
    args = parser.parse_args(argv)
    args.duration = args.duration or (3 if args.quick else 10)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.download_rounds = 1 if args.quick else 2
    args.warmup = 1 if args.quick else 2
    if args.refresh_duration is None:
        args.refresh_duration = 25 if args.quick else 65
    args.connections = [int(n) for n in args.connections.split(",")]
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    return args


def check_tools(args):
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        sys.exit(f"bench: missing {', '.join(missing)}; run bench/run.sh, "
                 "which installs them")
    if "pcce-proxy" in args.targets and not os.access(args.proxy_bin, os.X_OK):
        log(f"no pcce-proxy binary at {args.proxy_bin}; leaving it out "
            "(build it with cargo build --release, or use bench/run.sh)")
        args.targets.remove("pcce-proxy")


def keep_traffic_on_loopback():
    """No child (curl, urllib, pcce-proxy's egress) may follow a proxy
    variable off this machine: everything here talks to 127.0.0.1 only."""
    for name in list(os.environ):
        if name.lower() in ("http_proxy", "https_proxy", "all_proxy"):
            del os.environ[name]
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    check_tools(args)
    keep_traffic_on_loopback()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    bench = Bench(args)
    results = bench.run()
    text = report(results, args, bench)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    output.with_suffix(".json").write_text(json.dumps(results, indent=2,
                                                      default=str))
    print(text)
    log(f"report written to {output}")
    failed = any(row["errors"] for row in results["load"]) or not all(
        row["ok"] for row in results["download"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
