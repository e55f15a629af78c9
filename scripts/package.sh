#!/usr/bin/env bash
# Builds the agent's native packages: target/packages/*.deb (cargo-deb) and
# target/packages/*.rpm (cargo-generate-rpm), from the static binary (crt-static, as the
# Containerfile builds it), the systemd unit in packaging/ and the metadata in Cargo.toml.
#
#   scripts/package.sh            # -> target/packages/agent_<version>-1_amd64.deb, agent-<version>-1.x86_64.rpm
#
# "target" is $CARGO_TARGET_DIR when set. On first use the two packaging tools are installed with
# `cargo install --locked` into target/tools (nothing global changes); later runs reuse them.
# Idempotent: a second run replaces the packages.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION=3.8.0
CARGO_GENERATE_RPM_VERSION=0.21.1

target_dir=${CARGO_TARGET_DIR:-target}
mkdir -p "$target_dir"
target_dir=$(cd "$target_dir" && pwd)
tools="$target_dir/tools"
out="$target_dir/packages"
triple="$(uname -m)-unknown-linux-gnu"
log() { printf '[package] %s\n' "$*"; }

# 1. The packaging tools, pinned, with their own lock files, in a folder of their own.
install_tool() { # CRATE VERSION
  local bin="$tools/bin/$1"
  if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -qF "$2"; then return 0; fi
  log "installing $1 $2 into $tools (first use)"
  cargo install --quiet --locked --root "$tools" --version "$2" "$1"
}
install_tool cargo-deb "$CARGO_DEB_VERSION"
install_tool cargo-generate-rpm "$CARGO_GENERATE_RPM_VERSION"
export PATH="$tools/bin:$PATH"

# 2. The static binary, exactly as the Containerfile builds it. `--target` keeps RUSTFLAGS away
#    from build scripts and proc-macros, which cannot be linked statically.
log "building the static binary ($triple, crt-static)"
RUSTFLAGS='-C target-feature=+crt-static' \
  cargo build --release --locked --target "$triple" --bin agent
built="$target_dir/$triple/release/agent"

# The target dir may be shared with other builds: package a private copy, taken right away.
# The staging folder holds nothing but that copy, at the path both tools derive from
# "target/release/agent" with --target.
stage=$(mktemp -d /tmp/agent-package.XXXXXX)
trap 'rm -rf "$stage"' EXIT
install -D -m 0755 "$built" "$stage/$triple/release/agent"
linkage=$(ldd "$stage/$triple/release/agent" 2>&1 || true)
case "$linkage" in
  *"statically linked"* | *"not a dynamic executable"*) ;;
  *)
    echo "package: $built is not statically linked: $linkage" >&2
    exit 1
    ;;
esac

# 3. The packages. --no-build: the binary above is the one packaged; it is already stripped by
#    the release profile.
mkdir -p "$out"
rm -f "$out"/agent*.deb "$out"/agent*.rpm
log "cargo deb"
CARGO_TARGET_DIR="$stage" cargo deb --no-build --no-strip --target "$triple" --output "$out/" >/dev/null
log "cargo generate-rpm"
cargo generate-rpm --target "$triple" --target-dir "$stage" --output "$out/" >/dev/null
for f in "$out"/*.deb "$out"/*.rpm; do
  log "wrote ${f#"$PWD"/} ($(stat -c %s "$f") bytes)"
done
