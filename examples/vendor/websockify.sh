#!/bin/sh
# websockify in front of the vendor's sshd: SSH inside WebSocket binary frames over TLS, for the
# agent's `wss://` rung. Any path is accepted (the agent sends the one in its URL).
# Debian: apt-get install websockify. tests/it/transports.rs runs this very script.
set -eu
exec websockify \
  --cert "${CERT:-/etc/agent-tunnel/tls/fullchain.pem}" \
  --key "${KEY:-/etc/agent-tunnel/tls/privkey.pem}" \
  --ssl-only \
  "${LISTEN:-0.0.0.0:443}" \
  "${SSHD:-127.0.0.1:22}"
