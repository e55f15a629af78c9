#!/usr/bin/env python3
"""One throughput case, with CPU per GB of every process in the path, optionally under perf.

    cargo build --profile profiling --bin agent
    AGENT_BIN=target/profiling/agent python3 bench/profile.py --direction to --perf /tmp/agent.data
    perf report -i /tmp/agent.data --no-children --sort symbol

Toward the service, sshd is the busiest process, so what the agent makes sshd do matters as
much as the agent's own CPU: both are printed, with the sleeps (voluntary context switches) of
the tunnel and of sshd, and the machine's cross-CPU wake-up interrupts (CAL in /proc/interrupts)
per GB. sshd sleeping almost never means it never waited for the tunnel.
The sleeps did not turn out to explain sshd's extra cost; the TCP congestion control did
(README, "Performance").
Uses the same private sshd, iperf3 target and tunnels as bench.py (loopback only).
"""
import argparse
import subprocess
import tempfile
import time
from pathlib import Path

import bench


SYSCALLS = ("read", "recvfrom", "write", "writev", "sendto", "epoll_wait", "poll", "ppoll")


def sleeps(pid):
    """Voluntary context switches of every thread of `pid`: how often it went to sleep."""
    total = 0
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        for line in status.read_text().splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                total += int(line.split()[1])
    return total


def call_ipis():
    """Function-call interrupts on all CPUs: mostly wake-ups of a task on another CPU."""
    for line in Path("/proc/interrupts").read_text().splitlines():
        fields = line.split()
        if fields and fields[0] == "CAL:":
            return sum(int(f) for f in fields[1:] if f.isdigit())
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tunnel", choices=("agent", "ssh"), default="agent")
    p.add_argument("--direction", choices=("to", "from"), default="to", help="toward the service or from it")
    p.add_argument("--seconds", type=int, default=6)
    p.add_argument("--parallel", type=int, default=1)
    p.add_argument("--perf", metavar="FILE", help="record the tunnel process with perf into FILE")
    p.add_argument("--syscalls", action="store_true", help="count the tunnel's I/O syscalls per GB (perf stat)")
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="agent-profile-"))
    keys = work / "keys"
    subprocess.run([str(bench.AGENT), "keygen", "--out-dir", str(keys), "--bits", "2048"], check=True, capture_output=True)
    sshd = bench.Sshd(work, (keys / "public-key.pem").read_text())
    iperf_port = bench.free_port()
    iperf_srv = subprocess.Popen(["iperf3", "-s", "-B", "127.0.0.1", "-p", str(iperf_port)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    bench.wait_port(iperf_port)
    tunnel = bench.Tunnel(args.tunnel, work, sshd, keys / "private-key.pem", iperf_port, iperf_port)
    perf = None
    try:
        time.sleep(1)
        if args.perf:
            perf = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-F", "2000", "-g", "--call-graph", "dwarf,16384",
                                     "-o", args.perf, "-p", str(tunnel.proc.pid)], stderr=subprocess.DEVNULL)
            time.sleep(0.5)
        counting = None
        if args.syscalls:
            counting = subprocess.Popen(["perf", "stat", "-x,", "-o", str(work / "syscalls.csv"),
                                         "-e", ",".join(f"syscalls:sys_enter_{c}" for c in SYSCALLS),
                                         "-p", str(tunnel.proc.pid)], stderr=subprocess.DEVNULL)
            time.sleep(0.5)
        before = (bench.cpu_seconds(tunnel.proc.pid), bench.tree_cpu(sshd.proc.pid), bench.cpu_seconds(iperf_srv.pid),
                  sleeps(tunnel.proc.pid), call_ipis(), bench.tree_sum(sshd.proc.pid, sleeps))
        gbps, nbytes = bench.iperf(tunnel.r1, args.seconds, args.direction == "from", args.parallel)
        after = (bench.cpu_seconds(tunnel.proc.pid), bench.tree_cpu(sshd.proc.pid), bench.cpu_seconds(iperf_srv.pid),
                 sleeps(tunnel.proc.pid), call_ipis(), bench.tree_sum(sshd.proc.pid, sleeps))
        if counting:
            bench.stop(counting, sig=2, timeout=30)
    finally:
        if perf:
            bench.stop(perf, sig=2, timeout=30)
        tunnel.close()
        bench.stop(iperf_srv)
        sshd.close()
    gb = nbytes / 1e9
    own, sshd_cpu, target, slept, ipis, sshd_slept = ((a - b) / gb for a, b in zip(after, before))
    print(f"{args.tunnel}, {args.direction} the service, {args.parallel} stream(s): {gbps:.2f} Gbit/s; "
          f"CPU s/GB: {args.tunnel} {own:.3f}, sshd {sshd_cpu:.3f}, iperf3 server {target:.3f}; "
          f"per GB: {args.tunnel} slept {slept:.0f} times, sshd {sshd_slept:.0f}, cross-CPU wake-up IPIs {ipis:.0f}")
    if args.syscalls:
        counts = {}
        csv = work / "syscalls.csv"
        if not csv.exists():
            raise SystemExit("perf stat wrote no counts: syscall tracepoints need root or kernel.perf_event_paranoid <= -1")
        for line in csv.read_text().splitlines():
            fields = line.split(",")
            if len(fields) > 2 and fields[0].isdigit():
                counts[fields[2].removeprefix("syscalls:sys_enter_")] = int(fields[0])
        print("syscalls per GB (whole run, not only the transfer): " +
              ", ".join(f"{name} {n / gb:.0f}" for name, n in sorted(counts.items()) if n))


if __name__ == "__main__":
    main()
