#!/usr/bin/env bash
# Container smoke test: builds the agent image without any image registry and runs compose.yaml
# against a real OpenSSH sshd on the host's loopback. Checks: the image holds nothing but the
# binary, `podman healthcheck run` reports healthy, traffic flows through the forward (a small
# page and 64 MiB, with the agent's resident memory printed), a SIGKILLed agent is brought back
# by `restart: unless-stopped` and is healthy again, `down` is clean.
#
# Runs as root on Debian 12 (cgroup v1/v2 hybrid, no CAP_SYS_RESOURCE, no systemd); see
# shared/notes/containers.md for why podman needs runc, capped ulimits and podman-compose >= 1.5.
# Everything it starts (sshd, a python http.server, the compose project, the image) is stopped by
# PID or by name at the end, also on failure. Every wait is bounded. Safe to run twice in a row.
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$SECONDS
log() { printf '[container-smoke %4ss] %s\n' $((SECONDS - t0)) "$*"; }
die() { printf '[container-smoke %4ss] FAILED: %s\n' $((SECONDS - t0)) "$*" >&2; exit 1; }

PROJECT=agentci
IMAGE=localhost/agent:ci
TRIPLE=x86_64-unknown-linux-gnu
BIN=target/$TRIPLE/release/agent
PODMAN_COMPOSE_VERSION=1.6.0

# ---------------------------------------------------------------------------------------------
# 1. Tools. podman + runc (crun 1.8 refuses hybrid cgroups) + catatonit (compose `init: true`),
#    sshd/ssh-keygen for the stand-in vendor server, curl for traffic.
need=()
command -v podman >/dev/null || need+=(podman)
command -v runc >/dev/null || need+=(runc)
[ -x /usr/libexec/podman/catatonit ] || command -v catatonit >/dev/null || need+=(catatonit)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh-keygen >/dev/null || need+=(openssh-client)
command -v curl >/dev/null || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
mkdir -p /run/sshd # sshd's privilege-separation directory

work=$(mktemp -d /tmp/agent-container-smoke.XXXXXX)
chmod 0755 "$work"
sshd_pid="" http_pid=""

# Children of a process, from /proc (no name matching).
children() { cat /proc/"$1"/task/*/children 2>/dev/null || true; }

# 2. Stop whatever this run started: by PID and by this project's name, never by process name.
cleanup() {
  local rc=$?
  set +e
  if [ -n "${compose_cmd:-}" ]; then
    "${compose_cmd[@]}" down -t 5 >/dev/null 2>&1
  fi
  # Containers of this project that `down` could not remove (e.g. a crash mid-run).
  podman ps -aq --filter "label=com.docker.compose.project=$PROJECT" 2>/dev/null |
    xargs -r podman rm -f -t 2 >/dev/null 2>&1
  podman network rm -f "${PROJECT}_default" >/dev/null 2>&1
  if [ -n "$sshd_pid" ]; then
    kill -STOP "$sshd_pid" 2>/dev/null # no new session processes while we collect them
    for p in $(children "$sshd_pid"); do
      for q in $(children "$p"); do kill -KILL "$q" 2>/dev/null; done
      kill -KILL "$p" 2>/dev/null
    done
    kill -KILL "$sshd_pid" 2>/dev/null
  fi
  [ -n "$http_pid" ] && kill -KILL "$http_pid" 2>/dev/null
  wait 2>/dev/null
  podman rmi -f "$IMAGE" >/dev/null 2>&1
  rm -rf "$work"
  if [ "$rc" -ne 0 ]; then log "container smoke test FAILED (rc $rc)"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# podman-compose >= 1.5 from PyPI, in a throwaway venv (Debian's 1.0.3 breaks exec-form health
# checks). Python from PATH; Debian's own python3 needs python3-venv for this.
if ! python3 -m venv "$work/venv" >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
  python3 -m venv "$work/venv"
fi
"$work/venv/bin/pip" install -q --disable-pip-version-check "podman-compose==$PODMAN_COMPOSE_VERSION"
log "tools: $(podman --version), podman-compose $PODMAN_COMPOSE_VERSION, runc $(runc --version | awk 'NR==1{print $3}')"

# The two podman settings these machines need, kept out of /etc.
hn=$(ulimit -Hn)
cat >"$work/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$hn:$hn", "nproc=4096:4096"]
[engine]
runtime = "runc"
EOF
export CONTAINERS_CONF="$work/containers.conf"

# Leftovers of an earlier run that was killed before its cleanup (same project name).
podman ps -aq --filter "label=com.docker.compose.project=$PROJECT" | xargs -r podman rm -f -t 2 >/dev/null
podman network rm -f "${PROJECT}_default" >/dev/null 2>&1 || true
podman rmi -f "$IMAGE" >/dev/null 2>&1 || true # else the new build would leave it dangling

# ---------------------------------------------------------------------------------------------
# 3. The static binary, built on the host and staged as the `build` stage's output (/out/agent).
log "building the static binary (cargo build --release --target $TRIPLE, crt-static)"
RUSTFLAGS='-C target-feature=+crt-static' \
  cargo build --release --locked --target "$TRIPLE" --bin agent
install -D -m 0755 "$BIN" "$work/prebuilt/out/agent"
install -d -m 0700 "$work/prebuilt/out/state" # the Containerfile's build stage makes it too
linkage=$(ldd "$BIN" 2>&1 || true)
case "$linkage" in
  *"statically linked"* | *"not a dynamic executable"*) ;;
  *) die "$BIN is not statically linked: $linkage" ;;
esac

# 4. The image: --build-context replaces the `build` stage, so BUILDER_IMAGE is never pulled, and
#    RUNTIME_IMAGE=scratch needs no registry either. --format docker keeps the HEALTHCHECK.
podman build -q --format docker \
  --build-context build="$work/prebuilt" \
  --build-arg RUNTIME_IMAGE=scratch \
  -t "$IMAGE" -f Containerfile . >/dev/null
size=$(podman image inspect "$IMAGE" --format '{{.Size}}')
log "image $IMAGE built: $size bytes ($((size / 1024)) KiB), FROM scratch; the distroless default adds its base"
# Nothing but the binary may be in the image: no key, no agent.yaml, no build context.
mnt=$(podman image mount "$IMAGE")
files=$(cd "$mnt" && find . -type f | sort | tr '\n' ' ')
podman image unmount "$IMAGE" >/dev/null
[ "$files" = "./usr/local/bin/agent " ] || die "unexpected files in the image: $files"
[ "$(podman image inspect "$IMAGE" --format '{{.Config.User}}')" = "65532:65532" ] || die "image user is not 65532:65532"
podman image inspect "$IMAGE" --format '{{json .Config.Healthcheck}}' | grep -q '"CMD","/usr/local/bin/agent","health"' ||
  die "image has no exec-form HEALTHCHECK: $(podman image inspect "$IMAGE" --format '{{json .Config.Healthcheck}}')"

# ---------------------------------------------------------------------------------------------
# 5. A real OpenSSH sshd on 127.0.0.1 (like tests/it/support/sshd.rs), and a target web service.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() { # PORT SECONDS
  local i
  for ((i = 0; i < $2 * 10; i++)); do port_open "$1" && return 0; sleep 0.1; done
  return 1
}

mkdir -p "$work/run" "$work/sshd" "$work/www"
"$BIN" keygen --out-dir "$work/run/keys" --bits 2048 --comment container-smoke >/dev/null
# The image's user must be able to read the key, and it must be 0400/0600.
chown 65532:65532 "$work/run/keys/private-key.pem"
chmod 0400 "$work/run/keys/private-key.pem"
chmod 0755 "$work/run/keys"

ssh-keygen -q -t ed25519 -N '' -C smoke-sshd -f "$work/sshd/host_key"
host_key=$(awk '{print $1" "$2}' "$work/sshd/host_key.pub")
cp "$work/run/keys/public-key.pem" "$work/sshd/authorized_keys"
for attempt in 1 2 3; do
  sshd_port=$(free_port)
  cat >"$work/sshd/sshd_config" <<EOF
ListenAddress 127.0.0.1:$sshd_port
HostKey $work/sshd/host_key
PidFile $work/sshd/sshd.pid
AuthorizedKeysFile $work/sshd/authorized_keys
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
AllowTcpForwarding remote
PermitListen any
PermitTTY no
X11Forwarding no
AllowAgentForwarding no
LogLevel INFO
EOF
  /usr/sbin/sshd -D -e -f "$work/sshd/sshd_config" 2>>"$work/sshd/sshd.log" </dev/null &
  sshd_pid=$!
  wait_port "$sshd_port" 10 && break
  kill -KILL "$sshd_pid" 2>/dev/null || true
  wait "$sshd_pid" 2>/dev/null || true
  sshd_pid=""
  [ "$attempt" = 3 ] && die "sshd did not start: $(tail -5 "$work/sshd/sshd.log")"
done
log "sshd (pid $sshd_pid) on 127.0.0.1:$sshd_port"

token="container-smoke-$RANDOM$RANDOM"
echo "$token" >"$work/www/index.txt"
head -c $((64 * 1024 * 1024)) /dev/urandom >"$work/www/blob"
http_port=$(free_port)
python3 -m http.server --bind 127.0.0.1 --directory "$work/www" "$http_port" >/dev/null 2>&1 &
http_pid=$!
wait_port "$http_port" 10 || die "http.server did not start"

remote_port=$(free_port)
admin_port=$(free_port)
cat >"$work/run/agent.yaml" <<EOF
server:
  host: 127.0.0.1
  ports: [$sshd_port]
  user: $(id -un)
  host_keys: ["$host_key"]
identity: keys/private-key.pem
forwards:
  - name: web
    remote: "127.0.0.1:$remote_port"
    target: 127.0.0.1:$http_port
reconnect: { initial: 1s, max: 5s }
# Inside the container, like compose's health check; with the CI's host network this is the
# host's loopback, hence a free port rather than 9464.
admin: { listen: "127.0.0.1:$admin_port" }
log: { format: json, level: info }
EOF
chmod 0644 "$work/run/agent.yaml"

# ---------------------------------------------------------------------------------------------
# 6. compose up against it.
export AGENT_IMAGE="$IMAGE" AGENT_YAML="$work/run/agent.yaml" AGENT_KEYS_DIR="$work/run/keys"
compose_cmd=("$work/venv/bin/podman-compose" -p "$PROJECT" -f compose.yaml -f .ci/compose.ci.yaml)
"${compose_cmd[@]}" up -d --no-build >"$work/up.log" 2>&1 || { cat "$work/up.log"; die "compose up failed"; }
ctr=$(podman ps -a --filter "label=com.docker.compose.project=$PROJECT" --format '{{.Names}}' | head -1)
[ -n "$ctr" ] || die "compose up started no container"
log "compose up: container $ctr"

dump() {
  echo "--- podman ps -a" >&2
  podman ps -a --filter "label=com.docker.compose.project=$PROJECT" >&2 || true
  echo "--- compose logs (last 40 lines)" >&2
  "${compose_cmd[@]}" logs 2>&1 | tail -n 40 >&2 || true
  echo "--- sshd log (last 10 lines)" >&2
  tail -n 10 "$work/sshd/sshd.log" >&2 || true
}

# No systemd, so podman's health timers never fire: run the check by hand until it passes.
wait_healthy() { # SECONDS
  local i
  for ((i = 0; i < $1; i++)); do
    if podman healthcheck run "$ctr" >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  return 1
}
wait_healthy 60 || { dump; die "container not healthy within 60 s"; }
[ "$(podman inspect "$ctr" --format '{{.State.Health.Status}}')" = healthy ] || { dump; die "health status is not healthy"; }
log "healthy (podman healthcheck run)"

fetch_token() { curl -fsS --max-time 10 "http://127.0.0.1:$remote_port/index.txt"; }
body=$(fetch_token) || { dump; die "no answer through the forward on 127.0.0.1:$remote_port"; }
[ "$body" = "$token" ] || die "wrong body through the forward: $body"
log "traffic through the forward: 127.0.0.1:$remote_port (sshd) -> agent -> 127.0.0.1:$http_port"

# The control socket in the image's state folder (the compose volume): status, then the kill
# switch closes the forward and resume opens it again.
podman exec "$ctr" /usr/local/bin/agent status >"$work/status.txt" 2>&1 ||
  { cat "$work/status.txt" >&2; dump; die "agent status inside the container failed"; }
grep -q '^web  *open' "$work/status.txt" || { cat "$work/status.txt" >&2; die "status does not show web open"; }
podman exec "$ctr" /usr/local/bin/agent pause --reason "ci smoke" >/dev/null || { dump; die "agent pause failed"; }
for ((i = 0; i < 20; i++)); do fetch_token >/dev/null 2>&1 || break; sleep 0.25; done
fetch_token >/dev/null 2>&1 && die "the forward still answers after agent pause"
podman exec "$ctr" /usr/local/bin/agent resume >/dev/null || { dump; die "agent resume failed"; }
for ((i = 0; i < 40; i++)); do body=$(fetch_token 2>/dev/null) && break; sleep 0.25; done
[ "$body" = "$token" ] || { dump; die "the forward did not come back after agent resume"; }
log "agent status / pause / resume through the control socket in the container's state volume"

# The agent is the init's (catatonit's) child: State.Pid is PID 1 of the container.
agent_pid() {
  local init
  init=$(podman inspect "$ctr" --format '{{.State.Pid}}')
  [ "$init" -gt 0 ] 2>/dev/null || return 1
  children "$init" | awk '{print $1}'
}
kib() { awk -v k="$1:" '$1 == k {print $2}' "/proc/$2/status"; }
pid=$(agent_pid) || die "cannot find the agent process"
[ -n "$pid" ] || die "the container's init has no child"
idle_rss=$(kib VmRSS "$pid")
got=$(curl -fsS --max-time 120 -o /dev/null -w '%{size_download}' "http://127.0.0.1:$remote_port/blob") ||
  { dump; die "64 MiB download through the forward failed"; }
[ "$got" = $((64 * 1024 * 1024)) ] || die "64 MiB download: got $got bytes"
log "agent memory: idle VmRSS $((idle_rss / 1024)) MiB; after a 64 MiB transfer VmRSS $(($(kib VmRSS "$pid") / 1024)) MiB, peak VmHWM $(($(kib VmHWM "$pid") / 1024)) MiB"

# ---------------------------------------------------------------------------------------------
# 7. SIGKILL the agent; `restart: unless-stopped` must bring the container back, healthy.
restarts=$(podman inspect "$ctr" --format '{{.RestartCount}}')
kill -KILL "$pid"
log "SIGKILLed the agent (pid $pid)"
back=""
for ((i = 0; i < 60; i++)); do
  sleep 0.5
  if [ "$(podman inspect "$ctr" --format '{{.RestartCount}}')" -gt "$restarts" ] &&
    [ "$(podman inspect "$ctr" --format '{{.State.Status}}')" = running ]; then
    back=1
    break
  fi
done
[ -n "$back" ] || { dump; die "the restart policy did not restart the container within 30 s"; }
log "restarted by the restart policy (RestartCount $(podman inspect "$ctr" --format '{{.RestartCount}}'))"
wait_healthy 60 || { dump; die "not healthy again within 60 s of the restart"; }
body=$(fetch_token) || { dump; die "no answer through the forward after the restart"; }
[ "$body" = "$token" ] || die "wrong body after the restart: $body"
log "healthy again and forwarding"

# ---------------------------------------------------------------------------------------------
# 8. ps, logs, down.
"${compose_cmd[@]}" ps 2>/dev/null | tail -n +1
"${compose_cmd[@]}" logs 2>/dev/null | grep -c '"forward granted"' >/dev/null || { dump; die "no 'forward granted' in compose logs"; }
stop_start=$SECONDS
"${compose_cmd[@]}" down -t 10 >/dev/null 2>&1 || die "compose down failed"
compose_cmd=()
[ -z "$(podman ps -aq --filter "label=com.docker.compose.project=$PROJECT")" ] || die "containers left after down"
log "down in $((SECONDS - stop_start)) s"
log "container smoke test passed"
