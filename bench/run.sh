#!/usr/bin/env bash
# The agent against `ssh -R` on this machine: throughput both ways (1 and 8 streams), CPU per GB,
# 64-byte RTT, new-connection time, 10,000 concurrent connections, idle and peak memory.
# Loopback only. Installs what it needs on Debian/Ubuntu. Options go to bench/bench.py
# (e.g. `bench/run.sh --runs 3 --seconds 5 --conns 2000` for a quick look; `--wss` adds the agent
# over a wss:// rung through websockify).
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v iperf3 >/dev/null || need+=(iperf3)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh >/dev/null || need+=(openssh-client)
command -v openssl >/dev/null || need+=(openssl)
if [[ " $* " == *" --wss "* ]]; then command -v websockify >/dev/null || need+=(websockify); fi
if [ ${#need[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# 10,000 connections need more than the usual 1024 descriptors per process.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
# Measure the binary that ships: static glibc, built as the Containerfile builds it (the dynamic
# build maps ~1 MiB more of shared libraries).
target="$(uname -m)-unknown-linux-gnu"
RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --locked --target "$target" --bin agent
cargo build --release --locked --example loadgen
export AGENT_BIN="${AGENT_BIN:-$PWD/target/$target/release/agent}"
exec python3 bench/bench.py "$@"
