#!/usr/bin/env python3
"""Regenerates link/hot-symbols.txt: the functions an idle agent runs, for the linker to put together.

    bench/hot-symbols.sh          # builds, runs the agent under valgrind, rewrites the file

Why: the kernel maps an executable's code into memory in blocks around each page first used
(fault-around, and whole large page-cache folios on recent kernels), and counts every mapped
page in the process's resident size. An idle agent runs ~1.4 MiB of code, but spread over the
7.6 MiB of text it touched blocks covering ~5.7 MiB. Listed first, in one run, those functions
need ~2 MiB. build.rs hands the file to the linker (lld's --symbol-ordering-file).

What is recorded, with callgrind, against a private sshd on 127.0.0.1 (bench.Sshd):
1. start, connect, authenticate, forwards granted, keepalives (every second here) and the admin
   endpoint (/healthz, /readyz, /metrics) for a few seconds: the idle working set, listed first;
2. then a few forwarded connections to an echo target: what the first vendor connection touches,
   listed next.
The names are the linker's (mangled); they are only valid for the build they came from (same
rustc, same Cargo.lock, `--release --target x86_64-unknown-linux-gnu` with crt-static). A stale
file costs nothing but the benefit: unknown names are ignored.
"""
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import bench

IDLE_SECONDS = 6
CALLGRIND_OUT = "callgrind.out"


def echo_server():
    """A thread echoing every connection on 127.0.0.1; returns its port."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)

    def serve(conn):
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    def accept():
        while True:
            conn, _ = srv.accept()
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return srv.getsockname()[1]


def functions(dump):
    """Function names in a callgrind dump (uncompressed names), in first-seen order."""
    seen = {}
    for line in dump.read_text().splitlines():
        if line.startswith("fn="):
            name = line[3:].split("'", 1)[0]  # "'2": a recursion level, same function
            if name and not name.startswith(("0x", "(")):
                seen.setdefault(name, None)
    return list(seen)


def main():
    out = Path(sys.argv[1])
    binary = Path(os.environ["AGENT_BIN"])
    work = Path(tempfile.mkdtemp(prefix="agent-hot-symbols-"))
    keys = work / "keys"
    subprocess.run([str(binary), "keygen", "--out-dir", str(keys), "--bits", "2048"], check=True, capture_output=True)
    sshd = bench.Sshd(work, (keys / "public-key.pem").read_text())
    echo_port = echo_server()
    remote, admin = bench.free_port(), bench.free_port()
    user = os.environ.get("USER") or subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
    cfg = work / "agent.yaml"
    cfg.write_text(f"""server:
  host: 127.0.0.1
  ports: [{sshd.port}]
  user: {user}
  host_keys: ["{sshd.host_key_line}"]
identity: {keys / "private-key.pem"}
forwards:
  - {{ name: echo, remote: "127.0.0.1:{remote}", target: "127.0.0.1:{echo_port}" }}
admin: {{ listen: "127.0.0.1:{admin}" }}
keepalive: {{ interval: 1s, max_missed: 5 }}
log: {{ level: info }}
""")
    dump = work / CALLGRIND_OUT
    agent = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={dump}", "--compress-strings=no",
         "--demangle=no", str(binary), "-c", str(cfg), "run"],
        stdout=subprocess.DEVNULL, stderr=open(work / "agent.log", "w"))
    try:
        if not bench.wait_port(remote, timeout=120):
            sys.exit(f"the agent did not come up under valgrind; see {work}/agent.log")
        for path in ("/healthz", "/readyz", "/metrics"):
            urllib.request.urlopen(f"http://127.0.0.1:{admin}{path}", timeout=30).read()
        time.sleep(IDLE_SECONDS)
        subprocess.run(["callgrind_control", "--dump=idle", str(agent.pid)], check=True, capture_output=True)
        for i in range(3):
            with socket.create_connection(("127.0.0.1", remote), timeout=30) as conn:
                payload = bytes([i]) * 100_000
                conn.sendall(payload)
                got = b""
                while len(got) < len(payload):
                    chunk = conn.recv(65536)
                    if not chunk:
                        sys.exit("the echo connection closed early")
                    got += chunk
                if got != payload:
                    sys.exit("the echo connection returned other bytes")
        time.sleep(1)
    finally:
        bench.stop(agent, timeout=60)
        sshd.close()
    # The idle dump (callgrind.out.1), then the one written at exit (callgrind.out).
    dumps = sorted(work.glob(CALLGRIND_OUT + ".*")) + [dump]
    if len(dumps) != 2 or not all(d.exists() for d in dumps):
        sys.exit(f"expected two callgrind dumps in {work}, found {[d.name for d in dumps]}")
    idle = functions(dumps[0])
    names = list(dict.fromkeys(idle + functions(dumps[1])))
    out.write_text("\n".join(names) + "\n")
    print(f"{out}: {len(idle)} functions run idle, {len(names) - len(idle)} more by forwarded connections")


if __name__ == "__main__":
    main()
