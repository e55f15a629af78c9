# %postun: on upgrade ($1 >= 1), restart the service if it is running. What stays after an erase:
# /etc/agent/keys, /var/lib/agent (access state, audit trail), the `agent` user, and a modified
# agent.yaml as agent.yaml.rpmsave.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart agent.service >/dev/null 2>&1 || :
    fi
fi
