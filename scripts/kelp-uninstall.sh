#!/bin/sh
# Removes kelp from this machine: stops the unit, runs kelp-killall.sh (pods,
# containerd, bridge, iptables chains, mounts, network namespaces), then removes
# the units (kelp.service, kelp-agent.service) and their env files, the binary
# and these scripts, /etc/kelp, the data dir, /run/kelp and the pod logs kelp
# wrote under /var/log/pods. One script for a server and for an agent install.
#
# The data dir is the one the installed unit uses: --data-dir in its ExecStart,
# else KELP_DATA_DIR in its env file, else data-dir in /etc/kelp/config.yaml or
# its config.yaml.d drop-ins, else /var/lib/kelp.
set -u
[ "$(id -u)" = 0 ] || { echo "kelp-uninstall.sh must run as root" >&2; exit 1; }
info() { echo "[kelp] $*"; }
systemd=false
[ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1 && systemd=true

self_dir=$(cd "$(dirname "$0")" && pwd)
units=
for u in kelp kelp-agent; do
    for d in /etc/systemd/system /lib/systemd/system /usr/lib/systemd/system; do
        [ -f "$d/$u.service" ] && units="$units $d/$u.service"
    done
done

# ExecStart's words of a unit file, one a line, quotes removed.
exec_words() {
    sed -n 's/^ExecStart=//p' "$1" | head -n 1 | xargs printf '%s\n' 2>/dev/null
}
# The value of --data-dir in words on stdin.
data_dir_flag() {
    awk 'take { print; exit } $0 == "--data-dir" { take = 1 } /^--data-dir=/ { sub(/^--data-dir=/, ""); print; exit }'
}
# The last data-dir: in a config file (a plain `data-dir: VALUE` line).
data_dir_config() {
    for f in /etc/kelp/config.yaml /etc/kelp/config.yaml.d/*.yaml; do
        [ -f "$f" ] && sed -n "s/^data-dir:[[:space:]]*[\"']\{0,1\}\([^\"'#]*[^\"'#[:space:]]\).*/\1/p" "$f"
    done | tail -n 1
}

data_dir=''
bins=''
for unit in $units; do
    bin=$(exec_words "$unit" | head -n 1)
    [ -n "$bin" ] && bins="$bins $bin"
    [ -n "$data_dir" ] && continue
    data_dir=$(exec_words "$unit" | data_dir_flag)
    if [ -z "$data_dir" ] && [ -f "$unit.env" ]; then
        data_dir=$(sed -n 's/^KELP_DATA_DIR="\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$unit.env" | tail -n 1)
    fi
done
[ -n "$data_dir" ] || data_dir=$(data_dir_config)
[ -n "$data_dir" ] || data_dir=${KELP_DATA_DIR:-/var/lib/kelp}
data_dir=$(realpath -m "$data_dir")
case "$data_dir" in
/ | /var | /var/lib | /etc | /usr | /home | /root | /run | /tmp)
    echo "kelp-uninstall.sh: refusing to remove the data dir $data_dir" >&2
    exit 1
    ;;
esac
info "data dir: $data_dir"

# 1. Stop and disable the units (systemd stops kelp only: KillMode=process).
if $systemd; then
    for unit in $units; do
        name=$(basename "$unit")
        systemctl stop "$name" 2>/dev/null
        systemctl disable "$name" 2>/dev/null
    done
fi

# 2. The pod logs kelp wrote: the log directories of the sandboxes in kelp's
#    containerd (read before killall; kelp removes a pod's logs with its
#    sandbox, so these are all there are), and of pods with volumes.
pod_logs=$(grep -aoE '/var/log/pods/[a-z0-9.-]+_[a-z0-9.-]+_[0-9a-f-]{36}' \
    "$data_dir/agent/containerd/root/io.containerd.metadata.v1.bolt/meta.db" 2>/dev/null | sort -u)
for uid_dir in "$data_dir"/agent/pods/*; do
    [ -d "$uid_dir" ] || continue
    for log in /var/log/pods/*_"$(basename "$uid_dir")"; do
        [ -d "$log" ] && pod_logs="$pod_logs
$log"
    done
done

# 3. Processes, mounts, network namespaces, the bridge, iptables chains.
killall=
for d in "$self_dir" $bins; do
    [ "$d" = "$self_dir" ] || d=$(dirname "$d")
    [ -x "$d/kelp-killall.sh" ] && { killall=$d/kelp-killall.sh; break; }
done
if [ -n "$killall" ]; then
    KELP_DATA_DIR=$data_dir "$killall"
else
    echo "kelp-uninstall.sh: kelp-killall.sh not found; processes and network state may remain" >&2
fi

# 4. Files. A binary the Debian package installed is the package's to remove.
owner=
if command -v dpkg-query >/dev/null 2>&1; then
    owner=$(dpkg-query -S /usr/bin/kelp 2>/dev/null | cut -d: -f1)
fi
if [ -n "$owner" ]; then
    info "removing the $owner package"
    dpkg --purge "$owner"
fi
for unit in $units; do
    [ -f "$unit" ] || continue
    name=$(basename "$unit")
    rm -f "$unit" "$unit.env" \
        "/etc/systemd/system/multi-user.target.wants/$name"
    rm -rf "/etc/systemd/system/$name.d"
    info "removed $unit"
done
for bin in $bins; do
    [ "$(basename "$bin")" = kelp ] || continue
    d=$(dirname "$bin")
    rm -f "$d/kelp" "$d/kelp-killall.sh" "$d/kelp-uninstall.sh"
    info "removed $d/kelp"
done
echo "$pod_logs" | while read -r log; do
    [ -n "$log" ] && rm -rf "$log"
done
rm -rf /etc/kelp "$data_dir" /run/kelp
info "removed /etc/kelp, $data_dir, /run/kelp"
$systemd && systemctl daemon-reload
exit 0
