#!/usr/bin/env bash
# Install the Debian packages the test suite drives as real parts: headless Chromium (web UI tests),
# nginx and HAProxy (their configs are checked and run), Prometheus and Alertmanager (promtool, amtool,
# a real Prometheus for the alert rules), wireguard-tools (`wg` cross-checks the keys `fleet wireguard`
# derives). Idempotent and quick when everything is present; without root
# or apt it says what is missing and exits 0, so the tests that need a part skip with a clear message.
set -u

need=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "$2" ]; }
have chromium /usr/bin/chromium || need+=(chromium)
have nginx /usr/sbin/nginx || need+=(nginx)
# nginx's stream module (the canary split of the device ports, deploy/canary/stream.conf)
[ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || need+=(libnginx-mod-stream)
have haproxy /usr/sbin/haproxy || need+=(haproxy)
have promtool /usr/bin/promtool || need+=(prometheus)
have amtool /usr/bin/amtool || need+=(prometheus-alertmanager)
have wg /usr/bin/wg || need+=(wireguard-tools)

[ ${#need[@]} -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "system-deps: missing ${need[*]} (install them with apt-get as root); tests that need them will skip" >&2
    exit 0
fi

echo "system-deps: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Packages must not start their services here (nginx on :80, prometheus on :9090): the tests start their
# own instances on loopback ports. policy-rc.d is the Debian way to say so; ours is removed afterwards.
own_policy=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && own_policy=1
fi
install() { apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null; }
install || { apt-get update -q >/dev/null && install; } \
    || echo "system-deps: apt-get could not install ${need[*]}; tests that need them will skip" >&2
[ $own_policy = 1 ] && rm -f /usr/sbin/policy-rc.d
exit 0
