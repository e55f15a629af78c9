#!/usr/bin/env bash
# The whole test suite, on a fresh Debian/Ubuntu machine or a developer's laptop: installs what
# the tests need (a real OpenSSH sshd and client, Dropbear for tests/it/tunnel_dropbear.rs,
# openssl, the proxies tinyproxy and microsocks for tests/it/proxy.rs, iptables for
# tests/it/deadlink.rs, websockify, stunnel4 and squid-openssl for tests/it/transports.rs, and
# Python's paramiko for the hostile-server suite in tests/it/hostile.rs) when missing, builds the
# static release binary that ships (the hostile suite runs it), then runs every test: the unit
# tests and one integration-test binary (tests/it). Tests start their own servers on 127.0.0.1
# with their own config; nothing else is touched.
set -euo pipefail
cd "$(dirname "$0")/.."

# The first Python that can import paramiko: python3 on PATH (a developer's, perhaps with a pip
# install), else the system one, where Debian's python3-paramiko goes.
python_with_paramiko() {
  local py
  for py in python3 /usr/bin/python3; do
    if command -v "$py" >/dev/null && "$py" -c 'import paramiko' 2>/dev/null; then
      command -v "$py"
      return 0
    fi
  done
  return 1
}

need=()
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh >/dev/null || need+=(openssh-client)
# tests/it/tunnel_dropbear.rs: a second SSH server implementation (it runs in a mount namespace of
# its own, made with unshare and mount from util-linux).
[ -x /usr/sbin/dropbear ] && command -v dropbearkey >/dev/null || need+=(dropbear-bin)
command -v openssl >/dev/null || need+=(openssl)
# tests/it/http.rs: curl plays the vendor, and git clones through the gateway from
# `git http-backend` (shipped with git).
command -v curl >/dev/null || need+=(curl)
git http-backend </dev/null >/dev/null 2>&1 || command -v git >/dev/null || need+=(git)
command -v tinyproxy >/dev/null || need+=(tinyproxy)
command -v microsocks >/dev/null || need+=(microsocks)
# tests/it/deadlink.rs drops packets with iptables inside a network namespace it creates (unshare,
# from util-linux, is always there; `ip` comes with iproute2).
command -v iptables >/dev/null || need+=(iptables)
command -v ip >/dev/null || need+=(iproute2)
# tests/it/transports.rs: the vendor-side terminators (wss, tls) and squid with ssl-bump support
# (Debian's plain `squid` is built without OpenSSL: no https_port, no ssl-bump).
command -v websockify >/dev/null || need+=(websockify)
command -v stunnel4 >/dev/null || need+=(stunnel4)
[ -x /usr/lib/squid/security_file_certgen ] || need+=(squid-openssl)
# Debian's package rather than pip: a fresh Debian 12+ / Ubuntu 23.04+ has no pip, and its pip
# refuses to install into the system Python anyway (PEP 668, "externally-managed-environment").
# The package brings python3 with it; Debian 12+ and Ubuntu 22.04+ ship paramiko 2.9 or later,
# which the suite needs (rsa-sha2 signatures: the agent never signs with SHA-1).
python_with_paramiko >/dev/null || need+=(python3-paramiko)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing test prerequisites: ${need[*]}"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # The tests start their own tinyproxy, squid and stunnel; do not leave the packaged services
  # running where systemd started them on install.
  for svc in tinyproxy squid stunnel4; do
    if [[ " ${need[*]} " == *" $svc"* ]] && command -v systemctl >/dev/null \
      && systemctl is-active --quiet "$svc" 2>/dev/null; then
      $sudo systemctl disable --now "$svc" >/dev/null 2>&1 || true
    fi
  done
fi
# sshd refuses to start without its privilege-separation directory.
[ -d /run/sshd ] || { [ "$(id -u)" = 0 ] && mkdir -p /run/sshd || sudo mkdir -p /run/sshd; }

# tests/it/hostile.rs runs this Python and the release binary: a missing one fails the run.
if ! AGENT_TEST_PYTHON="$(python_with_paramiko)"; then
  echo "no Python with paramiko, even after installing python3-paramiko: the hostile-server suite cannot run" >&2
  exit 1
fi
export AGENT_TEST_PYTHON
# The binary that ships: static (crt-static), built exactly as scripts/package.sh and the
# Containerfile build it (in CI, packaging.sh has built it already and this is a no-op).
triple="$(uname -m)-unknown-linux-gnu"
RUSTFLAGS='-C target-feature=+crt-static' \
  cargo build --locked --release --target "$triple" --bin agent
target_dir="$(cargo metadata --locked --format-version 1 --no-deps \
  | "$AGENT_TEST_PYTHON" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
export AGENT_RELEASE_BIN="$target_dir/$triple/release/agent"
[ -x "$AGENT_RELEASE_BIN" ] || { echo "no release binary at $AGENT_RELEASE_BIN" >&2; exit 1; }

# Unit and integration tests (the crate has no doc tests; leaving them out keeps the last summary
# line a real one).
cargo test --locked --lib --tests "$@"
