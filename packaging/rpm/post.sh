# %post: /etc/agent readable by the agent's group only; keys/ the agent user's own, created once
# and never touched again. The service is not enabled or started, and no key is generated.
chown root:agent /etc/agent /etc/agent/agent.yaml
chmod 0750 /etc/agent
chmod 0640 /etc/agent/agent.yaml
if [ ! -e /etc/agent/keys ]; then
    install -d -o agent -g agent -m 0700 /etc/agent/keys
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
