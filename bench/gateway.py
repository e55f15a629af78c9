"""The gateway case of the benchmark (`bench/run.sh --gateway`): HTTP through the agent's HTTP
forward against the same requests through a plain TCP forward of the agent and through Snyk
Broker (npm `snyk-broker`, classic broker: its server and its client), all to one upstream, all on
127.0.0.1, interleaved in one run.

Cases (columns):
- direct: the load generator straight to the upstream (what the machine does without a tunnel;
  the reference for latency).
- agent tcp: vendor -> sshd's forwarded port -> agent (a `target:` forward) -> upstream.
- agent http: the same path, the forward an `http:` one: the agent's gateway checks the vendor's
  `Authorization: Bearer` token and the allowlist (`GET /small`, `GET /blob`) and sends the
  request on to the upstream over HTTP/1.1 keep-alive.
- snyk-broker: vendor -> broker server (`/broker/TOKEN/PATH`) -> its WebSocket -> broker client
  -> upstream; accept rules allowing the same two paths (the server checks `public`, the client
  `private`).

The upstream is `loadgen http-serve` (examples/loadgen.rs): /small is 1 KiB, /blob is --blob-mib
MiB written from one buffer. The load is `loadgen http-get` (hyper's HTTP/1.1 client, keep-alive,
--gateway-conns connections each with one request in flight) and one connection alone (latency
without queueing); the download is curl to /dev/null. The customer's side (the agent; the broker
client) is what the client CPU and memory rows measure, the vendor's side (sshd; the broker
server) the server rows. Every request, in every case, carries the same Authorization header.
"""
import argparse
import hashlib
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import bench
from bench import (LOADGEN, AGENT, ROOT, free_port, wait_port, stop, cpu_seconds, tree_cpu,
                   mem_kib, login_user, median, fmt, ratio)

CASES = ("direct", "agent-tcp", "agent-http", "broker")
LABEL = {"direct": "direct", "agent-tcp": "agent tcp", "agent-http": "agent http", "broker": "snyk-broker"}
BROKER_DIR = Path(os.environ.get("SNYK_BROKER_DIR", ROOT / "target/bench-tools/snyk-broker"))
BROKER_PKG = BROKER_DIR / "node_modules/snyk-broker"
NODE = os.environ.get("NODE_BIN", "node")
# What every case's requests carry; the plain forward and the broker pass it on untouched.
ALLOW = ["GET /blob", "GET /small"]

RPS = "1 KiB GET req/s ({n} conns, keep-alive)"
P50 = "p50 us ({n} in flight)"
P99 = "p99 us ({n} in flight)"
FAILED = "failed requests ({n} conns)"
CPU_REQ = "client CPU us/request ({n} conns)"
SRV_REQ = "server CPU us/request ({n} conns)"
SOLO50 = "p50 us (1 in flight)"
SOLO99 = "p99 us (1 in flight)"
DL = "download MB/s ({size})"
DL_CPU = "client CPU s/GB (download)"
DL_SRV = "server CPU s/GB (download)"


def no_proxy_env(extra=None):
    """The environment without proxy settings: everything here is loopback, and curl and Node's
    HTTP clients would otherwise send it through a proxy set for the machine."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.update(extra or {})
    return env


def last_lines(path, n=3):
    try:
        return " | ".join(Path(path).read_text(errors="replace").strip().splitlines()[-n:])
    except OSError:
        return ""


class Case:
    """One case, running: `port` and `prefix` are where the vendor sends `GET prefix/small`;
    `clients` the customer-side processes, `servers` the vendor-side ones (sshd is counted
    through `ctx`)."""

    def __init__(self, kind, work, ctx):
        self.kind, self.work, self.ctx = kind, work, ctx
        self.clients, self.servers = [], []
        self.prefix = ""
        self.log = work / f"{kind}.log"
        try:
            getattr(self, "_" + kind.replace("-", "_"))()
            self._probe()
        except BaseException:
            self.close()
            raise

    def _spawn(self, cmd, log, env=None, cwd=None):
        # The broker logs to stdout (bunyan JSON), the agent to stderr: both into the log.
        out = open(log, "a")
        return subprocess.Popen(cmd, stdout=out, stderr=out, env=env, stdin=subprocess.DEVNULL, cwd=cwd)

    def _direct(self):
        self.port = self.ctx.upstream_port

    def _agent(self, forward):
        ctx = self.ctx
        self.port = free_port()
        cfg = self.work / f"{self.kind}.yaml"
        cfg.write_text(f"""server:
  host: 127.0.0.1
  ports: [{ctx.sshd.port}]
  user: {login_user()}
  host_keys: ["{ctx.sshd.host_key_line}"]
identity: {ctx.key}
admin: {{ listen: "off" }}
log: {{ level: warn }}
forwards:
  - name: web
    remote: "127.0.0.1:{self.port}"
{forward}""")
        agent = self._spawn([str(AGENT), "-c", str(cfg), "run"], self.log)
        self.clients.append(agent)
        deadline = time.time() + 20
        while not wait_port(self.port, timeout=0.5):
            if agent.poll() is not None or time.time() > deadline:
                why = f"the agent exited ({agent.returncode})" if agent.poll() is not None else \
                    "the forwarded port did not open in 20 s"
                raise RuntimeError(f"{why}; {self.log}: {last_lines(self.log)}")

    def _agent_tcp(self):
        self._agent(f'    target: "127.0.0.1:{self.ctx.upstream_port}"\n')

    def _agent_http(self):
        allow = ", ".join(json.dumps(a) for a in ALLOW)
        self._agent(f"""    http:
      upstream: http://127.0.0.1:{self.ctx.upstream_port}
      vendor_tokens: ["sha256:{hashlib.sha256(self.ctx.token.encode()).hexdigest()}"]
      allow: [{allow}]
""")

    def _broker(self):
        """Classic broker, both halves on loopback. The server gets only `public` rules (what
        the vendor may ask of it), the client only `private` ones (what it may do, with the
        origin): a rule the server lacks is refused by the server itself ("Request does not
        match any accept rule, blocking HTTP request"), before the client sees it."""
        ctx, work = self.ctx, self.work
        server_port, client_port = free_port(), free_port()
        token = str(uuid.uuid4())  # the broker's preflight check wants a UUID v4
        rules = [{"method": a.split()[0], "path": a.split()[1]} for a in ALLOW]
        (work / "accept-server.json").write_text(json.dumps({"public": rules, "private": []}, indent=1))
        origin = f"http://127.0.0.1:{ctx.upstream_port}"
        (work / "accept-client.json").write_text(json.dumps(
            {"public": [], "private": [dict(r, origin=origin) for r in rules]}, indent=1))
        common = {"BROKER_TOKEN": token, "LOG_LEVEL": "warn", "PREFLIGHT_CHECKS_ENABLED": "false"}
        cli = str(BROKER_PKG / "dist/cli/index.js")
        # The working directory is the run's folder: the broker reads a `.env` from there.
        self.servers.append(self._spawn(
            [NODE, cli, "server"], work / "broker-server.log",
            no_proxy_env(dict(common, PORT=str(server_port), ACCEPT=str(work / "accept-server.json"))), cwd=work))
        if not wait_http(f"http://127.0.0.1:{server_port}/healthcheck", proc=self.servers[0]):
            raise RuntimeError(f"broker server did not start; {work}/broker-server.log: "
                               f"{last_lines(work / 'broker-server.log')}")
        self.clients.append(self._spawn(
            [NODE, cli, "client"], work / "broker-client.log",
            no_proxy_env(dict(common, PORT=str(client_port), ACCEPT=str(work / "accept-client.json"),
                              BROKER_SERVER_URL=f"http://127.0.0.1:{server_port}")), cwd=work))
        # The server answers 200 here once the client's WebSocket is up.
        if not wait_http(f"http://127.0.0.1:{server_port}/connection-status/{token}", timeout=30,
                         proc=self.clients[0]):
            raise RuntimeError(f"broker client did not connect; {work}/broker-client.log: "
                               f"{last_lines(work / 'broker-client.log')}")
        self.port, self.prefix = server_port, f"/broker/{token}"

    def _probe(self):
        """One request through the case before measuring: a case that cannot answer fails here
        with what it answered."""
        status, body = http_get(f"http://127.0.0.1:{self.port}{self.prefix}/small", self.ctx.auth)
        if status != 200 or len(body) != 1024:
            raise RuntimeError(f"GET {self.prefix}/small answered {status} with {len(body)} bytes: "
                               f"{body[:300]!r}; {self.log if self.kind.startswith('agent') else self.work}")

    def client_cpu(self):
        return sum(cpu_seconds(p.pid) for p in self.clients)

    def client_mem(self, key):
        return sum(mem_kib(p.pid, key) for p in self.clients)

    def server_cpu(self):
        if self.kind == "direct":
            return 0.0
        if self.servers:
            return sum(tree_cpu(p.pid) for p in self.servers)
        return tree_cpu(self.ctx.sshd.proc.pid)

    def reset_peak(self):
        try:
            for p in self.clients:
                Path(f"/proc/{p.pid}/clear_refs").write_text("5")
        except OSError:
            return False
        return bool(self.clients)

    def alive(self):
        return all(p.poll() is None for p in self.clients + self.servers)

    def close(self):
        for p in self.clients + self.servers:
            stop(p)


def http_get(url, auth, timeout=10):
    req = urllib.request.Request(url, headers={"Authorization": auth})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError as e:
        return None, str(e).encode()


def wait_http(url, timeout=20.0, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline and (proc is None or proc.poll() is None):
        if http_get(url, "", timeout=2)[0] == 200:
            return True
        time.sleep(0.2)
    return False


def http_load(c, args, conns, seconds):
    cmd = [str(LOADGEN), "http-get", "--port", str(c.port), "--path", c.prefix + "/small",
           "--conns", str(conns), "--seconds", str(seconds), "--expect-bytes", "1024",
           "--header", f"authorization: {c.ctx.auth}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 90)
    if out.returncode != 0:
        raise RuntimeError(f"loadgen http-get: {out.stderr.strip()}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    if r["completed"] == 0:
        raise RuntimeError(f"no request completed through {c.kind}: {r['last_error']}")
    return r


def download(c, nbytes):
    url = f"http://127.0.0.1:{c.port}{c.prefix}/blob"
    out = subprocess.run(["curl", "-sS", "--noproxy", "*", "-o", "/dev/null", "-H", f"Authorization: {c.ctx.auth}",
                          "-w", "%{http_code} %{size_download} %{time_total}", url],
                         capture_output=True, text=True, timeout=600, env=no_proxy_env())
    fields = out.stdout.split()
    if out.returncode != 0 or len(fields) != 3 or fields[0] != "200" or int(fields[1]) != nbytes:
        raise RuntimeError(f"download through {c.kind}: curl exit {out.returncode}, {out.stdout.strip()!r} "
                           f"{out.stderr.strip()} (expected 200 and {nbytes} bytes)")
    return float(fields[2])


def measure(c, args):
    n = args.gateway_conns
    row = {}
    time.sleep(1)
    if c.clients:
        row["idle RSS MiB"] = c.client_mem("VmRSS") / 1024
    hwm = c.reset_peak()
    c0, s0 = c.client_cpu(), c.server_cpu()
    load = http_load(c, args, n, args.seconds)
    cpu, server_cpu = c.client_cpu() - c0, c.server_cpu() - s0
    row[RPS.format(n=n)] = load["requests_per_s"]
    row[P50.format(n=n)] = load["p50_us"]
    row[P99.format(n=n)] = load["p99_us"]
    row[FAILED.format(n=n)] = load["failed"]
    if c.clients:
        # The CPU of the whole loadgen run, warm-up included, over every request it made.
        row[CPU_REQ.format(n=n)] = cpu / load["all_completed"] * 1e6
    if c.kind != "direct":
        row[SRV_REQ.format(n=n)] = server_cpu / load["all_completed"] * 1e6
    solo = http_load(c, args, 1, max(2, args.seconds // 2))
    row[SOLO50] = solo["p50_us"]
    row[SOLO99] = solo["p99_us"]
    nbytes = args.blob_mib << 20
    c0, s0 = c.client_cpu(), c.server_cpu()
    seconds = download(c, nbytes)
    c1, s1 = c.client_cpu(), c.server_cpu()
    row[DL.format(size=size_text(args.blob_mib))] = nbytes / seconds / 1e6
    if c.clients:
        row[DL_CPU] = (c1 - c0) / (nbytes / 1e9)
    if c.kind != "direct":
        row[DL_SRV] = (s1 - s0) / (nbytes / 1e9)
    if hwm:
        row["peak RSS MiB (load + download)"] = c.client_mem("VmHWM") / 1024
    if not c.alive():
        raise RuntimeError(f"{c.kind}: a process exited during the run; see {c.work}")
    return row


def size_text(mib):
    return f"{mib // 1024} GiB" if mib % 1024 == 0 else f"{mib} MiB"


def table(results, kinds):
    """Medians per case; after agent http: http / tcp; after snyk-broker: agent http / broker."""
    rows = []
    for k in kinds:
        for x in results[k]:
            rows += [r for r in x if r not in rows]
    head = ["case"]
    for k in kinds:
        head.append(LABEL[k])
        if k == "agent-http" and "agent-tcp" in kinds:
            head.append("http / tcp")
        if k == "broker" and "agent-http" in kinds:
            head.append("agent http / broker")
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for r in rows:
        cells = [r]
        for k in kinds:
            v = median(results, k, r)
            cells.append(fmt(v))
            if k == "agent-http" and "agent-tcp" in kinds:
                cells.append(ratio(v, median(results, "agent-tcp", r)))
            if k == "broker" and "agent-http" in kinds:
                cells.append(ratio(median(results, "agent-http", r), v))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def targets(results, args):
    """The issue's targets: (a, b, row, op, want) with the ratio a/b of the medians."""
    n = args.gateway_conns
    dl = DL.format(size=size_text(args.blob_mib))
    wanted = [("agent-tcp", RPS.format(n=n), ">=", 0.8), ("agent-tcp", dl, ">=", 0.9),
              ("agent-tcp", DL_CPU, "<=", 1.2), ("broker", RPS.format(n=n), ">=", 5.0),
              ("broker", P50.format(n=n), "<=", 0.2)]
    lines = []
    for other, row, op, want in wanted:
        if other not in results:
            continue
        a, b = median(results, "agent-http", row), median(results, other, row)
        if a is None or not b:
            lines.append(f"- {row}: agent http / {LABEL[other]} {op} {want:.2f}x: no value")
            continue
        r = a / b
        met = r >= want if op == ">=" else r <= want
        lines.append(f"- {row}: target agent http / {LABEL[other]} {op} {want:.2f}x; value {r:.2f}x "
                     f"({a:.2f} vs {b:.2f}): {'met' if met else 'NOT met'}")
    for row in (P50.format(n=n), SOLO50):
        a, b = median(results, "agent-http", row), median(results, "agent-tcp", row)
        if a is not None and b is not None:
            lines.append(f"- added latency, {row}: agent http - agent tcp = {a - b:+.1f} us")
    return lines


def broker_version():
    try:
        return json.loads((BROKER_PKG / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None


def write_broker_config():
    """config.default.json, which the broker looks for in the folders above its own dist/ (not
    in its working directory) and the npm package does not ship: the classic broker's two
    workloads, by their module paths in the installed package."""
    lib = BROKER_PKG / "dist/lib/broker-workload"
    for d in [BROKER_PKG / "dist/lib/hybrid-sdk/common/config", *(BROKER_PKG / "dist/lib/hybrid-sdk/common/config").parents]:
        if d == BROKER_DIR:
            break
        if (d / "config.default.json").exists():
            sys.exit(f"snyk-broker: {d}/config.default.json would be read instead of {BROKER_DIR}/config.default.json")
    (BROKER_DIR / "config.default.json").write_text(json.dumps({
        "REMOTE_WORKLOAD_NAME": "BrokerWorkload",
        "REMOTE_WORKLOAD_MODULE_PATH": str(lib / "websocketRequests"),
        "CLIENT_WORKLOAD_NAME": "BrokerClientRequestWorkload",
        "CLIENT_WORKLOAD_MODULE_PATH": str(lib / "clientLocalRequests"),
    }, indent=1) + "\n")


def run(args, work, keys):
    kinds = args.gateway_cases
    if "broker" in kinds:
        if not (BROKER_PKG / "dist/cli/index.js").exists():
            sys.exit(f"snyk-broker: not installed in {BROKER_DIR} (bench/run.sh --gateway installs it; "
                     f"or leave it out with --gateway-cases)")
        write_broker_config()
    ctx = argparse.Namespace(key=keys / "private-key.pem", sshd=None,
                                   token=secrets.token_urlsafe(32))
    ctx.auth = f"Bearer {ctx.token}"
    started, failures = [], {}
    results = {k: [] for k in kinds}
    try:
        if any(k.startswith("agent") for k in kinds):
            ctx.sshd = bench.Sshd(work, (keys / "public-key.pem").read_text())
            started.append(ctx.sshd.proc)
        up = subprocess.Popen([str(LOADGEN), "http-serve", "--blob-bytes", str(args.blob_mib << 20)],
                              stdout=subprocess.PIPE, text=True)
        started.append(up)
        ctx.upstream_port = json.loads(up.stdout.readline())["port"]
        for run_i in range(args.runs):
            order = kinds[run_i % len(kinds):] + kinds[:run_i % len(kinds)]
            for kind in order:
                if kind in failures:
                    continue
                print(f"run {run_i + 1}/{args.runs}: {kind}", file=sys.stderr, flush=True)
                try:
                    c = Case(kind, work, ctx)
                except RuntimeError as e:
                    # A case that cannot start (the agent without HTTP forwards yet) is reported
                    # and left out of the later runs; the others go on.
                    failures[kind] = str(e)
                    print(f"{kind}: {e}", file=sys.stderr)
                    continue
                try:
                    results[kind].append(measure(c, args))
                except (RuntimeError, subprocess.TimeoutExpired) as e:
                    failures[kind] = str(e)
                    print(f"{kind}: {e}", file=sys.stderr)
                finally:
                    c.close()
    finally:
        for proc in reversed(started):
            stop(proc)
    return results, failures


def report(args, results, failures, machine):
    kinds = args.gateway_cases
    node = subprocess.run([NODE, "--version"], capture_output=True, text=True).stdout.strip() \
        if "broker" in kinds else None
    extra = f"; snyk-broker {broker_version()} on Node {node}" if node else ""
    lines = [f"Gateway benchmark {time.strftime('%Y-%m-%d')} on {machine}; {args.runs} interleaved runs, "
             f"medians; {args.gateway_conns} keep-alive connections for {args.seconds} s; "
             f"upstream loadgen http-serve{extra}", "", *table(results, kinds)]
    goals = targets(results, args)
    if goals:
        lines += ["", "Targets (agent http against the others, ratio of the medians):", *goals]
    if failures:
        lines += ["", "Cases that failed (left out of the runs after their failure):",
                  *[f"- {LABEL[k]}: {v}" for k, v in failures.items()]]
    return "\n".join(lines), {"node": node, "snyk-broker": broker_version()}
