#!/usr/bin/env bash
# Packaging test: builds the .deb and .rpm with scripts/package.sh, installs the .deb on THIS
# machine (dpkg -i: CI's machine is a throwaway Debian box, run as root) and checks
#   - the files, their owners and modes, the `agent` system user, the conffile, that nothing was
#     enabled, started or generated (no key);
#   - `systemd-analyze verify` of the installed unit, and its `systemd-analyze security` score;
#   - the installed /usr/bin/agent, as the `agent` user with no new privileges and no
#     capabilities: `agent keygen` into /etc/agent/keys, `agent check` against a real OpenSSH
#     sshd on 127.0.0.1 (exit 0), then `agent run` under strace while traffic flows through the
#     forward, `agent status` uses the control socket, SIGHUP reloads and SIGTERM stops it: every
#     system call it made must pass the unit's SystemCallFilter, every socket must be of a family
#     in RestrictAddressFamilies, and no mapping may be writable and executable
#     (MemoryDenyWriteExecute). (No systemd runs on CI's machine, so the unit itself cannot be
#     started here; this is how its sandbox is checked against what the agent does.)
#   - an upgrade (the next revision) keeps the edited agent.yaml and the key; `dpkg --purge` removes the package's
#     files and keeps the key, the state folder with the audit trail, and the user;
#   - the .rpm's file list, file flags (agent.yaml %config(noreplace)) and scriptlets, with
#     `rpm -qlp --scripts`.
#   - the unit under a real systemd 252 (PID 1 of a podman container made with debootstrap, with
#     the .deb installed): it starts as user agent with the sandbox in force and nothing ignored,
#     serves the forward, reloads on `systemctl reload`, is restarted after a SIGKILL, stops
#     with status 0.
# A missing tool is installed (apt-get); if it cannot be, the test fails. Everything it starts
# (sshd, a web server, the agent under strace, the container) is stopped by PID or by its own
# name, also on failure. Safe to run
# twice in a row. It refuses to touch an `agent` package, /etc/agent or /var/lib/agent that an
# earlier run of this script did not create.
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$SECONDS
log() { printf '[packaging %4ss] %s\n' $((SECONDS - t0)) "$*"; }
die() {
  printf '[packaging %4ss] FAILED: %s\n' $((SECONDS - t0)) "$*" >&2
  exit 1
}
[ "$(id -u)" = 0 ] || die "must run as root (it installs the .deb)"

CTR=agent-packaging-systemd CTR_IMAGE=localhost/agent-packaging-systemd:ci
MARK=.agent-packaging-test # left in /etc/agent and /var/lib/agent by this script only
UNIT=/usr/lib/systemd/system/agent.service
# The exposure score README.md states for the unit ("Install as a service"): the test fails
# when the unit scores worse, so a weakened sandbox cannot go unnoticed.
MAX_EXPOSURE=1.4

# ---------------------------------------------------------------------------------------------
# 1. Tools.
need=()
command -v rpm >/dev/null || need+=(rpm)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh-keygen >/dev/null || need+=(openssh-client)
command -v strace >/dev/null || need+=(strace)
command -v curl >/dev/null || need+=(curl)
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v setpriv >/dev/null || need+=(util-linux)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v podman >/dev/null || need+=(podman)
command -v runc >/dev/null || need+=(runc)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
for t in rpm /usr/sbin/sshd ssh-keygen strace curl systemd-analyze setpriv dpkg python3 debootstrap podman runc; do
  command -v "$t" >/dev/null || die "$t is missing"
done
mkdir -p /run/sshd # sshd's privilege-separation directory

# ---------------------------------------------------------------------------------------------
# 2. Leftovers of an earlier run of this script (and nothing else).
remove_test_install() {
  if dpkg-query -W -f='${Status}' agent 2>/dev/null | grep -q 'installed\|config-files'; then
    dpkg --purge agent >/dev/null
  fi
  rm -rf /etc/agent /var/lib/agent
  if getent passwd agent >/dev/null; then userdel agent; fi
  if getent group agent >/dev/null; then groupdel agent; fi
}
if [ -e /etc/agent/$MARK ] || [ -e /var/lib/agent/$MARK ]; then
  log "removing the test install of an earlier run"
  remove_test_install
fi
if dpkg-query -W -f='${Status}' agent 2>/dev/null | grep -q 'installed\|config-files' ||
  [ -e /etc/agent ] || [ -e /var/lib/agent ] || getent passwd agent >/dev/null; then
  die "an agent package, /etc/agent, /var/lib/agent or user agent exists that this test did not create: not touching it"
fi

work=$(mktemp -d /tmp/agent-packaging.XXXXXX)
chmod 0755 "$work"
sshd_pid="" http_pid="" agent_pid=""
children() { cat /proc/"$1"/task/*/children 2>/dev/null || true; }
cleanup() {
  local rc=$?
  set +e
  [ -n "$agent_pid" ] && kill -KILL "$agent_pid" 2>/dev/null
  if [ -n "${CONTAINERS_CONF:-}" ]; then
    podman rm -f -t 2 "$CTR" >/dev/null 2>&1
    podman rmi -f "$CTR_IMAGE" >/dev/null 2>&1
  fi
  if [ -n "$sshd_pid" ]; then
    kill -STOP "$sshd_pid" 2>/dev/null
    for p in $(children "$sshd_pid"); do
      for q in $(children "$p"); do kill -KILL "$q" 2>/dev/null; done
      kill -KILL "$p" 2>/dev/null
    done
    kill -KILL "$sshd_pid" 2>/dev/null
  fi
  [ -n "$http_pid" ] && kill -KILL "$http_pid" 2>/dev/null
  wait 2>/dev/null
  if [ -e /etc/agent/$MARK ] || [ -e /var/lib/agent/$MARK ]; then remove_test_install; fi
  # A debootstrap that failed half-way may leave /proc, /sys... mounted in the rootfs.
  awk -v w="$work/" 'index($2, w) == 1 {print $2}' /proc/mounts | sort -r | xargs -r -n1 umount -l
  rm -rf --one-file-system "$work"
  if [ "$rc" -ne 0 ]; then log "packaging test FAILED (rc $rc)"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------------------------
# 3. Build both packages.
log "scripts/package.sh"
scripts/package.sh
pkgdir="${CARGO_TARGET_DIR:-target}/packages"
debs=("$pkgdir"/agent_*.deb)
rpms=("$pkgdir"/agent-*.rpm)
[ ${#debs[@]} = 1 ] && [ -f "${debs[0]}" ] || die "expected one .deb in $pkgdir: ${debs[*]}"
[ ${#rpms[@]} = 1 ] && [ -f "${rpms[0]}" ] || die "expected one .rpm in $pkgdir: ${rpms[*]}"
deb=${debs[0]} rpmf=${rpms[0]}
# Copies: the target dir may be shared with other builds.
cp "$deb" "$work/agent.deb"
cp "$rpmf" "$work/agent.rpm"

# No maintainer script may generate a key (comments aside).
dpkg-deb -e "$work/agent.deb" "$work/control"
if cat "$work"/control/* | grep -v '^[[:space:]]*#' | grep -q keygen; then die ".deb maintainer scripts run keygen"; fi

# ---------------------------------------------------------------------------------------------
# 4. Install the .deb and check what it put where.
log "dpkg -i $(basename "$deb")"
dpkg -i "$work/agent.deb" >/dev/null
touch /etc/agent/$MARK
[ "$(dpkg-query -W -f='${Status}' agent)" = "install ok installed" ] || die "agent not installed"

expect() { # PATH TYPE MODE OWNER:GROUP
  [ -e "$1" ] || die "$1 missing"
  local got
  got=$(stat -c '%F %a %U:%G' "$1")
  [ "$got" = "$2 $3 $4" ] || die "$1: expected '$2 $3 $4', got '$got'"
}
expect /usr/bin/agent "regular file" 755 root:root
expect $UNIT "regular file" 644 root:root
expect /usr/lib/sysusers.d/agent.conf "regular file" 644 root:root
expect /etc/agent directory 750 root:agent
expect /etc/agent/agent.yaml "regular file" 640 root:agent
expect /etc/agent/keys directory 700 agent:agent
case "$(ldd /usr/bin/agent 2>&1 || true)" in
  *"statically linked"* | *"not a dynamic executable"*) ;;
  *) die "/usr/bin/agent is not statically linked" ;;
esac
/usr/bin/agent --version >/dev/null || die "/usr/bin/agent --version failed"
IFS=: read -r _ _ uid _ _ home shell < <(getent passwd agent) || die "user agent was not created"
[ "$uid" -lt 1000 ] || die "user agent is not a system user (uid $uid)"
[ "$home" = /var/lib/agent ] && [ "$shell" = /usr/sbin/nologin ] || die "user agent: home $home, shell $shell"
dpkg-query -W -f='${Conffiles}\n' agent | grep -q '^ /etc/agent/agent.yaml ' ||
  die "/etc/agent/agent.yaml is not a conffile"
[ -z "$(ls -A /etc/agent/keys)" ] || die "something generated a key on install: $(ls -A /etc/agent/keys)"
[ ! -e /etc/systemd/system/multi-user.target.wants/agent.service ] || die "the package enabled agent.service"
log "files, owners, modes, user agent (uid $uid), conffile: ok; nothing enabled, no key"

# ---------------------------------------------------------------------------------------------
# 5. The unit: systemd-analyze verify (no output, exit 0) and the exposure score.
verify_out=$(systemd-analyze verify $UNIT 2>&1) || die "systemd-analyze verify failed: $verify_out"
[ -z "$verify_out" ] || die "systemd-analyze verify complained: $verify_out"
score=$(systemd-analyze security --offline=yes $UNIT 2>&1 | sed -n 's/.*Overall exposure level for agent.service: \([0-9.]*\).*/\1/p')
[ -n "$score" ] || die "systemd-analyze security printed no score"
awk -v s="$score" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(s <= m) }' ||
  die "exposure score $score is worse than the README's $MAX_EXPOSURE"
log "systemd-analyze verify: clean; security --offline: $score"

# ---------------------------------------------------------------------------------------------
# 6. The installed binary against a real sshd, as the service runs it: user agent, no new
#    privileges, no capabilities, only AGENT_CONFIG and AGENT_STATE_DIR in the environment.
as_agent=(setpriv --reuid=agent --regid=agent --init-groups --no-new-privs --bounding-set=-all
  --inh-caps=-all env -i AGENT_CONFIG=/etc/agent/agent.yaml AGENT_STATE_DIR=/var/lib/agent)
# What StateDirectory=agent does when systemd starts the unit.
install -d -o agent -g agent -m 0700 /var/lib/agent
touch /var/lib/agent/$MARK

"${as_agent[@]}" /usr/bin/agent keygen --out-dir /etc/agent/keys --bits 2048 --comment packaging-test >/dev/null
expect /etc/agent/keys/private-key.pem "regular file" 400 agent:agent

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() { # PORT SECONDS
  local i
  for ((i = 0; i < $2 * 10; i++)); do port_open "$1" && return 0; sleep 0.1; done
  return 1
}

mkdir -p "$work/sshd" "$work/www"
ssh-keygen -q -t ed25519 -N '' -C packaging-sshd -f "$work/sshd/host_key"
host_key=$(awk '{print $1" "$2}' "$work/sshd/host_key.pub")
cp /etc/agent/keys/public-key.pem "$work/sshd/authorized_keys"
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

token="packaging-$RANDOM$RANDOM"
echo "$token" >"$work/www/index.txt"
http_port=$(free_port)
python3 -m http.server --bind 127.0.0.1 --directory "$work/www" "$http_port" >/dev/null 2>&1 &
http_pid=$!
wait_port "$http_port" 10 || die "http.server did not start"
log "sshd (pid $sshd_pid) on 127.0.0.1:$sshd_port, web target on 127.0.0.1:$http_port"

# The customer's edit of the conffile.
remote_port=$(free_port)
admin_port=$(free_port)
cat >/etc/agent/agent.yaml <<EOF
# edited by .ci/packaging.sh
server:
  host: 127.0.0.1
  ports: [$sshd_port]
  user: root
  host_keys: ["$host_key"]
identity: keys/private-key.pem
forwards:
  - name: web
    remote: "127.0.0.1:$remote_port"
    target: 127.0.0.1:$http_port
reconnect: { initial: 1s, max: 5s }
admin: { listen: "127.0.0.1:$admin_port" }
log: { format: text, level: info }
audit: { file: /var/lib/agent/audit.jsonl }
EOF

rc=0
"${as_agent[@]}" /usr/bin/agent check >"$work/check.out" 2>&1 || rc=$?
[ "$rc" = 0 ] || { cat "$work/check.out" >&2; die "agent check exited $rc"; }
log "agent check (as user agent, installed binary, real sshd): exit 0"

# agent run under strace: what it does, checked against the unit's sandbox. strace runs as
# user agent too (it writes its output there), so the agent's privileges are the service's.
install -d -o agent -g agent -m 0700 "$work/trace"
"${as_agent[@]}" strace -f -qq -o "$work/trace/strace.out" /usr/bin/agent run >"$work/run.log" 2>&1 &
agent_pid=$!
ready=""
for _ in $(seq 1 100); do
  if "${as_agent[@]}" /usr/bin/agent health >/dev/null 2>&1; then ready=1 && break; fi
  sleep 0.2
done
[ -n "$ready" ] || { tail -20 "$work/run.log" >&2; die "agent run never became ready"; }
body=$(curl -fsS --max-time 10 "http://127.0.0.1:$remote_port/index.txt") || die "no answer through the forward"
[ "$body" = "$token" ] || die "wrong body through the forward: $body"
"${as_agent[@]}" /usr/bin/agent status >/dev/null || die "agent status (control socket) failed"
# ExecReload: SIGHUP to the agent (strace's child).
main=$(children "$agent_pid" | awk '{print $1}')
[ -n "$main" ] || die "cannot find the agent under strace"
kill -HUP "$main"
for _ in $(seq 1 50); do grep -q 'reload' "$work/run.log" && break; sleep 0.1; done
grep -qi 'reload' "$work/run.log" || { tail -20 "$work/run.log" >&2; die "no reload logged after SIGHUP"; }
kill -TERM "$main"
rc=0
wait "$agent_pid" || rc=$?
agent_pid=""
[ "$rc" = 0 ] || { tail -20 "$work/run.log" >&2; die "agent run exited $rc on SIGTERM"; }
log "agent run as user agent: ready, traffic through the forward, status, SIGHUP reload, SIGTERM exit 0"

# SystemCallFilter=@system-service minus @privileged @resources, expanded from systemd-analyze.
expand() {
  systemd-analyze syscall-filter "$1" | awk 'NR > 1 && NF == 1 && $1 !~ /^#/ {print $1}' |
    while read -r s; do case $s in @*) expand "$s" ;; *) echo "$s" ;; esac; done
}
expand @system-service | sort -u >"$work/allowed"
{ expand @privileged; expand @resources; } | sort -u >"$work/denied"
used=$(grep -v -e '^[0-9]* *+++' -e '^[0-9]* *---' -e 'resumed>' "$work/trace/strace.out" |
  sed -nE 's/^[0-9]+ +([a-z0-9_]+)\(.*/\1/p' | sort -u)
[ -n "$used" ] || die "strace recorded no system call"
bad=""
for s in $used; do
  if ! grep -qx "$s" "$work/allowed" || grep -qx "$s" "$work/denied"; then bad="$bad $s"; fi
done
[ -z "$bad" ] || die "system calls outside SystemCallFilter:$bad"
families=$(sed -nE 's/.* socket\((AF_[A-Z0-9]+),.*/\1/p' "$work/trace/strace.out" | sort -u | tr '\n' ' ')
for f in $families; do
  case $f in AF_INET | AF_INET6 | AF_UNIX) ;; *) die "socket of family $f outside RestrictAddressFamilies" ;; esac
done
if grep -E ' (mmap|mprotect|pkey_mprotect)\(.*PROT_EXEC' "$work/trace/strace.out" | grep -qE 'mprotect|PROT_WRITE'; then
  die "writable+executable or mprotect(PROT_EXEC) mapping, MemoryDenyWriteExecute would refuse it: $(grep -E 'PROT_EXEC' "$work/trace/strace.out" | head -3)"
fi
if grep -E ' prctl\(' "$work/trace/strace.out" | grep -qE 'PR_SET_DUMPABLE, (0|SUID_DUMP_DISABLE)\) += 0'; then :; else
  die "agent run did not call prctl(PR_SET_DUMPABLE, 0)"
fi
log "sandbox: $(echo "$used" | wc -l) distinct system calls all in SystemCallFilter; socket families: ${families:-none}; no W+X mapping"

# ---------------------------------------------------------------------------------------------
# 7. Reinstall keeps the customer's config and key; purge keeps key, state, audit, user.
# An upgrade: the same package with the next revision (repacked), installed over this one.
dpkg-deb -R "$work/agent.deb" "$work/next"
version=$(dpkg-deb -f "$work/agent.deb" Version)
sed -i "s/^Version: .*/Version: ${version%-*}-$((${version##*-} + 1))/" "$work/next/DEBIAN/control"
dpkg-deb -b -Znone --root-owner-group "$work/next" "$work/agent-next.deb" >/dev/null
sum_yaml=$(sha256sum /etc/agent/agent.yaml)
sum_key=$(sha256sum /etc/agent/keys/private-key.pem)
dpkg -i "$work/agent-next.deb" </dev/null >/dev/null
[ "$(dpkg-query -W -f='${Version}' agent)" != "$version" ] || die "the upgrade did not happen"
[ "$(sha256sum /etc/agent/agent.yaml)" = "$sum_yaml" ] || die "the upgrade overwrote agent.yaml"
[ "$(sha256sum /etc/agent/keys/private-key.pem)" = "$sum_key" ] || die "the upgrade touched the key"
expect /etc/agent/agent.yaml "regular file" 640 root:agent
expect /etc/agent/keys directory 700 agent:agent
log "upgrade to $(dpkg-query -W -f='${Version}' agent): agent.yaml and key unchanged"

[ -s /var/lib/agent/audit.jsonl ] || die "no audit trail was written"
dpkg --purge agent >/dev/null
for gone in /usr/bin/agent $UNIT /usr/lib/sysusers.d/agent.conf /etc/agent/agent.yaml; do
  [ ! -e "$gone" ] || die "$gone still there after purge"
done
for kept in /etc/agent/keys/private-key.pem /etc/agent/keys/public-key.pem /var/lib/agent/audit.jsonl; do
  [ -e "$kept" ] || die "$kept removed by purge"
done
getent passwd agent >/dev/null || die "purge removed user agent"
log "purge: package files gone; key, audit trail, state folder and user agent kept"

# ---------------------------------------------------------------------------------------------
# 8. The .rpm: file list, flags, modes, owners and scriptlets.
rpm -qlp --scripts "$work/agent.rpm" >"$work/rpm.txt" 2>&1 || { cat "$work/rpm.txt" >&2; die "rpm -qlp --scripts failed"; }
for f in /usr/bin/agent $UNIT /usr/lib/sysusers.d/agent.conf /etc/agent/agent.yaml /usr/share/doc/agent/README.md; do
  grep -qx "$f" "$work/rpm.txt" || die "$f not in the .rpm: $(cat "$work/rpm.txt")"
done
for s in preinstall postinstall preuninstall postuninstall; do
  grep -q "^$s scriptlet" "$work/rpm.txt" || die "no $s scriptlet in the .rpm"
done
grep -q 'systemd-sysusers' "$work/rpm.txt" || die "the .rpm does not create the agent user"
grep -q 'try-restart agent.service' "$work/rpm.txt" || die "the .rpm does not restart the service on upgrade"
if grep -v '^[[:space:]]*#' "$work/rpm.txt" | grep -q keygen; then die ".rpm scriptlets run keygen"; fi
rpm -qp --qf '[%{FILENAMES} %{FILEFLAGS:fflags} %{FILEMODES:perms} %{FILEUSERNAME}:%{FILEGROUPNAME}\n]' \
  "$work/agent.rpm" >"$work/rpm-files.txt" 2>/dev/null
grep -qx '/etc/agent/agent.yaml cn -rw-r----- root:agent' "$work/rpm-files.txt" ||
  die "agent.yaml in the .rpm is not %config(noreplace) 0640: $(grep agent.yaml "$work/rpm-files.txt")"
grep -qx '/usr/bin/agent  -rwxr-xr-x root:root' "$work/rpm-files.txt" ||
  die "/usr/bin/agent in the .rpm: $(grep /usr/bin/agent "$work/rpm-files.txt")"
log ".rpm: files, agent.yaml %config(noreplace), scriptlets (user, restart on upgrade, no keygen)"

# ---------------------------------------------------------------------------------------------
# 9. The unit under a real systemd: no systemd runs on CI's machine, so boot one (Debian 12's
#    systemd 252 as PID 1) in a podman container made from a debootstrap'd rootfs with the .deb
#    installed, on the host's network (the sshd and web target above). CAP_SYS_ADMIN lets systemd
#    set up the unit's mount namespaces (ProtectSystem, PrivateTmp, ...); without it, systemd
#    skips them in a container. Checks: the service starts as user agent with the sandbox in
#    force (no new privs, seccomp, no capabilities, read-only /, writable /var/lib/agent) and no
#    option ignored; traffic flows; `systemctl reload` reloads; a SIGKILL is restarted; `stop`
#    ends it with status 0.
hn=$(ulimit -Hn)
printf '[containers]\ndefault_ulimits = ["nofile=%s:%s", "nproc=4096:4096"]\n[engine]\nruntime = "runc"\n' "$hn" "$hn" \
  >"$work/containers.conf"
export CONTAINERS_CONF="$work/containers.conf" # the podman settings these machines need (shared/notes)
podman rm -f -t 2 "$CTR" >/dev/null 2>&1 || true
podman rmi -f "$CTR_IMAGE" >/dev/null 2>&1 || true
mirror=$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | grep -v security | head -1 || true)
[ -n "$mirror" ] || mirror=$(awk '$1 == "deb" && $3 == "bookworm" {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
[ -n "$mirror" ] || die "no Debian mirror found in the apt sources for debootstrap"
log "debootstrap bookworm (minbase + systemd) from the apt sources' mirror"
debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,procps bookworm "$work/rootfs" "$mirror" \
  >"$work/debootstrap.log" 2>&1 || {
  tail -20 "$work/debootstrap.log" >&2
  die "debootstrap failed"
}
cp "$work/agent.deb" "$work/rootfs/tmp/agent.deb"
chroot "$work/rootfs" dpkg -i /tmp/agent.deb >/dev/null 2>&1 || die "dpkg -i in the rootfs failed"
rm "$work/rootfs/tmp/agent.deb"
tar -C "$work/rootfs" -c . | podman import -q - "$CTR_IMAGE" >/dev/null
rm -rf "$work/rootfs"
podman run -d --name "$CTR" --network host --systemd=always --cap-add=SYS_ADMIN "$CTR_IMAGE" /lib/systemd/systemd >/dev/null
in_ctr() { podman exec "$CTR" "$@"; }
state=""
for _ in $(seq 1 60); do
  state=$(in_ctr systemctl is-system-running 2>/dev/null || true)
  case $state in running | degraded) break ;; esac
  sleep 0.5
done
case $state in running | degraded) ;; *) die "systemd in the container is '$state'" ;; esac
log "systemd $(in_ctr systemctl --version | awk 'NR == 1 {print $2}') is PID 1 in container $CTR"

in_ctr runuser -u agent -- agent keygen --out-dir /etc/agent/keys --bits 2048 --comment packaging-systemd >/dev/null
in_ctr cat /etc/agent/keys/public-key.pem >>"$work/sshd/authorized_keys"
remote_port=$(free_port)
admin_port=$(free_port)
{
  echo "server:"
  echo "  host: 127.0.0.1"
  echo "  ports: [$sshd_port]"
  echo "  user: root"
  echo "  host_keys: [\"$host_key\"]"
  echo "identity: keys/private-key.pem"
  echo "forwards:"
  echo "  - name: web"
  echo "    remote: \"127.0.0.1:$remote_port\""
  echo "    target: 127.0.0.1:$http_port"
  echo "reconnect: { initial: 1s, max: 5s }"
  echo "admin: { listen: \"127.0.0.1:$admin_port\" }"
  echo "audit: { file: /var/lib/agent/audit.jsonl }"
} >"$work/agent-ctr.yaml"
podman cp "$work/agent-ctr.yaml" "$CTR:/etc/agent/agent.yaml"
in_ctr sh -c 'chown root:agent /etc/agent/agent.yaml && chmod 0640 /etc/agent/agent.yaml'
in_ctr systemctl enable --now agent.service >/dev/null 2>&1 || die "systemctl enable --now agent failed"
ctr_agent=(runuser -u agent -- env AGENT_CONFIG=/etc/agent/agent.yaml AGENT_STATE_DIR=/var/lib/agent agent)
journal() { in_ctr journalctl -u agent.service --no-pager 2>/dev/null || true; }
ready=""
for _ in $(seq 1 100); do
  if in_ctr "${ctr_agent[@]}" health >/dev/null 2>&1; then ready=1 && break; fi
  sleep 0.2
done
[ -n "$ready" ] || {
  journal | tail -20 >&2
  die "agent.service never became ready"
}
body=$(curl -fsS --max-time 10 "http://127.0.0.1:$remote_port/index.txt") || die "no answer through the service's forward"
[ "$body" = "$token" ] || die "wrong body through the service's forward: $body"
in_ctr "${ctr_agent[@]}" status >/dev/null || die "agent status (control socket) failed against the service"

pid=$(in_ctr systemctl show -p MainPID --value agent.service)
st=$(in_ctr cat "/proc/$pid/status")
agent_uid=$(in_ctr id -u agent)
grep -qP "^Uid:\t$agent_uid\t" <<<"$st" || die "the service does not run as user agent"
grep -qP '^NoNewPrivs:\t1$' <<<"$st" || die "NoNewPrivs not in force"
grep -qP '^Seccomp:\t2$' <<<"$st" || die "no seccomp filter in force"
grep -qP '^CapBnd:\t0000000000000000$' <<<"$st" || die "capability bounding set not empty"
grep -qP '^CapEff:\t0000000000000000$' <<<"$st" || die "effective capabilities not empty"
mounts=$(in_ctr cat "/proc/$pid/mountinfo" | awk '{print $5, $6}')
grep -qE '^/ ro,' <<<"$mounts" || die "/ is not read-only for the service: $(grep '^/ ' <<<"$mounts")"
grep -qE '^/var/lib/agent rw,' <<<"$mounts" || die "/var/lib/agent is not writable for the service"
if journal | grep -i 'ignoring'; then die "systemd ignored a sandbox option (above)"; fi
in_ctr systemctl reload agent.service || { journal | tail -10 >&2; die "systemctl reload failed"; }
for _ in $(seq 1 50); do
  if journal | grep -q 'configuration reloaded'; then break; fi
  sleep 0.1
done
journal | grep -q 'configuration reloaded' || die "no reload after systemctl reload"
log "agent.service: user agent, NoNewPrivs, seccomp, no capabilities, / read-only; traffic, status, reload"

in_ctr kill -KILL "$pid"
restarted=""
for _ in $(seq 1 60); do # RestartSec=10s
  new=$(in_ctr systemctl show -p MainPID --value agent.service)
  if [ "$new" != 0 ] && [ "$new" != "$pid" ]; then restarted=1 && break; fi
  sleep 0.5
done
[ -n "$restarted" ] || die "agent.service was not restarted after SIGKILL"
in_ctr systemctl stop agent.service
[ "$(in_ctr systemctl show -p ExecMainStatus --value agent.service)" = 0 ] || die "agent did not exit 0 on stop"
online=$(in_ctr systemd-analyze security agent.service --no-pager 2>&1 | sed -n 's/.*Overall exposure level for agent.service: \([0-9.]*\).*/\1/p')
log "agent.service: restarted after SIGKILL, stopped with status 0; systemd-analyze security (live): $online"

log "packaging test passed"
