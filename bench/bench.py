#!/usr/bin/env python3
"""The agent against other reverse tunnels on this machine, same run, interleaved (bench/run.sh
calls this and installs the peers).

Peers (--peers, all by default): `ssh -R` (OpenSSH, same cipher as the agent), rathole over its
`noise` transport (Noise_NK_25519_ChaChaPoly_BLAKE2s: encrypted like the agent), and bore (no
encryption, no secret: the ceiling of a tunnel that does no crypto). Everything stays on
127.0.0.1: a private sshd with its own config and keys, a rathole server and a bore server per
tunnel, iperf3 and an echo service as the targets; every tunnel holds two forwards (iperf3, echo).
For each repetition, each tunnel is started, measured and stopped in turn, which goes first
rotating, so all see the same machine noise. Medians, each peer's value and the agent/peer ratio
per row are printed, then where the targets of issue #21 stand; every raw number goes to a JSON
file.

The client side (the process on the customer's side: the agent, `ssh`, the rathole client, the
two `bore local` processes, one per forward, summed) is what the CPU s/GB and memory rows measure.
The server side (sshd and its session processes, the rathole server, the bore server) is what the
"server" rows measure.

With --wss, an extra column: the agent over a `wss://` rung, through a WebSocket-over-TLS
terminator in front of the same sshd; its column is compared with the agent's plain SSH (target:
>= 0.8x throughput). The terminator is examples/wss_terminator.rs (rustls + tungstenite, what a
production terminator costs) or, with --wss-terminator websockify, the Debian package of
examples/vendor/websockify.sh (Python: it, not the agent, sets the pace). The terminator's CPU is
counted with sshd's. With --audit, the agent with its audit trail on, compared with the plain
agent. With --baseline-agent PATH, another build of the agent (e.g. main before a change) in the
same run, same configuration: the agent / baseline column, and the rows off by more than 5%.

With --gateway, instead of all that: the gateway case (bench/gateway.py): HTTP requests and a
download through the agent's HTTP forward, its plain TCP forward and Snyk Broker, to one upstream.
"""
import argparse
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
AGENT = Path(os.environ.get("AGENT_BIN", ROOT / "target/release/agent"))
LOADGEN = Path(os.environ.get("LOADGEN_BIN", ROOT / "target/release/examples/loadgen"))
WSS_TERMINATOR = Path(os.environ.get("WSS_TERMINATOR_BIN", ROOT / "target/release/examples/wss_terminator"))
TOOLS = ROOT / "target/bench-tools/bin"
RATHOLE = Path(os.environ.get("RATHOLE_BIN", TOOLS / "rathole"))
BORE = Path(os.environ.get("BORE_BIN", TOOLS / "bore"))
CIPHER = "aes128-gcm@openssh.com"
# bore's control port is a constant in bore (CONTROL_PORT), not an option.
BORE_CONTROL_PORT = 7835
PEERS = ("agent", "ssh", "rathole", "bore")
# Column titles; the extra agent columns (--audit, --wss) are compared with the plain agent.
LABEL = {"agent": "agent", "ssh": "ssh -R", "rathole": "rathole", "bore": "bore",
         "agent+audit": "agent+audit", "agent-wss": "agent wss", "agent-base": "baseline agent"}
RATE_ROW = "new conns/s (1 KiB each way)"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def port_free(port):
    """Whether a listener could bind 127.0.0.1:`port` now (SO_REUSEADDR, as tokio binds)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def check_bore_port():
    if not port_free(BORE_CONTROL_PORT):
        sys.exit(f"bore: its control port 127.0.0.1:{BORE_CONTROL_PORT} (fixed in bore) is in use by another "
                 f"process (`ss -ltnp sport = :{BORE_CONTROL_PORT}` shows which); free it or leave bore out "
                 f"(--peers agent,ssh,rathole)")


def cpu_seconds(pid):
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick


def descendants(pid):
    """Every process below `pid` (sshd: the per-session processes, also a non-root user's child)."""
    parent = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            pass
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        found += kids
        todo += kids
    return found


def tree_sum(pid, per_process):
    """`per_process(p)` summed over `pid` and every process below it that is still running."""
    total = 0
    for p in [pid, *descendants(pid)]:
        try:
            total += per_process(p)
        except OSError:
            pass
    return total


def tree_cpu(pid):
    """CPU seconds of `pid` and every process below it that is still running."""
    return tree_sum(pid, cpu_seconds)


def mem_kib(pid, key):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def stop(proc, sig=signal.SIGTERM, timeout=5):
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Sshd:
    def __init__(self, work, pubkey):
        self.port = free_port()
        hk = work / "host_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(hk)], check=True)
        (work / "authorized_keys").write_text(pubkey)
        cfg = work / "sshd_config"
        cfg.write_text(f"""ListenAddress 127.0.0.1:{self.port}
HostKey {hk}
PidFile {work}/sshd.pid
AuthorizedKeysFile {work}/authorized_keys
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
AllowTcpForwarding remote
GatewayPorts no
Ciphers {CIPHER}
MaxStartups 100:30:200
LogLevel ERROR
""")
        Path("/run/sshd").mkdir(exist_ok=True)
        self.proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(cfg)], stderr=open(work / "sshd.log", "w"))
        if not wait_port(self.port):
            stop(self.proc)
            sys.exit("sshd did not start; see " + str(work / "sshd.log"))
        self.host_key_line = " ".join((work / "host_key.pub").read_text().split()[:2])
        known = work / "known_hosts"
        known.write_text(f"[127.0.0.1]:{self.port} {self.host_key_line}\n")
        self.known_hosts = known

    def close(self):
        stop(self.proc)


def login_user():
    return os.environ.get("USER") or subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()


class Websockify:
    """websockify with TLS only in front of sshd, as examples/vendor/websockify.sh runs it. Its
    certificate is self-signed, so the agent runs with `tls: { verify: false }` (the host key is
    pinned): verification costs only at the handshake, not per byte."""

    def __init__(self, work, sshd):
        self.port = free_port()
        cert, key = work / "wss-cert.pem", work / "wss-key.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                        "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
        env = dict(os.environ, CERT=str(cert), KEY=str(key), LISTEN=f"127.0.0.1:{self.port}",
                   SSHD=f"127.0.0.1:{sshd.port}")
        self.proc = subprocess.Popen(["sh", str(ROOT / "examples/vendor/websockify.sh")], env=env,
                                     stdout=subprocess.DEVNULL, stderr=open(work / "websockify.log", "w"))
        if not wait_port(self.port):
            stop(self.proc)
            sys.exit("websockify did not start; see " + str(work / "websockify.log"))

    def close(self):
        stop(self.proc)


class NativeTerminator:
    """examples/wss_terminator.rs in front of sshd (self-signed certificate, like Websockify)."""

    def __init__(self, work, sshd):
        self.proc = subprocess.Popen([str(WSS_TERMINATOR), "--listen", "127.0.0.1:0",
                                      "--to", f"127.0.0.1:{sshd.port}"], stdout=subprocess.PIPE,
                                     stderr=open(work / "wss-terminator.log", "w"), text=True)
        line = self.proc.stdout.readline()
        if not line:
            stop(self.proc)
            sys.exit("wss_terminator did not start; see " + str(work / "wss-terminator.log"))
        self.port = json.loads(line)["port"]

    def close(self):
        stop(self.proc)


def agent_yaml(sshd, key, forwards, extra="", wss=None):
    """agent.yaml for `sshd` (through `wss`, a Websockify, when given): forwards is
    {name: (remote port, target port)}, all on 127.0.0.1."""
    ladder = f"ports: [{sshd.port}]" if wss is None else \
        f'transports: ["wss://localhost:{wss.port}/"]\n  tls: {{ verify: false }}'
    lines = [f"""server:
  host: 127.0.0.1
  {ladder}
  user: {login_user()}
  host_keys: ["{sshd.host_key_line}"]
identity: {key}
forwards:"""]
    for name, (remote, target) in forwards.items():
        lines.append(f'  - {{ name: {name}, remote: "127.0.0.1:{remote}", target: "127.0.0.1:{target}" }}')
    return "\n".join(lines) + "\n" + extra


class Tunnel:
    """A running tunnel with forwards iperf (r1) and echo (r2). `clients` are its processes on the
    customer's side (CPU and memory rows), `servers` the server side's own processes (the rathole
    and bore servers; sshd and websockify outlive the tunnel and are counted through `ctx`)."""

    def __init__(self, kind, work, ctx):
        self.kind, self.work, self.ctx = kind, work, ctx
        self.r1, self.r2 = free_port(), free_port()
        self.clients, self.servers = [], []
        try:
            if kind.startswith("agent"):
                self._agent()
            elif kind == "ssh":
                self._ssh()
            elif kind == "rathole":
                self._rathole()
            elif kind == "bore":
                self._bore()
            else:
                raise ValueError(kind)
            if not (wait_port(self.r1) and wait_port(self.r2)):
                raise RuntimeError(f"{kind} tunnel did not come up; see {work}/{kind}*.log")
        except BaseException:
            self.close()
            raise

    def _spawn(self, cmd, log, env=None):
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(self.work / log, "a"),
                                env=env, stdin=subprocess.DEVNULL)

    def _agent(self):
        ctx, work, kind = self.ctx, self.work, self.kind
        cfg = work / f"{kind}.yaml"
        extra = 'admin: { listen: "off" }\nlog: { level: warn }\n'
        if kind == "agent+audit":
            # The same agent with its audit trail on: one record per connection.
            extra += f"audit: {{ file: {work / 'audit.jsonl'} }}\n"
        cfg.write_text(agent_yaml(ctx.sshd, ctx.key, {"iperf": (self.r1, ctx.iperf_port),
                                                      "echo": (self.r2, ctx.echo_port)},
                                  extra, ctx.wss if kind == "agent-wss" else None))
        binary = ctx.baseline_agent if kind == "agent-base" else AGENT
        self.clients.append(self._spawn([str(binary), "-c", str(cfg), "run"], f"{kind}.log"))

    def _ssh(self):
        ctx = self.ctx
        cmd = ["ssh", "-N", "-T", "-c", CIPHER, "-i", str(ctx.key), "-p", str(ctx.sshd.port),
               "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes",
               "-o", f"UserKnownHostsFile={ctx.sshd.known_hosts}", "-o", "StrictHostKeyChecking=yes",
               "-R", f"127.0.0.1:{self.r1}:127.0.0.1:{ctx.iperf_port}",
               "-R", f"127.0.0.1:{self.r2}:127.0.0.1:{ctx.echo_port}",
               f"{login_user()}@127.0.0.1"]
        self.clients.append(self._spawn(cmd, "ssh.log"))

    def _rathole(self):
        """rathole server and client over noise (the default pattern, NK: the client pins the
        server's static key, like a host-key pin). Per-connection logging off (RUST_LOG=warn), as
        the agent runs at `warn`; other settings are rathole's defaults (TCP_NODELAY on)."""
        ctx, work = self.ctx, self.work
        control = free_port()
        (work / "rathole-server.toml").write_text(f"""[server]
bind_addr = "127.0.0.1:{control}"
default_token = "{ctx.rathole_token}"

[server.transport]
type = "noise"

[server.transport.noise]
local_private_key = "{ctx.rathole_private}"

[server.services.iperf]
bind_addr = "127.0.0.1:{self.r1}"

[server.services.echo]
bind_addr = "127.0.0.1:{self.r2}"
""")
        (work / "rathole-client.toml").write_text(f"""[client]
remote_addr = "127.0.0.1:{control}"
default_token = "{ctx.rathole_token}"

[client.transport]
type = "noise"

[client.transport.noise]
remote_public_key = "{ctx.rathole_public}"

[client.services.iperf]
local_addr = "127.0.0.1:{ctx.iperf_port}"

[client.services.echo]
local_addr = "127.0.0.1:{ctx.echo_port}"
""")
        env = dict(os.environ, RUST_LOG="warn")
        self.servers.append(self._spawn([str(RATHOLE), "-s", str(work / "rathole-server.toml")],
                                        "rathole-server.log", env))
        # The server opens the forwarded ports only once the client's control channel is up.
        if not wait_port(control):
            raise RuntimeError(f"rathole server did not start; see {work}/rathole-server.log")
        self.clients.append(self._spawn([str(RATHOLE), "-c", str(work / "rathole-client.toml")],
                                        "rathole-client.log", env))

    def _bore(self):
        """bore server and one `bore local` per forward (bore forwards one port per process)."""
        ctx, work = self.ctx, self.work
        check_bore_port()
        env = dict(os.environ, RUST_LOG="warn")
        lo, hi = sorted((self.r1, self.r2))
        self.servers.append(self._spawn([str(BORE), "server", "--bind-addr", "127.0.0.1",
                                         "--min-port", str(lo), "--max-port", str(hi)], "bore-server.log", env))
        if not wait_port(BORE_CONTROL_PORT):
            raise RuntimeError(f"bore server did not start; see {work}/bore-server.log")
        for remote, target in ((self.r1, ctx.iperf_port), (self.r2, ctx.echo_port)):
            self.clients.append(self._spawn([str(BORE), "local", str(target), "--local-host", "127.0.0.1",
                                             "--to", "127.0.0.1", "--port", str(remote)], "bore-local.log", env))

    def client_cpu(self):
        return sum(cpu_seconds(p.pid) for p in self.clients)

    def client_mem(self, key):
        return sum(mem_kib(p.pid, key) for p in self.clients)

    def server_cpu(self):
        """CPU seconds of the server side: sshd's processes (plus the terminator's for the wss
        tunnel), or the tunnel's own server."""
        ctx = self.ctx
        if self.servers:
            return sum(tree_cpu(p.pid) for p in self.servers)
        return tree_cpu(ctx.sshd.proc.pid) + (tree_cpu(ctx.wss.proc.pid) if self.kind == "agent-wss" else 0)

    def alive(self):
        return all(p.poll() is None for p in self.clients + self.servers)

    def close(self):
        # Clients first, so the servers see a clean disconnect.
        for p in self.clients + self.servers:
            stop(p)


def iperf(port, seconds, reverse, parallel, tries=3):
    cmd = ["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", str(seconds), "-J", "-P", str(parallel)]
    if reverse:
        cmd.append("-R")
    for attempt in range(tries):
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
        data = json.loads(out.stdout)
        if "error" not in data:
            end = data["end"]["sum_received"]
            return end["bits_per_second"] / 1e9, end["bytes"]
        # The iperf3 server takes a moment to accept a new test after the previous one.
        print(f"iperf3: {data['error']} (try {attempt + 1}/{tries})", file=sys.stderr)
        time.sleep(2)
    raise RuntimeError(data["error"])


def loadgen(*args, timeout=600):
    out = subprocess.run([str(LOADGEN), *args], capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip())
    return json.loads(out.stdout.strip().splitlines()[-1])


def reset_peak_rss(t):
    """Reset VmHWM of the tunnel's client processes to their current RSS (Linux: clear_refs 5)."""
    try:
        for p in t.clients:
            Path(f"/proc/{p.pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def measure(t, args):
    """One repetition of every case on tunnel `t`; returns {row: value}."""
    row = {}
    time.sleep(2)
    row["idle RSS MiB"] = t.client_mem("VmRSS") / 1024
    # RSS counts the program's code pages too (clean, shared, reclaimable); this is the memory
    # the process itself dirtied: heap, stacks, relocated data.
    row["idle private (anon) MiB"] = t.client_mem("RssAnon") / 1024
    for reverse, direction in ((False, "to service"), (True, "from service")):
        for par in (1, 8):
            c0, s0 = t.client_cpu(), t.server_cpu()
            gbps, nbytes = iperf(t.r1, args.seconds, reverse, par)
            c1, s1 = t.client_cpu(), t.server_cpu()
            row[f"Gbit/s {direction}, {par} stream{'s' if par > 1 else ''}"] = gbps
            if par == 1:
                row[f"CPU s/GB {direction}"] = (c1 - c0) / (nbytes / 1e9)
            if par == 1 and not reverse:
                # Toward the service the server encrypts every byte (sshd: in one process): how
                # busy it was says whether the server, not the tunnel client, set the speed.
                row["server CPU s/GB to service"] = (s1 - s0) / (nbytes / 1e9)
                # iperf3's own test time (without its setup), from what it moved and its rate.
                seconds = nbytes * 8 / (gbps * 1e9)
                row["server % of a core, to service"] = 100 * (s1 - s0) / seconds
    rr = loadgen("rr", "--port", str(t.r2), "--count", str(args.rr_count))
    row["RTT p50 us (64 B)"] = rr["p50_us"]
    row["RTT p99 us (64 B)"] = rr["p99_us"]
    conn = loadgen("connect", "--port", str(t.r2), "--count", str(args.connect_count))
    row["new connection p50 ms"] = conn["p50_ms"]
    row["new connection p99 ms"] = conn["p99_ms"]
    if args.conns:
        try:
            c0 = t.client_cpu()
            many = loadgen("many", "--port", str(t.r2), "--conns", str(args.conns), "--rounds", "3")
            # Per-connection work (and, with --audit, one record per connection) shows here.
            row[f"{args.conns} conns x 3: tunnel CPU s"] = t.client_cpu() - c0
            row[f"{args.conns} conns: lost"] = args.conns - many["echoed_ok"]
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            print(f"{t.kind}: {args.conns} connections run failed: {e}", file=sys.stderr)
            row[f"{args.conns} conns: lost"] = args.conns
        if not t.alive():
            # bore's server needs more than 2 descriptors per connection and dies with EMFILE
            # at 10,000 where the hard limit is 20,000: count it as all lost, and skip the rest
            # of this tunnel's run (a tunnel process is gone).
            print(f"{t.kind}: a process of the tunnel exited in the {args.conns}-connection case; "
                  f"see {t.work}/{t.kind}*.log", file=sys.stderr)
            row[f"{args.conns} conns: lost"] = args.conns
            row.pop(f"{args.conns} conns x 3: tunnel CPU s", None)
            return row
        row["peak RSS MiB (VmHWM)"] = t.client_mem("VmHWM") / 1024
        time.sleep(5)
        row["RSS after conns MiB"] = t.client_mem("VmRSS") / 1024
    if args.rate_seconds:
        # After the concurrent connections case, so its peak and after rows are its own; the
        # peak resident size is reset first (clear_refs 5), so this row is this case's peak.
        hwm = reset_peak_rss(t)
        rate = loadgen("rate", "--port", str(t.r2), "--seconds", str(args.rate_seconds),
                       "--concurrency", str(args.rate_concurrency), timeout=args.rate_seconds + 60)
        row[RATE_ROW] = rate["conns_per_s"]
        row["new conns: failed"] = rate["failed"]
        if hwm:
            row["peak RSS MiB, new conns/s"] = t.client_mem("VmHWM") / 1024
    if not t.alive():
        raise RuntimeError(f"{t.kind}: a process of the tunnel exited during the run; see {t.work}/{t.kind}*.log")
    return row


# Where issue #21's targets stand: (peer, row, ">=" or "<=", agent/peer ratio wanted).
TARGETS = [
    *[("ssh", f"Gbit/s from service, {n}", ">=", 1.1) for n in ("1 stream", "8 streams")],
    ("ssh", "CPU s/GB from service", "<=", 0.8),
    *[("ssh", f"Gbit/s to service, {n}", ">=", 0.95) for n in ("1 stream", "8 streams")],
    ("ssh", "CPU s/GB to service", "<=", 1.0),
    *[("ssh", r, "<=", 1.0) for r in ("RTT p50 us (64 B)", "RTT p99 us (64 B)",
                                       "new connection p50 ms", "new connection p99 ms")],
    ("ssh", RATE_ROW, ">=", 1.0),
    *[("rathole", f"Gbit/s {d}, {n}", ">=", 2.0) for d in ("to service", "from service")
      for n in ("1 stream", "8 streams")],
    ("rathole", "RTT p50 us (64 B)", "<=", 1.0),
    ("rathole", "idle RSS MiB", "<=", 1.0),
    *[("bore", f"Gbit/s {d}, {n}", ">=", 0.8) for d in ("to service", "from service")
      for n in ("1 stream", "8 streams")],
]


def median(results, kind, row):
    vals = [x[row] for x in results.get(kind, []) if row in x]
    return statistics.median(vals) if vals else None


def fmt(v, digits=2):
    return "-" if v is None else f"{v:.{digits}f}"


def ratio(a, b, digits=2):
    return "-" if a is None or not b else f"{a / b:.{digits}f}"


def table(results, kinds):
    """Medians, one column per tunnel; after each peer, agent / peer; after an extra agent
    column (--audit, --wss), extra / agent."""
    rows = []
    for k in kinds:
        for x in results[k]:
            rows += [r for r in x if r not in rows]
    head, rule = ["case"], ["---"]
    for k in kinds:
        head.append(LABEL[k])
        if k in PEERS and k != "agent":
            head.append(f"agent / {LABEL[k].split()[0]}")
        elif k == "agent+audit":
            head.append("audit / agent")
        elif k == "agent-wss":
            head.append("wss / agent")
        elif k == "agent-base":
            head.append("agent / baseline")
    rule = ["---"] * len(head)
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(rule) + "|"]
    for r in rows:
        a = median(results, "agent", r)
        cells = [r]
        for k in kinds:
            v = median(results, k, r)
            cells.append(fmt(v))
            if k in PEERS and k != "agent":
                cells.append(ratio(a, v))
            elif k == "agent+audit":
                cells.append(ratio(v, a, 3))
            elif k == "agent-wss":
                cells.append(ratio(v, a))
            elif k == "agent-base":
                cells.append(ratio(a, v, 3))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def targets(results, kinds):
    """One line per target of issue #21 whose peer was measured: the target, the agent/peer
    ratio of the medians, met or not met."""
    lines = []
    for peer, row, op, want in TARGETS:
        if peer not in kinds:
            continue
        a, p = median(results, "agent", row), median(results, peer, row)
        if a is None or not p:
            lines.append(f"- vs {LABEL[peer]}: {row}: agent/{peer} {op} {want:.2f}x: no value")
            continue
        r = a / p
        met = r >= want if op == ">=" else r <= want
        lines.append(f"- vs {LABEL[peer]}: {row}: target agent/{peer} {op} {want:.2f}x; "
                     f"value {r:.2f}x ({a:.2f} vs {p:.2f}): {'met' if met else 'NOT met'}")
    return lines


def baseline_diffs(results, kinds):
    rows = []
    for x in results["agent"]:
        rows += [r for r in x if r not in rows]
    out = []
    for r in rows:
        a, b = median(results, "agent", r), median(results, "agent-base", r)
        if a is None or b is None or (a == b == 0):
            continue
        if not b or abs(a / b - 1) > 0.05:
            out.append(f"- {r}: agent {a:.2f}, baseline {b:.2f}" + (f" ({a / b:.3f}x)" if b else ""))
    return out or ["- none"]


def tool_version(path):
    """`bore --version` prints "bore-cli 0.6.0"; `rathole --version` a block with "Build Version: 0.5.0"."""
    try:
        out = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=10).stdout
    except OSError:
        return None
    for line in out.splitlines():
        if line.startswith("Build Version:"):
            return f"{out.split()[0]} {line.split(':', 1)[1].strip()}"
    return out.strip().splitlines()[0] if out.strip() else None


def parse_peers(text):
    peers = [p.strip() for p in text.split(",") if p.strip()]
    bad = [p for p in peers if p not in PEERS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown peer {', '.join(bad)} (known: {','.join(PEERS)})")
    # The agent is what every ratio is taken against.
    return ["agent"] + [p for p in PEERS[1:] if p in peers]


def machine_text():
    cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True, text=True).stdout.strip()
    # sshd's congestion control decides how it paces toward the tunnel (see README Performance).
    try:
        cc = Path("/proc/sys/net/ipv4/tcp_congestion_control").read_text().strip()
    except OSError:
        cc = "unknown"
    return f"{os.cpu_count()} cores, {cpu}, TCP congestion control {cc}"


def parse_gateway_cases(text):
    import gateway
    cases = [c.strip() for c in text.split(",") if c.strip()]
    bad = [c for c in cases if c not in gateway.CASES]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown case {', '.join(bad)} (known: {','.join(gateway.CASES)})")
    return [c for c in gateway.CASES if c in cases]


def gateway_main(args):
    """--gateway: bench/gateway.py's case, its table and raw numbers next to the others'."""
    import gateway
    if args.gateway_cases is None:
        args.gateway_cases = list(gateway.CASES)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = Path(tempfile.mkdtemp(prefix="agent-bench-gateway-"))
    keys = work / "keys"
    if any(k.startswith("agent") for k in args.gateway_cases):
        subprocess.run([str(AGENT), "keygen", "--out-dir", str(keys), "--bits", "2048"], check=True, capture_output=True)
    results, failures = gateway.run(args, work, keys)
    machine = machine_text()
    text, versions = gateway.report(args, results, failures, machine)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    raw = out / f"raw-gateway-{time.strftime('%Y%m%d-%H%M%S')}.json"
    raw.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "machine": machine, "agent_binary": str(AGENT),
                               "versions": versions, "args": vars(args), "results": results,
                               "failures": failures}, indent=1))
    (out / "gateway-latest.md").write_text(text + "\n")
    print(f"\nagent binary: {AGENT}\nraw numbers: {raw}\nlogs: {work}", file=sys.stderr)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=5, help="repetitions per tunnel (interleaved)")
    p.add_argument("--seconds", type=int, default=10, help="iperf3 duration per case")
    p.add_argument("--peers", type=parse_peers, default=list(PEERS),
                   help=f"tunnels to measure, comma-separated (default {','.join(PEERS)}; the agent is always in)")
    p.add_argument("--rr-count", type=int, default=1000)
    p.add_argument("--connect-count", type=int, default=100)
    p.add_argument("--rate-seconds", type=int, default=None,
                   help="new conns/s case: duration (default: --seconds; 0 to skip)")
    p.add_argument("--rate-concurrency", type=int, default=32, help="new conns/s case: connections in flight")
    p.add_argument("--conns", type=int, default=10000, help="concurrent connections case (0 to skip)")
    p.add_argument("--audit", action="store_true",
                   help="also measure the agent with its audit trail on (column agent+audit)")
    p.add_argument("--baseline-agent", default=None,
                   help="also this agent binary, same configuration (column baseline agent)")
    p.add_argument("--out", default=str(ROOT / "bench/results"))
    p.add_argument("--wss", action="store_true", help="also the agent over a wss:// rung")
    p.add_argument("--wss-terminator", choices=("native", "websockify"), default="native",
                   help="vendor-side terminator for --wss (default native: examples/wss_terminator.rs)")
    g = p.add_argument_group("gateway case (bench/gateway.py)")
    g.add_argument("--gateway", action="store_true",
                   help="run the gateway case instead of the tunnel rows (--runs and --seconds apply)")
    g.add_argument("--gateway-cases", type=parse_gateway_cases, default=None,
                   help="comma-separated subset of direct,agent-tcp,agent-http,broker (default all)")
    g.add_argument("--gateway-conns", type=int, default=32, help="keep-alive connections in flight")
    g.add_argument("--blob-mib", type=int, default=1024, help="size of the download, MiB")
    args = p.parse_args()
    if args.gateway:
        return gateway_main(args)
    if args.rate_seconds is None:
        args.rate_seconds = args.seconds
    kinds = args.peers + (["agent+audit"] if args.audit else []) + (["agent-wss"] if args.wss else []) \
        + (["agent-base"] if args.baseline_agent else [])
    if args.baseline_agent and not os.access(args.baseline_agent, os.X_OK):
        sys.exit(f"--baseline-agent: no executable at {args.baseline_agent}")
    for k, path in (("rathole", RATHOLE), ("bore", BORE)):
        if k in kinds and not os.access(path, os.X_OK):
            sys.exit(f"{k}: no binary at {path} (bench/run.sh installs it; or leave {k} out with --peers)")
    if "bore" in kinds:
        check_bore_port()
    # A SIGTERM (a timeout, a stopped job) still stops every process started here.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    # Every tunnel process inherits this. The connections case holds up to four sockets per
    # connection in one process: bore's server (the vendor's socket and a data connection from
    # `bore local` per connection) died with EMFILE at 10,000 under a 20,000 limit.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4 * args.conns + 1024
    if soft < want:
        try:  # raising the hard limit needs root (CAP_SYS_RESOURCE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(want, hard)))
        except (ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))

    work = Path(tempfile.mkdtemp(prefix="agent-bench-"))
    keys = work / "keys"
    subprocess.run([str(AGENT), "keygen", "--out-dir", str(keys), "--bits", "2048"], check=True, capture_output=True)
    ctx = argparse.Namespace(key=keys / "private-key.pem", wss=None, sshd=None, baseline_agent=args.baseline_agent)
    if "rathole" in kinds:
        out = subprocess.run([str(RATHOLE), "--genkey"], check=True, capture_output=True, text=True).stdout.split()
        # "Private Key:\n<base64>\n\nPublic Key:\n<base64>"
        ctx.rathole_private = out[out.index("Private") + 2]
        ctx.rathole_public = out[out.index("Public") + 2]
        ctx.rathole_token = os.urandom(16).hex()
    started = []
    results = {k: [] for k in kinds}
    try:
        ctx.sshd = Sshd(work, (keys / "public-key.pem").read_text())
        started.append(ctx.sshd.proc)
        ctx.iperf_port = free_port()
        started.append(subprocess.Popen(["iperf3", "-s", "-B", "127.0.0.1", "-p", str(ctx.iperf_port)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        echo_srv = subprocess.Popen([str(LOADGEN), "echo"], stdout=subprocess.PIPE, text=True)
        started.append(echo_srv)
        ctx.echo_port = json.loads(echo_srv.stdout.readline())["port"]
        wait_port(ctx.iperf_port)
        if args.wss:
            ctx.wss = (NativeTerminator if args.wss_terminator == "native" else Websockify)(work, ctx.sshd)
            started.append(ctx.wss.proc)
        for run in range(args.runs):
            # Rotate which tunnel goes first, so none always meets a cold machine.
            order = kinds[run % len(kinds):] + kinds[:run % len(kinds)]
            for kind in order:
                print(f"run {run + 1}/{args.runs}: {kind}", file=sys.stderr, flush=True)
                t = Tunnel(kind, work, ctx)
                try:
                    results[kind].append(measure(t, args))
                finally:
                    t.close()
    except RuntimeError as e:
        sys.exit(f"bench: {e}")
    finally:
        for proc in reversed(started):
            stop(proc)

    machine = machine_text()
    stamp = time.strftime("%Y-%m-%d")
    versions = {"rathole": tool_version(RATHOLE) if "rathole" in kinds else None,
                "bore": tool_version(BORE) if "bore" in kinds else None}
    peers = ", ".join(f"{LABEL[k]} ({versions[k]})" if versions.get(k) else LABEL[k] for k in kinds)
    lines = [f"Benchmark {stamp} on {machine}; {args.runs} interleaved runs, medians; {peers}; "
             f"ssh cipher {CIPHER}, rathole transport noise, bore unencrypted"
             f"{f', wss terminator {args.wss_terminator}' if args.wss else ''}", "",
             *table(results, kinds)]
    goals = targets(results, kinds)
    if goals:
        lines += ["", "Targets (issue #21), agent/peer ratio of the medians:", *goals]
    if "agent-base" in kinds:
        lines += ["", "Against the baseline agent (rows off by more than 5% either way):",
                  *baseline_diffs(results, kinds)]
    text = "\n".join(lines)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    raw = out / f"raw-{time.strftime('%Y%m%d-%H%M%S')}.json"
    raw.write_text(json.dumps({"date": stamp, "machine": machine, "agent_binary": str(AGENT), "versions": versions,
                               "args": vars(args), "results": results}, indent=1))
    (out / "latest.md").write_text(text + "\n")
    print(f"\nagent binary: {AGENT}\nraw numbers: {raw}", file=sys.stderr)


if __name__ == "__main__":
    main()
