#!/usr/bin/env bash
# The whole test suite, on a fresh Debian/Ubuntu machine or a developer's laptop:
# installs what the tests need (a real OpenSSH sshd and client, openssl, and the proxies tinyproxy
# and microsocks for tests/proxy.rs) when missing, then runs
# every test. Tests start their own sshd on 127.0.0.1 with their own config; nothing else is touched.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh >/dev/null || need+=(openssh-client)
command -v openssl >/dev/null || need+=(openssl)
command -v tinyproxy >/dev/null || need+=(tinyproxy)
command -v microsocks >/dev/null || need+=(microsocks)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing test prerequisites: ${need[*]}"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # The tests start their own tinyproxy; do not leave the packaged service running where
  # systemd started it on install.
  if [[ " ${need[*]} " == *" tinyproxy "* ]] && command -v systemctl >/dev/null \
    && systemctl is-active --quiet tinyproxy 2>/dev/null; then
    $sudo systemctl disable --now tinyproxy >/dev/null 2>&1 || true
  fi
fi
# sshd refuses to start without its privilege-separation directory.
[ -d /run/sshd ] || { [ "$(id -u)" = 0 ] && mkdir -p /run/sshd || sudo mkdir -p /run/sshd; }

# Unit and integration tests (the crate has no doc tests; leaving them out keeps the last summary
# line a real one).
cargo test --locked --lib --bins --tests "$@"
