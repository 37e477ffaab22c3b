#!/bin/sh
# Stops kelp and everything it started on this host: the kelp server, its
# supervised containerd, every pod (shims and their processes), and removes
# what kelp made: pod network namespaces, mounts under the data dir and
# /run/kelp, the cni0 bridge, the KELP-* iptables chains (masquerade, hostPort,
# network policies), the
# service proxy's KUBE-* chains and the CNI address
# allocations. Touches nothing that belongs to another containerd or runtime.
#
#   KELP_DATA_DIR   data dir of the kelp to stop (default /var/lib/kelp)
set -u
DATA_DIR=${KELP_DATA_DIR:-/var/lib/kelp}
DATA_DIR=$(realpath -m "$DATA_DIR")
# The supervised containerd's socket (as kelp's containerd::socket_for): its
# own directory under /run/kelp/containerd for a data dir other than the default.
if [ "$DATA_DIR" = /var/lib/kelp ]; then
  SOCKET=/run/kelp/containerd/containerd.sock
  RUN_DIR=/run/kelp
else
  SOCKET=/run/kelp/containerd/$(printf %s "$DATA_DIR" | sha256sum | cut -c1-8)/containerd.sock
  RUN_DIR=$(dirname "$SOCKET")
fi
[ "$(id -u)" = 0 ] || { echo "kelp-killall.sh must run as root" >&2; exit 1; }

# 1. The kelp server (or agent) of this data dir.
for pid in $(pgrep -x kelp); do
  cmd=$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null) || continue
  case "$cmd" in
    *" server "*|*" server"|*" agent "*|*" agent") ;;
    *) continue ;;
  esac
  case "$cmd" in
    *"--data-dir $DATA_DIR "*|*"--data-dir=$DATA_DIR "*) ;;
    *--data-dir*) continue ;;
    *) [ "$DATA_DIR" = /var/lib/kelp ] || continue ;;
  esac
  kill -TERM "$pid" 2>/dev/null
done
for _ in $(seq 50); do
  pgrep -x kelp >/dev/null || break
  sleep 0.1
done

# 2. The pods: shims serving kelp's containerd, their containers' processes
#    (noting each pod's network namespace first), then the shims.
netns_names=""
# The containers' ids (kelp's containerd's task state), for their cgroups in 3b.
ids=$(ls "$DATA_DIR/agent/containerd/state/io.containerd.runtime.v2.task/k8s.io" 2>/dev/null)
for shim in $(pgrep -f "containerd-shim-runc-v2 .*-address $SOCKET"); do
  for child in $(pgrep -P "$shim"); do
    ns=$(ip netns identify "$child" 2>/dev/null)
    [ -n "$ns" ] && netns_names="$netns_names $ns"
    kill -KILL "$child" 2>/dev/null
  done
done
for shim in $(pgrep -f "containerd-shim-runc-v2 .*-address $SOCKET"); do
  kill -KILL "$shim" 2>/dev/null
done

# 3. kelp's containerd.
pidfile=$DATA_DIR/agent/containerd/containerd.pid
if [ -f "$pidfile" ]; then
  pid=$(cat "$pidfile")
  if tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q "$DATA_DIR/agent/containerd/config.toml"; then
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
  fi
  rm -f "$pidfile"
fi

# 3b. The cgroups runc made for those containers (under each pod's
#     <cgroup-root>/kubepods/pod<uid>, or containerd's default /k8s.io/<id>),
#     in each v1 hierarchy or in the v2 tree, then the emptied pod cgroups.
for id in $ids; do
  for cg in $(find /sys/fs/cgroup -mindepth 1 -maxdepth 8 -type d -name "$id" 2>/dev/null); do
    for _ in $(seq 20); do rmdir "$cg" 2>/dev/null && break; sleep 0.1; done
    parent=$(dirname "$cg")
    case "$parent" in
      */kubepods/pod*)
        # The pod's cgroup, then kubepods and the --cgroup-root above it, once empty.
        # (rmdir only removes empty cgroups; a hierarchy's mount point stays.)
        rmdir "$parent" 2>/dev/null && rmdir "$(dirname "$parent")" 2>/dev/null &&
          rmdir "$(dirname "$(dirname "$parent")")" 2>/dev/null ;;
    esac
  done
done

# 3c. What is left under this node's own --cgroup-root (recorded by its
#     kubelet): pod cgroups whose containers were already gone, kubepods and
#     the root itself, deepest first, in every hierarchy. The default root
#     "/" is shared with the host (and maybe another kubelet): not swept.
root=$(cat "$DATA_DIR/agent/cgroup-root" 2>/dev/null)
root=${root%/}
if [ -n "$root" ]; then
  for point in $(awk '$3 == "cgroup" || $3 == "cgroup2" { print $2 }' /proc/self/mounts); do
    [ -d "$point$root" ] || continue
    find "$point$root" -depth -type d -exec rmdir {} \; 2>/dev/null
  done
fi

# 4. Mounts kelp's containerd made (rootfs overlays, shm, sandbox files, pod
#    network namespaces, which kelp's containerd keeps under its state dir), deepest first.
awk -v a="$DATA_DIR/agent/" -v b="$RUN_DIR/" '
  { p = $2; gsub(/\\040/, " ", p) }
  index(p, a) == 1 || index(p, b) == 1 { print p }' /proc/self/mounts | sort -r |
  while read -r m; do umount -l "$m" 2>/dev/null; done

# 5. Pod network namespaces named in /run/netns (found above), and their veths.
for ns in $netns_names; do
  ip netns delete "$ns" 2>/dev/null
done

# 6. The bridge, the tunnel and routes to other nodes' pods (kelp's routing
#    protocol number, 75), the masquerade chain and the address allocations.
ip link delete cni0 2>/dev/null
ip link delete kelp.vxlan 2>/dev/null
ip route flush proto 75 2>/dev/null
while iptables -w -t nat -D POSTROUTING -m comment --comment "kelp pod masquerade" -j KELP-POSTROUTING 2>/dev/null; do :; done
for chain in PREROUTING OUTPUT; do
  while iptables -w -t nat -D "$chain" -m addrtype --dst-type LOCAL -m comment --comment "kelp hostports" -j KELP-HOSTPORTS 2>/dev/null; do :; done
done
for chain in KELP-POSTROUTING KELP-HOSTPORTS; do
  iptables -w -t nat -F "$chain" 2>/dev/null
  iptables -w -t nat -X "$chain" 2>/dev/null
done

# 7. The service proxy's chains (kube-proxy's names) and the jumps to them.
unjump() { # table chain target comment [match...]
  t=$1 c=$2 j=$3 m=$4; shift 4
  while iptables -w -t "$t" -D "$c" "$@" -m comment --comment "$m" -j "$j" 2>/dev/null; do :; done
}
unjump nat PREROUTING KUBE-SERVICES "kubernetes service portals"
unjump nat OUTPUT KUBE-SERVICES "kubernetes service portals"
unjump nat POSTROUTING KUBE-POSTROUTING "kubernetes postrouting rules"
unjump filter FORWARD KUBE-FORWARD "kubernetes forwarding rules"
unjump filter INPUT KUBE-EXTERNAL-SERVICES "kubernetes externally-visible service portals" -m conntrack --ctstate NEW
unjump filter FORWARD KUBE-EXTERNAL-SERVICES "kubernetes externally-visible service portals" -m conntrack --ctstate NEW
unjump filter FORWARD KUBE-SERVICES "kubernetes service portals" -m conntrack --ctstate NEW
unjump filter OUTPUT KUBE-SERVICES "kubernetes service portals" -m conntrack --ctstate NEW
for table in nat filter; do
  chains=$(iptables-save -t "$table" 2>/dev/null | sed -n 's/^:\(KUBE-[A-Z0-9-]*\) .*/\1/p')
  for chain in $chains; do iptables -w -t "$table" -F "$chain" 2>/dev/null; done
  for chain in $chains; do iptables -w -t "$table" -X "$chain" 2>/dev/null; done
done

# 8. The NetworkPolicy chains and the jumps to them.
unjump filter FORWARD KELP-NETPOL "kelp network policies"
unjump filter INPUT KELP-NETPOL "kelp network policies" -i cni0
chains=$(iptables-save -t filter 2>/dev/null | sed -n 's/^:\(KELP-N[A-Z0-9-]*\) .*/\1/p')
for chain in $chains; do iptables -w -t filter -F "$chain" 2>/dev/null; done
for chain in $chains; do iptables -w -t filter -X "$chain" 2>/dev/null; done

rm -rf "$DATA_DIR/agent/cni/networks" "$RUN_DIR"
exit 0
