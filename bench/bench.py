#!/usr/bin/env python3
"""The engine of bench/run.sh: runs every benchmark of issue #9 in one invocation, on
one machine, with the comparison runs beside them, and prints one table.

Rows (each a separate process start, so counters and peak RSS are per row):

  decode      the collector on its null sink (--discard-flows: decoded, counted and
              dropped), the collector on its stdout sink (JSON lines -> /dev/null) and
              nfcapd, each fed NetFlow v9 by flow-loadgen at doubling rates until a
              step loses flows (a lossy step is run a second time before it counts)
              or the sender cannot go faster; then three bisection steps (one in
              quick mode) between the last zero-loss and the first lossy rate; the
              highest zero-loss rate of each, and a flat-out burst. Loss = records
              sent - flows the collector published (nfcapd: flows it stored). The
              ratio of target 1 is the null sink's.
  jetstream   the minimal async-nats publisher (publish/examples/minimal_publisher.rs)
              and the collector publishing one FlowMessage per message with acks, into
              the same nats-server, offered 1.1x the publisher's rate; acked flows/s
              from the collector's counters (first to last change), the stream's
              message count from the server's /jsz.
  latency     the publish-latency histogram of the collector at half its acked rate.
  batched     publish_framing "delimited" with batch_size 1000 (up to 1000 FlowMessages
              per NATS message), when the collector accepts it; each step's note splits
              CPU per flow between the collector, nats-server and the sender.
  memory      peak RSS (VmHWM) after N exporters each sent templates and data.
  reuseport   1, 2 and 4 sockets on one port, 1 and 64 exporters, flat out, on the null
              sink: "not supported yet" unless the collector accepts it.

CPU is utime+stime of the measured process from /proc/PID/stat over the row (start-up
excluded), also as a share of one core and as flows per CPU-second. Figures only:
nothing is asserted; the target column says whether the issue's target was met.
"""

import argparse
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

CLK_TCK = os.sysconf("SC_CLK_TCK")
STARTED = []  # every process this script started, killed at exit


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port(kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_text(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


# ---------------------------------------------------------------- processes


class Proc:
    """A started process, its log file, and its /proc figures."""

    def __init__(self, argv, log_path, stdout_to_log=False, env=None):
        """Starts `argv` with stderr (and stdout when `stdout_to_log`, else /dev/null)
        written to `log_path`."""
        self.log_path = log_path
        self.log_file = open(log_path, "w")
        out = self.log_file if stdout_to_log else subprocess.DEVNULL
        self.popen = subprocess.Popen(argv, stdout=out, stderr=self.log_file, env=env)
        STARTED.append(self)
        self.pid = self.popen.pid

    def alive(self):
        return self.popen.poll() is None

    def log_text(self):
        return read_text(self.log_path)

    def wait_for_log(self, pattern, timeout):
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while time.monotonic() < deadline:
            if regex.search(self.log_text()):
                return True
            if not self.alive():
                return False
            time.sleep(0.05)
        return False

    def cpu_seconds(self):
        stat = read_text(f"/proc/{self.pid}/stat")
        if not stat:
            return None
        fields = stat[stat.rfind(")") + 2 :].split()
        # fields[0] is field 3 (state): utime is field 14, stime field 15.
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def status_kib(self, key):
        m = re.search(rf"^{key}:\s+(\d+) kB", read_text(f"/proc/{self.pid}/status"), re.M)
        return int(m.group(1)) if m else None

    def stop(self, timeout=30):
        """SIGTERM, then SIGKILL after `timeout` s; returns the exit code."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                log(f"pid {self.pid} did not stop in {timeout}s; killing it")
                self.popen.kill()
                self.popen.wait(5)
        self.log_file.close()
        return self.popen.returncode


def kill_everything():
    for p in STARTED:
        if p.popen.poll() is None:
            p.popen.kill()
            try:
                p.popen.wait(5)
            except subprocess.TimeoutExpired:
                pass


# ---------------------------------------------------------------- metrics

METRIC_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s+(\S+)$")


def scrape(addr, timeout=2):
    """[(name, {label: value}, float)] from /metrics, or [] when unreachable."""
    try:
        with urllib.request.urlopen(f"http://{addr}/metrics", timeout=timeout) as r:
            text = r.read().decode()
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        m = METRIC_LINE.match(line)
        if not m or line.startswith("#"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(3) or ""))
        try:
            out.append((m.group(1), labels, float(m.group(4))))
        except ValueError:
            continue
    return out


def metric_sum(samples, name, **labels):
    return sum(
        v
        for n, ls, v in samples
        if n == name and all(ls.get(k) == want for k, want in labels.items())
    )


def percentile_bound(samples, q):
    """The upper bound (s) of the latency bucket holding quantile q, or None."""
    buckets = sorted(
        (float(ls["le"]), v)
        for n, ls, v in samples
        if n == "flow_collector_flow_latency_seconds_bucket"
    )
    merged = {}
    for le, v in buckets:  # several subjects: add their cumulative counts
        merged[le] = merged.get(le, 0) + v
    if not merged:
        return None
    total = max(merged.values())
    if total <= 0:
        return None
    for le in sorted(merged):
        if merged[le] >= q * total:
            return le
    return float("inf")


def jsz_stream_messages(monitor_addr, stream):
    try:
        url = f"http://{monitor_addr}/jsz?accounts=true&streams=true"
        with urllib.request.urlopen(url, timeout=3) as r:
            data = json.load(r)
    except (OSError, ValueError):
        return None
    for account in data.get("account_details", []) or []:
        for s in account.get("stream_detail", []) or []:
            if s.get("name") == stream:
                return s.get("state", {}).get("messages")
    return None


def delete_stream(nats_url, stream):
    """Deletes a JetStream stream through the NATS protocol (a request on
    $JS.API.STREAM.DELETE.<stream>), so each run's stream gives its disk and its
    reservation back: nats-server caps the storage all streams may reserve at a share of
    the free disk, and a full run makes a dozen 1 GiB streams. Returns whether the server
    said so; a failure only leaves the stream behind."""
    host, port = nats_url.rsplit("//", 1)[-1].rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=5) as conn:
            conn.recv(4096)  # INFO
            request = (b'CONNECT {"verbose":false,"pedantic":false}\r\n'
                       b"SUB _INBOX.bench.delete 1\r\n"
                       + f"PUB $JS.API.STREAM.DELETE.{stream} _INBOX.bench.delete 0\r\n\r\n".encode()
                       + b"PING\r\n")
            conn.sendall(request)
            reply = b""
            deadline = time.monotonic() + 5
            while b'"success"' not in reply and b"error" not in reply and time.monotonic() < deadline:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                reply += chunk
            return b'"success":true' in reply
    except OSError:
        return False


# ---------------------------------------------------------------- result rows


class Row:
    def __init__(self, target, run, **kw):
        self.target = target
        self.run = run
        self.offered = kw.get("offered")  # flows/s actually sent
        self.achieved = kw.get("achieved")  # flows/s handled
        self.loss = kw.get("loss")  # percent
        self.cpu = kw.get("cpu")  # seconds
        self.wall = kw.get("wall")  # seconds
        self.flows = kw.get("flows")  # flows handled in the row
        self.rss_kib = kw.get("rss_kib")
        self.p50 = kw.get("p50")
        self.p99 = kw.get("p99")
        self.note = kw.get("note", "")

    def as_dict(self):
        return dict(self.__dict__)


def fmt_rate(v):
    if v is None:
        return "-"
    if v >= 1e6:
        return f"{v / 1e6:.2f}M"
    if v >= 1e4:
        return f"{v / 1e3:.0f}k"
    return f"{v:.0f}"


def fmt_latency(v):
    if v is None:
        return "-"
    if v == float("inf"):
        return ">16s"
    return f"<={v * 1e3:g}ms"


def fmt_cpu(row):
    if row.cpu is None:
        return "-"
    text = f"{row.cpu:.2f}s"
    if row.wall:
        text += f" {100 * row.cpu / row.wall:.0f}%"
    return text


def fmt_per_cpu(row):
    if not row.cpu or not row.flows:
        return "-"
    return fmt_rate(row.flows / row.cpu)


def cpu_split(flows, parts):
    """Where the machine's CPU went per flow: `parts` are (name, CPU seconds) of the
    processes sharing the cores (receiver, nats-server, sender)."""
    if not flows or any(secs is None for _, secs in parts):
        return ""
    us = lambda secs: f"{secs / flows * 1e6:.2f}"
    each = ", ".join(f"{name} {us(secs)}" for name, secs in parts)
    return f"CPU us/flow: {each}, all {us(sum(secs for _, secs in parts))}"


def print_table(rows, out=sys.stdout):
    head = ["target", "run", "offered f/s", "achieved f/s", "loss %", "CPU (s, %core)",
            "flows/CPU-s", "peak RSS", "p50", "p99", "note"]
    body = []
    for r in rows:
        body.append([
            r.target,
            r.run,
            fmt_rate(r.offered),
            fmt_rate(r.achieved),
            "-" if r.loss is None else f"{r.loss:.2f}",
            fmt_cpu(r),
            fmt_per_cpu(r),
            "-" if r.rss_kib is None else f"{r.rss_kib / 1024:.1f} MiB",
            fmt_latency(r.p50),
            fmt_latency(r.p99),
            r.note,
        ])
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h)
              for i, h in enumerate(head)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"
    print(line(head), file=out)
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|", file=out)
    for b in body:
        print(line(b), file=out)


# ---------------------------------------------------------------- the bench


def slug(name):
    """`name` as a file name part."""
    return re.sub(r"[^\w.-]+", "-", name)


NULL_SINK = "collector null sink"
STDOUT_SINK = "collector stdout JSON"
# The decode search stops doubling here whatever happens (far above any loopback sender).
MAX_RATE = 51_200_000


class Bench:
    def __init__(self, args):
        self.args = args
        self.bin = args.bin_dir
        self.work = tempfile.mkdtemp(prefix="flow-bench-")
        self.rows = []
        self.verdicts = []
        self.rcvbuf = args.rcvbuf
        quick = args.quick
        self.step_secs = args.step_secs or (2.0 if quick else 8.0)
        self.js_secs = args.js_secs or (3.0 if quick else 10.0)
        # Doubling from the first rate until a step loses flows or the sender falls
        # short (no cap, so neither contender's limit is cut off by the ladder), then
        # bisection steps between the last zero-loss and the first lossy rate.
        self.first_rate = 50_000 if quick else 25_000
        self.bisections = 1 if quick else 3
        self.memory_exporters = [1, 100, 1000, 10000]
        self.counter = 0

    def path(self, name):
        self.counter += 1
        return os.path.join(self.work, f"{self.counter:02d}-{name}")

    # -- the sender

    def loadgen(self, port, *extra):
        argv = [os.path.join(self.bin, "flow-loadgen"), "--to", f"127.0.0.1:{port}", "--json",
                *[str(a) for a in extra]]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        res = subprocess.run(argv, capture_output=True, text=True, timeout=600)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if res.returncode != 0:
            raise RuntimeError(f"flow-loadgen failed: {res.stderr.strip()}")
        sent = json.loads(res.stdout.strip().splitlines()[-1])
        # The sender's CPU: on loopback it includes the kernel's delivery of each
        # datagram into the receiver's socket.
        sent["cpu_secs"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return sent

    # -- the collector

    def collector_config(self, port, metrics_port, **extra):
        listener = {"protocol": "netflow", "listen_addr": f"127.0.0.1:{port}",
                    "buffer_size": self.rcvbuf}
        listener.update(extra.pop("listener", {}))
        cfg = {"metrics_addr": f"127.0.0.1:{metrics_port}", "listeners": [listener]}
        cfg.update(extra)
        return cfg

    def start_collector(self, cfg, name, flags=()):
        cfg_path = self.path(f"{name}.json")
        with open(cfg_path, "w") as f:
            json.dump(cfg, f)
        env = dict(os.environ, RUST_LOG="info", NO_COLOR="1")
        proc = Proc([os.path.join(self.bin, "serviceradar-flow-collector"), "--config", cfg_path,
                     *flags], self.path(f"{name}.log"), env=env)
        ready = "JetStream stream ready" if "nats_url" in cfg else "listener bound"
        if not proc.wait_for_log(ready, 30):
            proc.stop(5)
            text = proc.log_text()
            errors = [line for line in text.splitlines() if " ERROR " in line]
            raise RuntimeError(f"collector did not start ({name}): "
                               + ("; ".join(errors)[-2000:] if errors else text[-2000:]))
        return proc

    def config_accepted(self, cfg):
        cfg_path = self.path("check.json")
        with open(cfg_path, "w") as f:
            json.dump(cfg, f)
        res = subprocess.run([os.path.join(self.bin, "serviceradar-flow-collector"),
                              "--config", cfg_path, "--check-config"],
                             capture_output=True, text=True, timeout=30)
        return res.returncode == 0

    @staticmethod
    def stopped_counters(proc):
        line = next((l for l in reversed(proc.log_text().splitlines())
                     if "Collector stopped" in l), "")
        return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}

    def wait_idle(self, metrics_addr, limit):
        """Polls /metrics until datagrams received and flows published stop moving and
        nothing is in flight (or `limit` s pass). Returns (samples, [(t, published)])."""
        deadline = time.monotonic() + limit
        last, steady, series, samples = None, 0, [], []
        while time.monotonic() < deadline:
            samples = scrape(metrics_addr)
            now = (metric_sum(samples, "flow_collector_datagrams_received_total"),
                   metric_sum(samples, "flow_collector_flows_published_total"),
                   metric_sum(samples, "flow_collector_datagrams_in_flight"))
            series.append((time.monotonic(), now[1]))
            steady = steady + 1 if now == last and now[2] == 0 else 0
            if steady >= 4:
                break
            last = now
            time.sleep(0.25)
        return samples, series

    def collector_decode_run(self, rate, secs, name, flags=()):
        """The collector on its stdout sink (to /dev/null; `flags` may choose another)
        fed v9 at `rate` flows/s (None: flat out). Returns a result dict."""
        port, mport = free_port(socket.SOCK_DGRAM), free_port()
        proc = self.start_collector(self.collector_config(port, mport), name, flags)
        try:
            cpu0, t0 = proc.cpu_seconds(), time.monotonic()
            rate_args = ["--flows-per-sec", rate] if rate else ["--rate", 0]
            sent = self.loadgen(port, "--protocol", "v9", "--exporters", self.args.exporters,
                                "--duration", secs, *rate_args)
            samples, _ = self.wait_idle(f"127.0.0.1:{mport}", 20)
            wall = time.monotonic() - t0
            cpu, rss = proc.cpu_seconds() - cpu0, proc.status_kib("VmHWM")
            kernel = metric_sum(samples, "flow_collector_datagrams_dropped_total", reason="kernel")
            channel = metric_sum(samples, "flow_collector_datagrams_dropped_total",
                                 reason="channel_full")
        finally:
            proc.stop()
        c = self.stopped_counters(proc)
        written = c.get("flows_published", 0)
        return dict(sent=sent, flows=written, decoded=c.get("flows_decoded", 0), cpu=cpu,
                    wall=wall, rss=rss, note_drops=f"kernel drops {kernel:.0f}, channel_full {channel:.0f}")

    # -- nfcapd

    def nfcapd_run(self, rate, secs, name):
        port = free_port(socket.SOCK_DGRAM)
        flowdir = self.path(f"{name}-flows")
        os.makedirs(flowdir)
        dir_flag = "-w" if "-w flowdir" in self.nfcapd_help else "-l"
        proc = Proc(["nfcapd", "-b", "127.0.0.1", "-p", str(port), dir_flag, flowdir,
                     "-B", str(self.rcvbuf), "-t", "3600"],
                    self.path(f"{name}.log"), stdout_to_log=True)
        try:
            if not proc.wait_for_log(r"Startup|Bound to", 10):
                raise RuntimeError(f"nfcapd did not start: {proc.log_text()[-1000:]}")
            time.sleep(0.2)
            cpu0, t0 = proc.cpu_seconds(), time.monotonic()
            rate_args = ["--flows-per-sec", rate] if rate else ["--rate", 0]
            sent = self.loadgen(port, "--protocol", "v9", "--exporters", self.args.exporters,
                                "--duration", secs, *rate_args)
            time.sleep(1.0)  # let it read what is queued
            wall = time.monotonic() - t0
            cpu, rss = proc.cpu_seconds() - cpu0, proc.status_kib("VmHWM")
        finally:
            proc.stop()
        # Its final statistics line: "Ident: 'none' Flows: N, Packets: ..., Sequence Errors: ..."
        m = re.search(r"Ident: .*?Flows: (\d+).*?Sequence Errors: (\d+)", proc.log_text())
        if m:
            stored, seq_errors = int(m.group(1)), int(m.group(2))
        else:
            res = subprocess.run(["nfdump", "-R", flowdir, "-I"], capture_output=True, text=True,
                                 timeout=120)
            found = re.search(r"^Flows: (\d+)", res.stdout, re.M)
            stored, seq_errors = (int(found.group(1)) if found else 0), None
        shutil.rmtree(flowdir, ignore_errors=True)
        return dict(sent=sent, flows=stored, decoded=stored, cpu=cpu, wall=wall, rss=rss,
                    note_drops=f"sequence errors {seq_errors}")

    # -- the decode path

    def step_row(self, who, res, label, offered_target=None):
        sent = res["sent"]
        records = sent["records"]
        loss = 100.0 * (records - res["flows"]) / records if records else None
        note = "; ".join(filter(None, [res["note_drops"], cpu_split(
            res["flows"], [(who, res["cpu"]), ("sender", sent["cpu_secs"])])]))
        if offered_target and sent["records_per_sec"] < 0.95 * offered_target:
            note += f"; sender reached only {fmt_rate(sent['records_per_sec'])} of {fmt_rate(offered_target)}"
        return Row("1 decode", f"{who} {label}", offered=sent["records_per_sec"],
                   achieved=res["flows"] / sent["elapsed_secs"] if sent["elapsed_secs"] else None,
                   loss=loss, cpu=res["cpu"], wall=res["wall"], flows=res["flows"],
                   rss_kib=res["rss"], note=note)

    def step(self, who, run, rate):
        """One step at `rate`; a lossy step is tried once more (a shared machine
        deschedules receivers now and then), and the better of the two kept."""
        row = None
        for attempt in (1, 2):
            res = run(rate, self.step_secs, f"{slug(who)}-{rate}-{attempt}")
            row = self.step_row(who, res, f"@{fmt_rate(rate)}", rate)
            log(f"decode {who} offered {fmt_rate(row.offered)} flows/s: loss {row.loss:.3f}%"
                + (" (retry)" if attempt == 2 else ""))
            if row.loss == 0:
                if attempt == 2:
                    row.note += "; zero loss on the second try"
                return row
        return row

    def search(self, who, run):
        """Doubling rates until a step loses flows (twice) or the sender cannot go
        faster, then `self.bisections` bisection steps. Returns (best zero-loss row or
        None, lowest lossy row or None)."""
        best = bad = None
        rate = self.first_rate
        while rate <= MAX_RATE:
            row = self.step(who, run, rate)
            if row.loss == 0 and row.offered >= 0.95 * rate:
                best = row
                rate *= 2
                continue
            if row.loss == 0:  # the sender could not go faster: no limit found
                best = row
            else:
                bad = row
            break
        else:
            if best:
                best.note += f" (limit not found below {fmt_rate(MAX_RATE)})"
        for _ in range(self.bisections if best and bad else 0):
            mid = int((best.offered + bad.offered) / 2)
            row = self.step(who, run, mid)
            if row.loss == 0:
                best = row
            else:
                bad = row
        return best, bad

    def decode_suite(self):
        results = {}
        def null_sink(rate, secs, name):
            return self.collector_decode_run(rate, secs, name, ["--discard-flows"])
        contenders = [(NULL_SINK, null_sink), (STDOUT_SINK, self.collector_decode_run)]
        if shutil.which("nfcapd"):
            self.nfcapd_help = subprocess.run(["nfcapd", "-h"], capture_output=True,
                                              text=True).stdout
            contenders.append(("nfcapd", self.nfcapd_run))
        else:
            self.rows.append(Row("1 decode", "nfcapd", note="nfcapd not installed (apt-get install nfdump)"))
        for who, run in contenders:
            best, bad = self.search(who, run)
            if best:
                best.run = f"{who} highest zero-loss step"
                if "sender reached only" in best.note:
                    best.note += " (limit not found: sender-bound)"
                self.rows.append(best)
            else:
                self.rows.append(Row("1 decode", f"{who} highest zero-loss step",
                                     note=f"lost flows at {fmt_rate(self.first_rate)}/s already"))
            if bad:
                bad.run = f"{who} first lossy step"
                self.rows.append(bad)
            res = run(None, self.step_secs, f"{slug(who)}-flat")
            flat = self.step_row(who, res, "flat out")
            self.rows.append(flat)
            log(f"decode {who} flat out: offered {fmt_rate(flat.offered)}, loss {flat.loss:.2f}%")
            results[who] = best.offered if best else 0.0
        if results.get("nfcapd"):
            ratio = results[NULL_SINK] / results["nfcapd"]
            self.verdicts.append(
                f"(1) decode, highest zero-loss rate: {NULL_SINK} {fmt_rate(results[NULL_SINK])} "
                f"/ nfcapd {fmt_rate(results['nfcapd'])} flows/s = {ratio:.2f}x "
                f"(target >= 1.5x: {'met' if ratio >= 1.5 else 'NOT met'}); {STDOUT_SINK} "
                f"{fmt_rate(results[STDOUT_SINK])} = {results[STDOUT_SINK] / results['nfcapd']:.2f}x")

    # -- JetStream

    def start_nats(self):
        port, mon = free_port(), free_port()
        store = self.path("nats-store")
        proc = Proc(["nats-server", "-js", "-a", "127.0.0.1", "-p", str(port), "-m", str(mon),
                     "-sd", store], self.path("nats.log"), stdout_to_log=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return proc, f"nats://127.0.0.1:{port}", f"127.0.0.1:{mon}"
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"nats-server did not start: {proc.log_text()[-1000:]}")

    def minimal_publisher(self, url, count):
        exe = os.path.join(self.bin, "examples", "minimal_publisher")
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        res = subprocess.run([exe, "--server", url, "--count", str(count)], capture_output=True,
                             text=True, timeout=300)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        m = re.search(r"acked=(\d+) secs=([\d.]+) acked_per_sec=(\d+)", res.stdout)
        if res.returncode != 0 or not m:
            raise RuntimeError(f"minimal_publisher failed: {res.stderr.strip()}")
        return int(m.group(1)), float(m.group(2)), float(m.group(3)), cpu

    def jetstream_run(self, nats_url, monitor, name, rate, secs, extra=None):
        """The collector into JetStream (its own stream and subject) fed v9 at `rate`
        flows/s for `secs`. Returns figures."""
        port, mport = free_port(socket.SOCK_DGRAM), free_port()
        subject = f"bench.{name}.netflow"
        stream = f"bench_{name}"
        cfg = self.collector_config(port, mport, nats_url=nats_url, stream_name=stream,
                                    stream_subjects=[subject], stream_max_bytes=1 << 30,
                                    listener={"subject": subject}, **(extra or {}))
        proc = self.start_collector(cfg, name)
        try:
            cpu0, t0 = proc.cpu_seconds(), time.monotonic()
            nats_cpu0 = self.nats.cpu_seconds()
            sent = self.loadgen(port, "--protocol", "v9", "--exporters", self.args.exporters,
                                "--duration", secs, "--flows-per-sec", int(rate))
            samples, series = self.wait_idle(f"127.0.0.1:{mport}", 60)
            cpu, rss = proc.cpu_seconds() - cpu0, proc.status_kib("VmHWM")
            nats_cpu = self.nats.cpu_seconds() - nats_cpu0
        finally:
            proc.stop()
        published = metric_sum(samples, "flow_collector_flows_published_total")
        # Acked flows/s from the first to the last change of the published counter.
        series = [(t0, 0.0)] + series
        moving = [t for (t, v), (_, prev) in zip(series[1:], series[:-1]) if v != prev]
        span = (moving[-1] - t0) if moving else None
        achieved = published / span if span else None
        messages = jsz_stream_messages(monitor, stream)
        delete_stream(nats_url, stream)
        return dict(sent=sent, published=published, achieved=achieved, cpu=cpu,
                    nats_cpu=nats_cpu,
                    wall=(moving[-1] - t0) if moving else None, rss=rss, messages=messages,
                    p50=percentile_bound(samples, 0.5), p99=percentile_bound(samples, 0.99),
                    counters=self.stopped_counters(proc))

    def js_row(self, target, run, res, note=""):
        records = res["sent"]["records"]
        loss = 100.0 * (records - res["published"]) / records if records else None
        msgs = res["messages"]
        note = (f"stream holds {msgs} messages; " if msgs is not None else "") + note
        return Row(target, run, offered=res["sent"]["records_per_sec"], achieved=res["achieved"],
                   loss=loss, cpu=res["cpu"], wall=res["wall"], flows=res["published"],
                   rss_kib=res["rss"], p50=res["p50"], p99=res["p99"], note=note.strip("; "))

    def jetstream_suite(self):
        if not shutil.which("nats-server"):
            self.rows.append(Row("2 jetstream", "all", note="nats-server not installed"))
            return
        nats, url, monitor = self.start_nats()
        self.nats = nats
        try:
            count = 100_000 if self.args.quick else 400_000
            acked, secs, minimal, cpu = self.minimal_publisher(url, count)
            self.rows.append(Row("2 jetstream", "minimal async-nats publisher", offered=None,
                                 achieved=minimal, loss=100.0 * (count - acked) / count,
                                 cpu=cpu, wall=secs, flows=acked,
                                 note=f"{acked} acked msgs of 150 B in {secs:.2f}s, 4096 acks in flight, Nats-Msg-Id"))
            log(f"minimal publisher: {minimal:.0f} acked msg/s")
            # Just above the minimal publisher's rate: enough to show whether the
            # collector reaches it, without drowning its decoder (it shares the CPUs
            # with nats-server and the sender) in datagrams it would have to drop.
            offered = max(1.1 * minimal, 20_000)
            res = self.jetstream_run(url, monitor, "msg", offered, self.js_secs)
            row = self.js_row("2 jetstream", "collector, 1 FlowMessage/msg, acked", res,
                              "offered 1.1x the minimal publisher's rate; latency near saturation")
            if row.achieved and row.offered and row.achieved >= 0.95 * row.offered:
                row.note += "; kept up with the offer: the acked rate is a lower bound"
            self.rows.append(row)
            log(f"collector -> JetStream: {fmt_rate(row.achieved)} acked flows/s")
            if row.achieved:
                ratio = row.achieved / minimal
                self.verdicts.append(
                    f"(2) JetStream acked, 1 FlowMessage per message: collector {fmt_rate(row.achieved)} "
                    f"/ minimal publisher {fmt_rate(minimal)} = {ratio:.2f}x (target >= 0.90x: "
                    f"{'met' if ratio >= 0.9 else 'NOT met'})")
                half = max(row.achieved / 2, 5_000)
                res = self.jetstream_run(url, monitor, "lat", half, self.js_secs)
                lat = self.js_row("5 latency", f"collector @50% of acked rate", res,
                                  "datagram receipt -> JetStream ack per flow, bucket bounds")
                self.rows.append(lat)
                self.verdicts.append(
                    f"(5) latency at {fmt_rate(lat.offered)} flows/s: p50 {fmt_latency(lat.p50)}, "
                    f"p99 {fmt_latency(lat.p99)} (each flow's datagram receipt -> JetStream ack; "
                    f"bucket resolution, doubling from 0.5 ms)")
            self.batched(url, monitor)
        finally:
            nats.stop()

    def batched(self, url, monitor):
        # batch_size 1000: with delimited framing a batch is one NATS message, and
        # JetStream's CPU goes mostly per message (README: publish_framing).
        extra = {"publish_framing": "delimited", "batch_size": 1000}
        probe = self.collector_config(9, 9, nats_url=url, **extra)
        if not self.config_accepted(probe):
            self.rows.append(Row("3 batched", "collector, many FlowMessages/msg",
                                 note="not supported yet (publish_framing \"delimited\" refused by --check-config)"))
            return
        # The highest of these rates held with zero loss (a lossy step is tried once
        # more, as in the decode search), then one step past it for the acked ceiling.
        best = over = None
        for rate in (800_000, 1_000_000, 1_200_000) if self.args.quick else (600_000, 800_000, 1_000_000, 1_200_000, 1_500_000):
            for attempt in (1, 2):
                res = self.jetstream_run(url, monitor, f"batched{rate // 1000}k{attempt}", rate,
                                         self.js_secs, extra)
                split = cpu_split(res["published"], [("collector", res["cpu"]),
                                                     ("nats-server", res["nats_cpu"]),
                                                     ("sender", res["sent"]["cpu_secs"])])
                row = self.js_row("3 batched", f"collector, delimited framing, acked @{fmt_rate(rate)}", res,
                                  split)
                log(f"batched offered {fmt_rate(row.offered)} flows/s: loss {row.loss:.3f}%"
                    + (" (retry)" if attempt == 2 else ""))
                if row.loss == 0:
                    break
            if row.loss == 0:
                best = row
            else:
                over = row
                break
        for row in (best, over):
            if row:
                self.rows.append(row)
        held = best.offered if best else 0.0
        ceiling = max((r.achieved or 0.0) for r in (best, over) if r) if (best or over) else 0.0
        self.verdicts.append(
            f"(3) JetStream batched framing: highest zero-loss step {fmt_rate(held)} flows/s, "
            f"acked up to {fmt_rate(ceiling)} flows/s (target >= 1M with zero loss: "
            f"{'met' if held >= 0.98e6 else 'NOT met'})")

    # -- memory

    def memory_suite(self):
        rss_at = {}
        for n in self.memory_exporters:
            port, mport = free_port(socket.SOCK_DGRAM), free_port()
            cfg = self.collector_config(port, mport, max_exporters=max(n + 10, 10_000))
            proc = self.start_collector(cfg, f"memory-{n}")
            try:
                time.sleep(0.3)
                base = proc.status_kib("VmRSS")
                cpu0, t0 = proc.cpu_seconds(), time.monotonic()
                # Each exporter: its templates with data, then one more data datagram;
                # paced so that starting 10000 exporters loses nothing.
                sent = self.loadgen(port, "--protocol", "v9", "--exporters", n, "--count", 2 * n,
                                    "--records", 4, "--rate", 4_000)
                samples, _ = self.wait_idle(f"127.0.0.1:{mport}", 30)
                wall = time.monotonic() - t0
                cpu, rss = proc.cpu_seconds() - cpu0, proc.status_kib("VmHWM")
                live = metric_sum(samples, "flow_collector_exporters")
            finally:
                proc.stop()
            c = self.stopped_counters(proc)
            records = sent["records"]
            loss = 100.0 * (records - c.get("flows_published", 0)) / records
            per = (rss - base) / n if rss and base and n >= 100 else None
            rss_at[n] = rss
            self.rows.append(Row("4 memory", f"{n} exporters (templates + data)",
                                 offered=sent["records_per_sec"], loss=loss, cpu=cpu, wall=wall,
                                 flows=c.get("flows_published"), rss_kib=rss,
                                 note=f"{live:.0f} exporters live; idle RSS {base / 1024:.1f} MiB"
                                      + (f", +{per:.1f} KiB/exporter" if per is not None else "")))
            log(f"memory {n} exporters: peak RSS {rss / 1024:.1f} MiB")
        if rss_at.get(1000):
            mib = rss_at[1000] / 1024
            self.verdicts.append(f"(4) peak RSS at 1000 exporters: {mib:.1f} MiB (target <= 64 MiB: "
                                 f"{'met' if mib <= 64 else 'NOT met'})")

    # -- SO_REUSEPORT

    def reuseport_suite(self):
        probe = {"listeners": [{"protocol": "netflow", "listen_addr": "127.0.0.1:9"},
                               {"protocol": "netflow", "listen_addr": "127.0.0.1:9"}]}
        probe_key = {"listeners": [{"protocol": "netflow", "listen_addr": "127.0.0.1:9",
                                    self.args.reuseport_key: 2}]}
        if self.config_accepted(probe_key):
            self.reuseport_runs(lambda port, mport, k: self.collector_config(
                port, mport, listener={self.args.reuseport_key: k}))
        elif self.config_accepted(probe):
            def cfg(port, mport, k):
                base = self.collector_config(port, mport)
                base["listeners"] = base["listeners"] * k
                return base
            self.reuseport_runs(cfg)
        else:
            self.rows.append(Row("6 scaling", "1/2/4 sockets on one port (SO_REUSEPORT)",
                                 note="not supported yet: one socket per listen_addr"))

    def reuseport_runs(self, config_for):
        for sockets in (1, 2, 4):
            for exporters in (1, 64):
                port, mport = free_port(socket.SOCK_DGRAM), free_port()
                proc = self.start_collector(config_for(port, mport, sockets),
                                            f"reuse-{sockets}-{exporters}", ["--discard-flows"])
                try:
                    cpu0, t0 = proc.cpu_seconds(), time.monotonic()
                    sent = self.loadgen(port, "--protocol", "v9", "--exporters", exporters,
                                        "--duration", self.step_secs, "--rate", 0)
                    self.wait_idle(f"127.0.0.1:{mport}", 20)
                    wall = time.monotonic() - t0
                    cpu, rss = proc.cpu_seconds() - cpu0, proc.status_kib("VmHWM")
                finally:
                    proc.stop()
                c = self.stopped_counters(proc)
                flows = c.get("flows_published", 0)
                records = sent["records"]
                self.rows.append(Row("6 scaling", f"{sockets} socket(s), {exporters} exporter(s), flat out",
                                     offered=sent["records_per_sec"], achieved=flows / wall,
                                     loss=100.0 * (records - flows) / records, cpu=cpu, wall=wall,
                                     flows=flows, rss_kib=rss))

    # -- all

    def run(self):
        suites = [("decode", self.decode_suite), ("jetstream", self.jetstream_suite),
                  ("memory", self.memory_suite), ("reuseport", self.reuseport_suite)]
        only = set(self.args.only.split(",")) if self.args.only else None
        started = time.monotonic()
        for name, suite in suites:
            if only and name not in only:
                continue
            log(f"--- {name}")
            try:
                suite()
            except Exception as e:  # one broken suite must not hide the others' figures
                log(f"{name} failed: {e}")
                self.rows.append(Row(name, "failed", note=str(e)[:200]))
        elapsed = time.monotonic() - started
        print()
        print(f"flow collector benchmarks, {time.strftime('%Y-%m-%d %H:%M')}, "
              f"{os.cpu_count()} CPUs, {'quick' if self.args.quick else 'full'} run in {elapsed:.0f} s; "
              f"sender: flow-loadgen NetFlow v9, 28 records/datagram, {self.args.exporters} exporters; "
              f"receive buffer {self.rcvbuf} B for every receiver")
        print_table(self.rows)
        print()
        for v in self.verdicts:
            print(v)
        if self.args.json_out:
            with open(self.args.json_out, "w") as f:
                json.dump({"rows": [r.as_dict() for r in self.rows], "verdicts": self.verdicts},
                          f, indent=1, default=str)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bin-dir", required=True, help="release binaries (target/release)")
    p.add_argument("--quick", action="store_true", help="short steps: about 3 minutes")
    p.add_argument("--only", help="comma-separated suites: decode,jetstream,memory,reuseport")
    p.add_argument("--exporters", type=int, default=4, help="exporters of the decode and JetStream runs")
    p.add_argument("--step-secs", type=float, help="seconds per decode step")
    p.add_argument("--js-secs", type=float, help="seconds per JetStream run")
    p.add_argument("--rcvbuf", type=int, default=4 << 20, help="socket receive buffer, bytes")
    p.add_argument("--reuseport-key", default="sockets",
                   help="listener key giving several sockets per port, probed with --check-config")
    p.add_argument("--json-out", help="also write the rows as JSON here")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs, configs)")
    args = p.parse_args()
    bench = Bench(args)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: (kill_everything(), sys.exit(130)))
    try:
        bench.run()
    finally:
        kill_everything()
        if args.keep:
            log(f"logs and configs kept in {bench.work}")
        else:
            shutil.rmtree(bench.work, ignore_errors=True)


if __name__ == "__main__":
    main()
