#!/bin/sh
# Create the user and directories, then let the operator start the
# service after editing the config.
set -e
systemd-sysusers /usr/lib/sysusers.d/ztgate.conf || true
systemd-tmpfiles --create /usr/lib/tmpfiles.d/ztgate.conf || true
systemctl daemon-reload || true
echo "ztgate installed: edit /etc/ztgate/ztgate.yaml, then: systemctl enable --now ztgate"
