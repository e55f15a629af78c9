#!/usr/bin/env bash
# Rewrites link/hot-symbols.txt (see bench/hot_symbols.py for why and how). Run it after a
# toolchain or dependency update, then rebuild; `bench/run.sh` shows the idle RSS it buys.
# x86_64 Linux only; needs valgrind, sshd and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v valgrind >/dev/null || need+=(valgrind)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
target=x86_64-unknown-linux-gnu
# Both release builds users run, with their symbol tables kept (names in the file must be the
# names each build links): the Containerfile's static one and the README's plain one.
RUSTFLAGS='-C target-feature=+crt-static' \
  cargo rustc --release --locked --target "$target" --bin agent -- -C strip=none
cargo rustc --release --locked --bin agent -- -C strip=none
cargo build --release --locked --example loadgen
python3 bench/hot_symbols.py link/hot-symbols.txt "$PWD/target/$target/release/agent" "$PWD/target/release/agent"
