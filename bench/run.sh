#!/usr/bin/env bash
# The agent against other reverse tunnels on this machine: `ssh -R`, rathole (noise transport) and
# bore (no encryption): throughput both ways (1 and 8 streams), CPU per GB, 64-byte RTT,
# new-connection time, new connections per second, 10,000 concurrent connections, idle and peak
# memory, each peer side by side with the agent/peer ratio, then where the targets stand.
# Loopback only. Installs what it needs on Debian/Ubuntu, and rathole and bore with `cargo install`
# into target/bench-tools (not ~/.cargo) on first use. Options go to bench/bench.py
# (e.g. `bench/run.sh --runs 3 --seconds 5 --conns 2000` for a quick look; `--peers agent,ssh`
# for a subset; `--wss` adds the agent over a wss:// rung, through examples/wss_terminator.rs or,
# with `--wss-terminator websockify`, the Debian package; `--audit` the agent with its audit
# trail on). `--gateway` runs the gateway case instead (bench/gateway.py: HTTP through the agent's
# HTTP forward, its plain TCP forward and Snyk Broker; installs snyk-broker with npm into
# target/bench-tools/snyk-broker on first use). With AGENT_BIN set, that binary is measured as it
# is (not built), e.g. to hold two builds against each other.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v iperf3 >/dev/null || need+=(iperf3)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh >/dev/null || need+=(openssh-client)
command -v openssl >/dev/null || need+=(openssl)
if [[ " $* " == *" websockify"* ]]; then command -v websockify >/dev/null || need+=(websockify); fi
gateway=0
if [[ " $* " == *" --gateway "* ]]; then
  gateway=1
  command -v curl >/dev/null || need+=(curl)
  # The machine's Node.js (npm comes with it); Debian's own is older than the one this was tried on.
  command -v npm >/dev/null || need+=(nodejs npm)
fi
if [ ${#need[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
tdir="${CARGO_TARGET_DIR:-$PWD/target}"

# The peers asked for (bench.py's --peers; all by default, none for --gateway): install the
# missing ones.
peers="agent,ssh,rathole,bore"
[ "$gateway" = 0 ] || peers=agent
args=("$@")
for i in "${!args[@]}"; do
  case "${args[$i]}" in
    --peers=*) peers="${args[$i]#--peers=}" ;;
    --peers) peers="${args[$((i + 1))]:-}" ;;
  esac
done
tools="${BENCH_TOOLS:-$tdir/bench-tools}"
RATHOLE_VERSION=0.5.0
BORE_VERSION=0.6.0
install_tool() { # crate version binary cargo-install-options...
  local crate=$1 version=$2 bin=$3; shift 3
  # `bore --version`: "bore-cli 0.6.0"; `rathole --version`: a block with "Build Version: 0.5.0".
  if "$tools/bin/$bin" --version 2>/dev/null | grep -Eq "^([a-z-]+ |Build Version: +)$version\$"; then return; fi
  echo "installing $crate $version into $tools (once)" >&2
  local t0=$SECONDS
  cargo install --quiet "$crate" --version "=$version" --root "$tools" --target-dir "$tools/build" --force "$@"
  rm -rf "$tools/build"
  echo "installed $crate $version in $((SECONDS - t0)) s" >&2
}
if [[ ",$peers," == *",rathole,"* ]]; then
  # Not --locked: rathole 0.5.0's Cargo.lock pins time 0.3.29, which no longer compiles on current
  # rustc (E0282 in time's format_description); without the lockfile cargo takes the newest
  # semver-compatible dependencies. rathole itself is pinned. Only the client, the server and the
  # noise transport: the default features add native TLS (OpenSSL headers) and websocket.
  install_tool rathole "$RATHOLE_VERSION" rathole --no-default-features --features server,client,noise
fi
if [[ ",$peers," == *",bore,"* ]]; then
  install_tool bore-cli "$BORE_VERSION" bore --locked
fi
export RATHOLE_BIN="$tools/bin/rathole" BORE_BIN="$tools/bin/bore"
# The gateway case's anchor: Snyk Broker from npm, pinned, in its own folder (not global). Its
# package.json asks for Node >= 24; npm only warns (EBADENGINE) and it runs on Node 20 (see
# bench/gateway.py). No install scripts: the two it has (protobufjs, dtrace-provider) are for
# features the classic broker on loopback does not use.
SNYK_BROKER_VERSION=5.22.14
export SNYK_BROKER_DIR="$tools/snyk-broker"
if [ "$gateway" = 1 ] && { [[ "$*" != *--gateway-cases* ]] || [[ "$*" == *broker* ]]; }; then
  have=$(node -p "require('$SNYK_BROKER_DIR/node_modules/snyk-broker/package.json').version" 2>/dev/null || true)
  if [ "$have" != "$SNYK_BROKER_VERSION" ]; then
    echo "installing snyk-broker $SNYK_BROKER_VERSION into $SNYK_BROKER_DIR (once)" >&2
    mkdir -p "$SNYK_BROKER_DIR"
    npm install --prefix "$SNYK_BROKER_DIR" --no-audit --no-fund --ignore-scripts --loglevel=error \
      "snyk-broker@$SNYK_BROKER_VERSION" >&2
  fi
fi

# Measure the binary that ships: static glibc, built as the Containerfile builds it (the dynamic
# build maps ~1 MiB more of shared libraries).
target="$(uname -m)-unknown-linux-gnu"
if [ -z "${AGENT_BIN:-}" ]; then
  RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --locked --target "$target" --bin agent
fi
cargo build --release --locked --example loadgen --example wss_terminator
export AGENT_BIN="${AGENT_BIN:-$tdir/$target/release/agent}"
export LOADGEN_BIN="${LOADGEN_BIN:-$tdir/release/examples/loadgen}"
export WSS_TERMINATOR_BIN="${WSS_TERMINATOR_BIN:-$tdir/release/examples/wss_terminator}"
exec python3 bench/bench.py "$@"
