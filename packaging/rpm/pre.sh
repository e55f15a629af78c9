# %pre: the `agent` user, from the same line as /usr/lib/sysusers.d/agent.conf (not installed yet
# at this point: systemd-sysusers reads it from stdin, as Fedora's %sysusers_create_package does).
if command -v systemd-sysusers >/dev/null 2>&1; then
    echo 'u agent - "Outbound-only SSH reverse-tunnel agent" /var/lib/agent /usr/sbin/nologin' |
        systemd-sysusers --replace=/usr/lib/sysusers.d/agent.conf -
else
    getent group agent >/dev/null || groupadd -r agent
    getent passwd agent >/dev/null ||
        useradd -r -g agent -d /var/lib/agent -s /usr/sbin/nologin -c "Outbound-only SSH reverse-tunnel agent" agent
fi
