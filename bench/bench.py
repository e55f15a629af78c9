#!/usr/bin/env python3
"""The agent against `ssh -R` on this machine, same run, interleaved (bench/run.sh calls this).

Everything stays on 127.0.0.1: a private sshd with its own config and keys, iperf3 and an echo
service as the targets. For each repetition, each tunnel (the agent and ssh -R, same cipher) is
started, measured and stopped in turn, which goes first alternating, so both see the same machine
noise. Medians and the agent/ssh ratio per row are printed; every raw number goes to a JSON file.

With --wss, a third tunnel: the agent over a `wss://` rung, through websockify (TLS, the vendor-side
terminator of examples/vendor/websockify.sh) in front of the same sshd; its column is compared with
the agent's plain SSH (target: >= 0.8x throughput). websockify's CPU is counted with sshd's.
"""
import argparse
import json
import os
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
CIPHER = "aes128-gcm@openssh.com"


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
            sys.exit("websockify did not start; see " + str(work / "websockify.log"))

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
    """A running tunnel (agent or ssh -R) with forwards iperf (r1) and echo (r2)."""

    def __init__(self, kind, work, sshd, key, iperf_port, echo_port, wss=None):
        self.kind = kind
        self.r1, self.r2 = free_port(), free_port()
        user = login_user()
        if kind.startswith("agent"):
            cfg = work / f"{kind}.yaml"
            extra = 'admin: { listen: "off" }\nlog: { level: warn }\n'
            if kind == "agent+audit":
                # The same agent with its audit trail on: one record per connection.
                extra += f"audit: {{ file: {work / 'audit.jsonl'} }}\n"
            cfg.write_text(agent_yaml(sshd, key, {"iperf": (self.r1, iperf_port), "echo": (self.r2, echo_port)},
                                      extra, wss if kind == "agent-wss" else None))
            cmd = [str(AGENT), "-c", str(cfg), "run"]
        else:
            cmd = ["ssh", "-N", "-T", "-c", CIPHER, "-i", str(key), "-p", str(sshd.port),
                   "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes",
                   "-o", f"UserKnownHostsFile={sshd.known_hosts}", "-o", "StrictHostKeyChecking=yes",
                   "-R", f"127.0.0.1:{self.r1}:127.0.0.1:{iperf_port}",
                   "-R", f"127.0.0.1:{self.r2}:127.0.0.1:{echo_port}",
                   f"{user}@127.0.0.1"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(work / f"{kind}.log", "a"))
        if not (wait_port(self.r1) and wait_port(self.r2)):
            stop(self.proc)
            sys.exit(f"{kind} tunnel did not come up; see {work}/{kind}.log")

    def close(self):
        stop(self.proc)


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


def measure(t, sshd, args, wss=None):
    """One repetition of every case on tunnel `t`; returns {row: value}. The server side's CPU
    is sshd's, plus websockify's for the wss tunnel."""
    row = {}
    pid = t.proc.pid

    def server_cpu():
        return tree_cpu(sshd.proc.pid) + (tree_cpu(wss.proc.pid) if wss and t.kind == "agent-wss" else 0)
    time.sleep(2)
    row["idle RSS MiB"] = mem_kib(pid, "VmRSS") / 1024
    # RSS counts the program's code pages too (clean, shared, reclaimable); this is the memory
    # the process itself dirtied: heap, stacks, relocated data.
    row["idle private (anon) MiB"] = mem_kib(pid, "RssAnon") / 1024
    for reverse, direction in ((False, "to service"), (True, "from service")):
        for par in (1, 8):
            c0, s0 = cpu_seconds(pid), server_cpu()
            gbps, nbytes = iperf(t.r1, args.seconds, reverse, par)
            c1, s1 = cpu_seconds(pid), server_cpu()
            row[f"Gbit/s {direction}, {par} stream{'s' if par > 1 else ''}"] = gbps
            if par == 1:
                row[f"CPU s/GB {direction}"] = (c1 - c0) / (nbytes / 1e9)
            if par == 1 and not reverse:
                # Toward the service the server encrypts every byte in one process: how busy it
                # was says whether the server, not the tunnel client, set the speed.
                row["sshd CPU s/GB to service"] = (s1 - s0) / (nbytes / 1e9)
                # iperf3's own test time (without its setup), from what it moved and its rate.
                seconds = nbytes * 8 / (gbps * 1e9)
                row["sshd % of a core, to service"] = 100 * (s1 - s0) / seconds
    rr = loadgen("rr", "--port", str(t.r2), "--count", str(args.rr_count))
    row["RTT p50 us (64 B)"] = rr["p50_us"]
    row["RTT p99 us (64 B)"] = rr["p99_us"]
    conn = loadgen("connect", "--port", str(t.r2), "--count", str(args.connect_count))
    row["new connection p50 ms"] = conn["p50_ms"]
    row["new connection p99 ms"] = conn["p99_ms"]
    if args.conns:
        try:
            c0 = cpu_seconds(pid)
            many = loadgen("many", "--port", str(t.r2), "--conns", str(args.conns), "--rounds", "3")
            # Per-connection work (and, with --audit, one record per connection) shows here.
            row[f"{args.conns} conns x 3: tunnel CPU s"] = cpu_seconds(pid) - c0
            row[f"{args.conns} conns: lost"] = args.conns - many["echoed_ok"]
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            print(f"{t.kind}: {args.conns} connections run failed: {e}", file=sys.stderr)
            row[f"{args.conns} conns: lost"] = args.conns
        row["peak RSS MiB (VmHWM)"] = mem_kib(pid, "VmHWM") / 1024
        time.sleep(5)
        row["RSS after conns MiB"] = mem_kib(pid, "VmRSS") / 1024
    return row


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--runs", type=int, default=5, help="repetitions per tunnel (interleaved)")
    p.add_argument("--seconds", type=int, default=10, help="iperf3 duration per case")
    p.add_argument("--rr-count", type=int, default=1000)
    p.add_argument("--connect-count", type=int, default=100)
    p.add_argument("--conns", type=int, default=10000, help="concurrent connections case (0 to skip)")
    p.add_argument("--audit", action="store_true",
                   help="also measure the agent with its audit trail on (column agent+audit)")
    p.add_argument("--out", default=str(ROOT / "bench/results"))
    p.add_argument("--wss", action="store_true", help="also the agent over a wss:// rung (websockify)")
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="agent-bench-"))
    keys = work / "keys"
    subprocess.run([str(AGENT), "keygen", "--out-dir", str(keys), "--bits", "2048"], check=True, capture_output=True)
    key = keys / "private-key.pem"
    sshd = Sshd(work, (keys / "public-key.pem").read_text())
    iperf_srv = subprocess.Popen(["iperf3", "-s", "-B", "127.0.0.1", "-p", str(iperf_port := free_port())],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    echo_srv = subprocess.Popen([str(LOADGEN), "echo"], stdout=subprocess.PIPE, text=True)
    echo_port = json.loads(echo_srv.stdout.readline())["port"]
    wait_port(iperf_port)
    kinds = ["agent", "ssh"] + (["agent+audit"] if args.audit else []) + (["agent-wss"] if args.wss else [])
    wss = Websockify(work, sshd) if args.wss else None
    results = {k: [] for k in kinds}
    try:
        for run in range(args.runs):
            # Rotate which tunnel goes first, so none always meets a cold machine.
            order = kinds[run % len(kinds):] + kinds[:run % len(kinds)]
            for kind in order:
                print(f"run {run + 1}/{args.runs}: {kind}", file=sys.stderr, flush=True)
                t = Tunnel(kind, work, sshd, key, iperf_port, echo_port, wss)
                try:
                    results[kind].append(measure(t, sshd, args, wss))
                finally:
                    t.close()
    finally:
        for proc in (echo_srv, iperf_srv):
            stop(proc)
        if wss:
            wss.close()
        sshd.close()

    cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True, text=True).stdout.strip()
    # sshd's congestion control decides how it paces toward the tunnel (see README Performance).
    try:
        cc = Path("/proc/sys/net/ipv4/tcp_congestion_control").read_text().strip()
    except OSError:
        cc = "unknown"
    machine = f"{os.cpu_count()} cores, {cpu}, TCP congestion control {cc}"
    stamp = time.strftime("%Y-%m-%d")
    rows = list(results["agent"][0].keys())
    head, rule = "| case | agent | ssh -R | agent / ssh |", "|---|---|---|---|"
    if args.audit:
        head, rule = head + " agent+audit | audit / agent |", rule + "---|---|"
    if args.wss:
        head, rule = head + " agent wss | wss / agent |", rule + "---|---|"
    lines = [f"Benchmark {stamp} on {machine}; {args.runs} interleaved runs, medians; cipher {CIPHER}", "",
             head, rule]
    for r in rows:
        a = statistics.median(x[r] for x in results["agent"])
        s = statistics.median(x[r] for x in results["ssh"])
        ratio = f"{a / s:.2f}" if s else "-"
        line = f"| {r} | {a:.2f} | {s:.2f} | {ratio} |"
        if args.audit:
            au = statistics.median(x[r] for x in results["agent+audit"])
            line += f" {au:.2f} | {au / a:.3f} |" if a else f" {au:.2f} | - |"
        if args.wss:
            w = statistics.median(x[r] for x in results["agent-wss"])
            line += f" {w:.2f} | {w / a:.2f} |" if a else f" {w:.2f} | - |"
        lines.append(line)
    table = "\n".join(lines)
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    raw = out / f"raw-{time.strftime('%Y%m%d-%H%M%S')}.json"
    raw.write_text(json.dumps({"date": stamp, "machine": machine, "agent_binary": str(AGENT), "args": vars(args),
                               "results": results}, indent=1))
    (out / "latest.md").write_text(table + "\n")
    print(f"\nagent binary: {AGENT}\nraw numbers: {raw}", file=sys.stderr)


if __name__ == "__main__":
    main()
