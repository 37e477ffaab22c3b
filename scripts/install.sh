#!/bin/sh
# Installs kelp on this machine and runs it under systemd.
#
#   sudo INSTALL_KELP_BINARY=./kelp sh install.sh
#   sudo INSTALL_KELP_DOWNLOAD_URL=https://…/kelp-0.1.0-arm64.tar.gz sh install.sh
#   sudo KELP_URL=https://server:6443 KELP_TOKEN=… sh install.sh      (an agent)
#
# What it does, in order: checks the prerequisites (root, containerd, runc,
# iptables, the memory cgroup; on a Raspberry Pi the cgroup boot flags) and
# stops with the fix for each miss before writing anything; installs the binary,
# kelp-killall.sh and kelp-uninstall.sh into the bin dir; writes the systemd unit
# and its env file (mode 0600); then, where systemd runs, enables and starts the
# unit. Every file is compared before it is written: a re-run with the same
# inputs changes no file and restarts nothing; changed inputs restart the unit.
#
# Environment:
#   INSTALL_KELP_BINARY        the kelp binary to install (default: ./kelp next to
#                              this script, else in the current directory)
#   INSTALL_KELP_DOWNLOAD_URL  fetch the binary, or a bundle *.tar.gz made by
#                              scripts/build-release.sh, with curl or wget
#   INSTALL_KELP_DOWNLOAD_SHA256  expected sha256 of the download
#   INSTALL_KELP_BIN_DIR       where to install (default /usr/local/bin, or /opt/bin
#                              when /usr/local/bin is read-only)
#   INSTALL_KELP_EXEC          extra flags for `kelp server` (or `kelp agent`); may
#                              start with the command, e.g. "server --node-label a=b"
#   INSTALL_KELP_SKIP_ENABLE   true: do not enable the unit at boot
#   INSTALL_KELP_SKIP_START    true: do not start (or restart) the unit
#   KELP_URL, KELP_TOKEN or KELP_TOKEN_FILE  join that server: an agent install
#                              (kelp-agent.service running `kelp agent`, which
#                              reads them from the unit's env file, mode 0600)
#   KELP_*, HTTP(S)_PROXY, NO_PROXY, CONTAINERD_*  written to the unit's env file
#
# kelp embeds no kubectl, crictl or ctr: `kelp kubectl` runs the kubectl found
# on PATH with the admin kubeconfig. So no such links are made (a `kubectl`
# link to kelp would call itself).
set -eu

info() { echo "[kelp] $*"; }
fatal() { echo "[kelp] error: $*" >&2; exit 1; }
yes_() { case "${1:-}" in true | yes | 1) return 0 ;; *) return 1 ;; esac; }

# ---- where this script and its companion files are --------------------------
script_dir=
case "$0" in
*/install.sh | install.sh) script_dir=$(cd "$(dirname "$0")" && pwd) ;;
esac

# find NAME DIR...: the first DIR/NAME that exists
find_file() {
    name=$1
    shift
    for d in "$@"; do
        [ -n "$d" ] && [ -f "$d/$name" ] && { echo "$d/$name"; return 0; }
    done
    return 1
}

# ---- what to install ----------------------------------------------------------
agent=false
if [ -n "${KELP_URL:-}" ]; then
    case "$KELP_URL" in
    https://?*) ;;
    *) fatal "KELP_URL=$KELP_URL: the server's URL is https://HOST:PORT (e.g. https://server:6443)" ;;
    esac
    [ -n "${KELP_TOKEN:-}" ] || [ -n "${KELP_TOKEN_FILE:-}" ] ||
        fatal "KELP_URL is set: an agent also needs KELP_TOKEN or KELP_TOKEN_FILE"
    if [ -n "${KELP_TOKEN_FILE:-}" ]; then
        [ -f "$KELP_TOKEN_FILE" ] ||
            fatal "KELP_TOKEN_FILE=$KELP_TOKEN_FILE: no such file (it holds the join token)"
        # The unit runs in /: keep the file's absolute path in the env file.
        case "$KELP_TOKEN_FILE" in
        /*) ;;
        *)
            KELP_TOKEN_FILE=$(cd "$(dirname "$KELP_TOKEN_FILE")" && pwd)/$(basename "$KELP_TOKEN_FILE")
            export KELP_TOKEN_FILE
            ;;
        esac
    fi
    agent=true
fi
# The extra flags as words, quotes honoured as a shell would (no expansion).
words=$(printf '%s' "${INSTALL_KELP_EXEC:-}" | xargs printf '%s\n') ||
    fatal "INSTALL_KELP_EXEC: cannot split it into words (unbalanced quotes?)"
set --
while IFS= read -r word; do
    [ -n "$word" ] && set -- "$@" "$word"
done <<EOF
$words
EOF
command=server
case "${1:-}" in
server | agent)
    command=$1
    shift
    ;;
esac
if $agent; then
    [ "$command" = agent ] || [ "${words%%[[:space:]]*}" != server ] ||
        fatal "KELP_URL makes this an agent install, but INSTALL_KELP_EXEC starts with 'server'"
    command=agent
fi
if [ "$command" = agent ]; then unit=kelp-agent; else unit=kelp; fi
unit_file=/etc/systemd/system/$unit.service
env_file=/etc/systemd/system/$unit.service.env

# ---- preflight: nothing is written before all of this passes -------------------
[ "$(id -u)" = 0 ] || fatal "run as root (sudo sh install.sh)"

misses=
miss() { misses="$misses
  - $1
      fix: $2"; }
for tool in containerd runc iptables iptables-restore; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        case "$tool" in
        iptables*) miss "$tool not found" "apt-get install iptables" ;;
        *) miss "$tool not found" "apt-get install containerd runc" ;;
        esac
    fi
done
memory_cgroup=true
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
    grep -qw memory /sys/fs/cgroup/cgroup.controllers || memory_cgroup=false
elif [ -f /proc/cgroups ]; then
    awk '$1 == "memory" && $4 == 1 { found = 1 } END { exit !found }' /proc/cgroups || memory_cgroup=false
else
    memory_cgroup=false
fi
pi_model=
[ -r /proc/device-tree/model ] && pi_model=$(tr -d '\0' </proc/device-tree/model)
case "$pi_model" in
*"Raspberry Pi"*)
    cmdline=$(find_file cmdline.txt /boot/firmware /boot || true)
    if [ -z "$cmdline" ]; then
        miss "no cmdline.txt in /boot/firmware or /boot" "add 'cgroup_memory=1 cgroup_enable=memory' to the kernel command line and reboot"
    elif ! grep -qw cgroup_memory=1 "$cmdline" || ! grep -qw cgroup_enable=memory "$cmdline"; then
        miss "$cmdline lacks the memory cgroup boot flags" "sed -i '1 s/\$/ cgroup_memory=1 cgroup_enable=memory/' $cmdline && reboot"
    fi
    ;;
*)
    $memory_cgroup || miss "the memory cgroup is not enabled" "add 'cgroup_enable=memory' to the kernel command line (GRUB_CMDLINE_LINUX in /etc/default/grub, then update-grub) and reboot"
    ;;
esac
[ -n "$misses" ] && fatal "prerequisites missing:$misses"

# ---- the binary ----------------------------------------------------------------
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

download() { # URL FILE
    if command -v curl >/dev/null 2>&1; then
        curl -fsSL -o "$2" "$1"
    elif command -v wget >/dev/null 2>&1; then
        wget -qO "$2" "$1"
    else
        fatal "downloading needs curl or wget"
    fi || fatal "downloading $1 failed"
}

bundle_dir=
binary=${INSTALL_KELP_BINARY:-}
if [ -z "$binary" ] && [ -n "${INSTALL_KELP_DOWNLOAD_URL:-}" ]; then
    url=$INSTALL_KELP_DOWNLOAD_URL
    info "downloading $url"
    download "$url" "$tmp/download"
    if [ -n "${INSTALL_KELP_DOWNLOAD_SHA256:-}" ]; then
        echo "$INSTALL_KELP_DOWNLOAD_SHA256  $tmp/download" | sha256sum -c - >/dev/null 2>&1 ||
            fatal "$url does not match INSTALL_KELP_DOWNLOAD_SHA256"
    fi
    case "$url" in
    *.tar.gz | *.tgz)
        mkdir "$tmp/bundle"
        tar -xzf "$tmp/download" -C "$tmp/bundle" || fatal "$url is not a tar.gz bundle"
        bundle_dir=$(dirname "$(find "$tmp/bundle" -name kelp -type f | head -n 1)")
        [ -f "$bundle_dir/kelp" ] || fatal "the bundle $url holds no kelp binary"
        binary=$bundle_dir/kelp
        ;;
    *) binary=$tmp/download ;;
    esac
fi
if [ -z "$binary" ]; then
    binary=$(find_file kelp "$script_dir" "$PWD" || true)
    [ -n "$binary" ] || fatal "no kelp binary: set INSTALL_KELP_BINARY=/path/to/kelp (or INSTALL_KELP_DOWNLOAD_URL)"
fi
[ -f "$binary" ] || fatal "$binary does not exist"
chmod 0755 "$binary" 2>/dev/null || true
version=$("$binary" version 2>/dev/null | head -n 1) ||
    fatal "$binary does not run here (built for another architecture?)"
if [ "$command" = agent ] && ! "$binary" agent --help >/dev/null 2>&1; then
    fatal "this kelp ($version) cannot run as an agent: it has no 'kelp agent' command (an older kelp), so an agent unit would never start. Install a server (unset KELP_URL) or a kelp that has 'kelp agent'."
fi

# Companion files: beside the binary of a bundle, beside this script, or in
# the source tree (scripts/, systemd/).
dirs=
[ -n "$bundle_dir" ] && dirs="$bundle_dir $bundle_dir/systemd"
[ -n "$script_dir" ] && dirs="$dirs $script_dir $script_dir/systemd $script_dir/../systemd $script_dir/../scripts"
companion() {
    # shellcheck disable=SC2086 # a list of dirs
    find_file "$1" $dirs || fatal "$1 not found next to install.sh or the kelp binary"
}
killall_src=$(companion kelp-killall.sh)
uninstall_src=$(companion kelp-uninstall.sh)
unit_src=$(companion "$unit.service")

# ---- where to install ------------------------------------------------------------
bin_dir=${INSTALL_KELP_BIN_DIR:-}
if [ -z "$bin_dir" ]; then
    bin_dir=/usr/local/bin
    mkdir -p "$bin_dir" 2>/dev/null || true
    [ -w "$bin_dir" ] || bin_dir=/opt/bin
fi
mkdir -p "$bin_dir" || fatal "cannot create $bin_dir"
[ -w "$bin_dir" ] || fatal "$bin_dir is not writable"

# put SRC DEST MODE: writes DEST only if its bytes or mode differ; sets wrote
put() {
    wrote=false
    if [ -f "$2" ] && [ ! -L "$2" ] && cmp -s "$1" "$2"; then
        if [ "$(stat -c %a "$2")" != "${3#0}" ]; then
            chmod "$3" "$2"
            info "mode $3: $2"
            wrote=true
        fi
        return 0
    fi
    cp "$1" "$2.kelp-new"
    chmod "$3" "$2.kelp-new"
    mv -f "$2.kelp-new" "$2"
    info "wrote $2"
    wrote=true
}

put "$binary" "$bin_dir/kelp" 0755
binary_changed=$wrote
put "$killall_src" "$bin_dir/kelp-killall.sh" 0755
put "$uninstall_src" "$bin_dir/kelp-uninstall.sh" 0755

# ---- the unit ---------------------------------------------------------------------
# One systemd argument: % and $ escaped, quoted when it holds blanks or quotes.
unit_arg() {
    a=$(printf '%s' "$1" | sed -e 's/%/%%/g' -e 's/\$/$$/g')
    case "$a" in
    *[[:space:]\"\'\\]* | '')
        a=$(printf '%s' "$a" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')
        a="\"$a\""
        ;;
    esac
    printf '%s' "$a"
}
exec_start="$(unit_arg "$bin_dir/kelp") $command"
for arg in "$@"; do exec_start="$exec_start $(unit_arg "$arg")"; done

while IFS= read -r line || [ -n "$line" ]; do
    case "$line" in
    ExecStart=*) printf 'ExecStart=%s\n' "$exec_start" ;;
    *) printf '%s\n' "$line" ;;
    esac
done <"$unit_src" >"$tmp/unit"
mkdir -p /etc/systemd/system
put "$tmp/unit" "$unit_file" 0644
unit_changed=$wrote

# The env file: kelp's settings from this environment, and the proxy settings
# containerd and kelp need to reach registries. Sorted, so it is stable.
: >"$tmp/env"
chmod 0600 "$tmp/env"
env | grep -E '^(KELP_[A-Z0-9_]*|CONTAINERD_[A-Z0-9_]*|HTTPS?_PROXY|NO_PROXY|https?_proxy|no_proxy)=' |
    LC_ALL=C sort | while IFS= read -r kv; do
    name=${kv%%=*}
    value=${kv#*=}
    # systemd's EnvironmentFile: double-quoted, with \ and " escaped
    value=$(printf '%s' "$value" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')
    printf '%s="%s"\n' "$name" "$value"
done >>"$tmp/env"
put "$tmp/env" "$env_file" 0600
env_changed=$wrote

# ---- systemd ------------------------------------------------------------------------
if [ ! -d /run/systemd/system ]; then
    info "systemd is not running on this machine: files are in place, nothing enabled or started"
    info "to run kelp without systemd: the ExecStart of $unit_file, with the settings of $env_file"
    exit 0
fi
$unit_changed && systemctl daemon-reload
if ! yes_ "${INSTALL_KELP_SKIP_ENABLE:-}"; then
    systemctl is-enabled --quiet "$unit" 2>/dev/null || systemctl enable "$unit"
fi
if yes_ "${INSTALL_KELP_SKIP_START:-}"; then
    info "not started (INSTALL_KELP_SKIP_START)"
elif $binary_changed || $unit_changed || $env_changed; then
    info "(re)starting $unit"
    systemctl restart "$unit"
elif ! systemctl is-active --quiet "$unit"; then
    info "starting $unit"
    systemctl start "$unit"
else
    info "$unit is running and unchanged"
fi
