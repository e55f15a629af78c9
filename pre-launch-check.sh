#!/bin/sh
# pre-launch-check.sh: run `agent check` before `agent run`, and pass its exit code through
# (0 ready, 1 a step failed, 2 the configuration must be fixed first).
#
#   ./pre-launch-check.sh                       # checks ./agent.yaml
#   ./pre-launch-check.sh --json                # one JSON document, for automation
#   ./pre-launch-check.sh tunnel.vendor.example # first contact: no config needed
#
# Which agent runs, first found wins:
#   1. $AGENT_BIN, if set;
#   2. the agent built next to this script: target/x86_64-unknown-linux-gnu/release/agent (the
#      README's static build), then target/release/agent (`cargo build --release`);
#   3. `agent` on PATH;
#   4. the container image ($AGENT_IMAGE, default localhost/agent:latest) with podman or docker,
#      on the host's network (what the agent will use), with ./agent.yaml and ./keys mounted
#      read-only. In that case the config must be ./agent.yaml, and `identity` in it relative
#      (keys/private-key.pem) so it resolves inside the container.
set -u

here=$(cd "$(dirname "$0")" && pwd)

if [ -n "${AGENT_BIN:-}" ]; then
    exec "$AGENT_BIN" check "$@"
fi
for built in "$here/target/x86_64-unknown-linux-gnu/release/agent" "$here/target/release/agent"; do
    if [ -x "$built" ]; then
        exec "$built" check "$@"
    fi
done
if command -v agent >/dev/null 2>&1; then
    exec agent check "$@"
fi

runtime=
for candidate in podman docker; do
    if command -v "$candidate" >/dev/null 2>&1; then
        runtime=$candidate
        break
    fi
done
if [ -z "$runtime" ]; then
    echo "error: no agent binary found (AGENT_BIN, $here/target/*/release/agent, agent on PATH)" >&2
    echo "  and neither podman nor docker is installed to run the container image." >&2
    echo "  fix: run \`cargo build --release\`, or install podman or docker and load the agent image" >&2
    exit 2
fi

image=${AGENT_IMAGE:-localhost/agent:latest}
# A locally built image is never pulled (there is no registry called "localhost").
case $image in
    localhost/*) pull=never ;;
    *) pull=missing ;;
esac
# Mount only what exists: a missing agent.yaml is reported by the check itself (exit 2).
set -- check -c /etc/agent/agent.yaml "$@"
if [ -d "$PWD/keys" ]; then
    set -- -v "$PWD/keys:/etc/agent/keys:ro,Z" "$image" "$@"
else
    set -- "$image" "$@"
fi
if [ -f "$PWD/agent.yaml" ]; then
    set -- -v "$PWD/agent.yaml:/etc/agent/agent.yaml:ro,Z" "$@"
fi
exec "$runtime" run --rm --pull="$pull" --network host "$@"
