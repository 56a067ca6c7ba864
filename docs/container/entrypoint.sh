#!/bin/sh
# Seeds an empty /config from the starter config on first start (a bind mount
# hides what the image has there), then runs ductile as PID 1's only child:
# `exec` makes ductile PID 1 itself, so it receives SIGTERM and SIGHUP directly.
set -eu
if [ ! -e /config/config.yaml ]; then
    cp -R /usr/local/share/ductile/config/. /config/
    echo "ductile-entrypoint: /config was empty; wrote the starter config" >&2
fi
mkdir -p /config/plugins
exec /usr/local/bin/ductile "$@"
