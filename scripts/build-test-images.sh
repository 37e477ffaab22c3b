#!/bin/sh
# Builds the image tarballs the tests use, from Debian's busybox-static:
#   busybox.tar          OCI layout,     kelp.test/busybox:1, and kelp.test/nginx:1.14.2
#                        and :1.16.1 (httpd on port 80 answering "nginx <version>")
# Besides busybox, /bin/udp-echo (tests/fixtures/udp_echo.rs, built static
# with rustc): busybox has no UDP server.
#   busybox-docker.tar   docker-archive, kelp.test/busybox-docker:1 (same content)
# Both hold /bin/busybox and its applets (sh, httpd, nc, wget, sleep, ...).
# Usage: scripts/build-test-images.sh [OUT_DIR]   (default: target/test-images)
# The tarballs are reproducible (fixed mtimes, owners and order), so rebuilding
# gives the same image digest.
set -eu
out=${1:-target/test-images}
busybox=/bin/busybox
[ -x "$busybox" ] || { echo "missing $busybox: apt-get install busybox-static" >&2; exit 1; }
ldd "$busybox" 2>&1 | grep -q "not a dynamic" \
  || { echo "$busybox is not static: apt-get install busybox-static" >&2; exit 1; }

case "$(uname -m)" in
  x86_64) arch=amd64 ;; aarch64) arch=arm64 ;; armv7l|armv6l) arch=arm ;; *) arch=$(uname -m) ;;
esac
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Root filesystem: busybox plus one link per applet, /tmp, /etc/passwd for user lookups.
root=$work/rootfs
mkdir -p "$root/bin" "$root/tmp" "$root/etc" "$root/var/www"
cp "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
  [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
done
# A UDP peer, static (glibc's libc.a, from libc6-dev like every Rust link).
rustc --edition 2021 -O -C target-feature=+crt-static -C strip=symbols \
  -o "$root/bin/udp-echo" "$(dirname "$0")/../tests/fixtures/udp_echo.rs"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$root/etc/passwd"
printf 'root:x:0:\nnobody:x:65534:\n' > "$root/etc/group"
chmod 1777 "$root/tmp"

blob() { # blob FILE -> prints the digest's hex and moves FILE into blobs/sha256
  d=$(sha256sum "$1" | cut -d' ' -f1)
  mv "$1" "$layout/blobs/sha256/$d"
  echo "$d"
}

layout=$work/layout
mkdir -p "$layout/blobs/sha256"
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$root" -cf "$work/layer.tar" .
layer_size=$(stat -c %s "$work/layer.tar")
layer=$(blob "$work/layer.tar")

image() { # image NAME CONFIG-EXTRA -> sets $config and $manifest, adds NAME to the index
  printf '{"architecture":"%s","os":"linux","config":{%s},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[{"created_by":"kelp scripts/build-test-images.sh"}]}' \
    "$arch" "$2" "$layer" > "$work/config.json"
  config_size=$(stat -c %s "$work/config.json")
  config=$(blob "$work/config.json")
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
    "$config" "$config_size" "$layer" "$layer_size" > "$work/manifest.json"
  manifest_size=$(stat -c %s "$work/manifest.json")
  manifest=$(blob "$work/manifest.json")
  entry=$(printf '{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}' \
    "$manifest" "$manifest_size" "$1" "${1##*:}")
  index=${index:+$index,}$entry
  echo "$out/busybox.tar  $1  sha256:$manifest"
}
path_env='"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"'
# Stand-ins for the guide's nginx images: an httpd on port 80 whose page
# names the version, so a rollout's progress shows in the answers. The shell
# stays PID 1 to end on SIGTERM (httpd as PID 1 would ignore it).
for version in 1.14.2 1.16.1; do
  image "kelp.test/nginx:$version" \
    "$path_env,\"NGINX_VERSION=$version\"],\"ExposedPorts\":{\"80/tcp\":{}},\"Cmd\":[\"sh\",\"-c\",\"echo nginx \$NGINX_VERSION > /tmp/index.html; httpd -f -p 80 -h /tmp & trap 'exit 0' TERM; wait\"]"
done
# Last, so that $config and $layer below are busybox's.
image kelp.test/busybox:1 "$path_env],\"Cmd\":[\"sh\"]"

printf '{"imageLayoutVersion":"1.0.0"}' > "$layout/oci-layout"
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[%s]}' "$index" > "$layout/index.json"
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$layout" -cf "$out/busybox.tar" .

# The same image as `docker save` writes it (manifest.json, <id>/layer.tar).
docker=$work/docker
mkdir -p "$docker/$layer"
cp "$layout/blobs/sha256/$layer" "$docker/$layer/layer.tar"
cp "$layout/blobs/sha256/$config" "$docker/$config.json"
printf '[{"Config":"%s.json","RepoTags":["kelp.test/busybox-docker:1"],"Layers":["%s/layer.tar"]}]' \
  "$config" "$layer" > "$docker/manifest.json"
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$docker" -cf "$out/busybox-docker.tar" .
echo "$out/busybox-docker.tar  kelp.test/busybox-docker:1"
