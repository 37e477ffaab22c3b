#!/usr/bin/env bash
# Builds target/kelp_<version>_<arch>.deb from the static release binary
# (scripts/build-release.sh runs first when that binary is missing).
#
#   scripts/build-deb.sh [--target TRIPLE]     (or TARGET=TRIPLE)
#
# The package holds what install.sh installs, in Debian's places:
#   /usr/bin/kelp, /usr/bin/kelp-killall.sh, /usr/bin/kelp-uninstall.sh
#   /lib/systemd/system/kelp.service   (ExecStart=/usr/bin/kelp server)
# and maintainer scripts: postinst reloads systemd and enables and starts kelp
# where systemd runs; prerm stops it (and on removal runs kelp-killall.sh, so no
# pod outlives the package); postrm purge removes /etc/kelp, /var/lib/kelp,
# /run/kelp and the unit's env file.
# Extra server flags go in /etc/kelp/config.yaml (or the env file
# /etc/systemd/system/kelp.service.env), not in the unit, which the package owns.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/release-common.sh
release_target_args "$@"
[[ -n "$target" ]] || target=$(uname -m)-unknown-linux-gnu
bin=target/$target/release/kelp
if [[ ! -x "$bin" ]]; then
    scripts/build-release.sh --target "$target"
fi

version=$(kelp_version)
arch=$(debian_arch "$target") || { echo "build-deb.sh: no Debian architecture for $target" >&2; exit 2; }

root=target/deb/kelp_${version}_$arch
rm -rf "$root"
install -d "$root/DEBIAN" "$root/usr/bin" "$root/lib/systemd/system" "$root/usr/share/doc/kelp"
install -m 0755 "$bin" "$root/usr/bin/kelp"
install -m 0755 scripts/kelp-killall.sh scripts/kelp-uninstall.sh "$root/usr/bin/"
sed 's|^ExecStart=.*|ExecStart=/usr/bin/kelp server|' systemd/kelp.service >"$root/lib/systemd/system/kelp.service"
chmod 0644 "$root/lib/systemd/system/kelp.service"
cat >"$root/usr/share/doc/kelp/copyright" <<'EOF'
kelp: a whole Kubernetes cluster in one binary.
License: Apache-2.0 (see /usr/share/common-licenses/Apache-2.0)
EOF

cat >"$root/DEBIAN/control" <<EOF
Package: kelp
Version: $version
Architecture: $arch
Maintainer: kelp developers <kelp@localhost>
Installed-Size: $(du -sk --exclude=DEBIAN "$root" | cut -f1)
Depends: containerd, runc, iptables
Section: admin
Priority: optional
Description: whole Kubernetes cluster in one binary for small machines
 kelp runs the Kubernetes API server, scheduler, controllers, kubelet,
 service proxy and cluster DNS in one process on an embedded SQLite store,
 with pods in containerd on a bridge it configures itself. Manage it with
 systemctl (kelp.service) and the ordinary kubectl (kelp kubectl).
EOF

cat >"$root/DEBIAN/postinst" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload
        systemctl enable kelp.service
        systemctl start kelp.service
    else
        echo "kelp: systemd is not running; enable it later with: systemctl enable --now kelp"
    fi
fi
exit 0
EOF

cat >"$root/DEBIAN/prerm" <<'EOF'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
    systemctl stop kelp.service || true
    [ "$1" = remove ] && systemctl disable kelp.service || true
fi
# Removing the package stops what kelp started (pods, containerd, network);
# an upgrade leaves the pods running for the new kelp to adopt.
if [ "$1" = remove ]; then
    /usr/bin/kelp-killall.sh || true
fi
exit 0
EOF

cat >"$root/DEBIAN/postrm" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = purge ]; then
    rm -rf /etc/kelp /var/lib/kelp /run/kelp /etc/systemd/system/kelp.service.env
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
fi
exit 0
EOF
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm" "$root/DEBIAN/postrm"

deb=target/kelp_${version}_$arch.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "package: $deb ($(stat -c %s "$deb") bytes)"
