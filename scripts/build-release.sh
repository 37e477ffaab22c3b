#!/usr/bin/env bash
# Builds the kelp binary that goes onto a device: release mode, statically linked,
# stripped (the release profile strips), with the version and git commit build.rs
# embeds (`kelp version`). Then packs a bundle next to it that install.sh can use:
#   target/dist/kelp-<version>-<arch>.tar.gz: kelp, install.sh, kelp-killall.sh,
#   kelp-uninstall.sh, systemd/kelp.service, systemd/kelp-agent.service
#
#   scripts/build-release.sh [--target TRIPLE]     (or TARGET=TRIPLE)
#
# TRIPLE: x86_64-unknown-linux-gnu (default on x86_64), aarch64-unknown-linux-gnu,
# armv7-unknown-linux-gnueabihf, or a *-linux-musl triple. On the build host's own
# architecture the musl target is used when it and musl-gcc are installed (fully
# static, no NSS), else glibc with crt-static. KELP_LIBC=gnu|musl forces one.
# The target is always named explicitly: with --target, RUSTFLAGS reach only the
# target's crates, so proc-macros and build scripts stay ordinary dynamic host
# programs (a static proc-macro cannot be loaded by rustc).
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/release-common.sh
release_target_args "$@"

host_arch=$(uname -m)
installed=$(rustup target list --installed 2>/dev/null || true)
has_target() { grep -qx "$1" <<<"$installed"; }

if [[ -z "$target" ]]; then
    libc=${KELP_LIBC:-}
    if [[ -z "$libc" ]]; then
        if has_target "$host_arch-unknown-linux-musl" && command -v musl-gcc >/dev/null; then
            libc=musl
        else
            libc=gnu
        fi
    fi
    target=$host_arch-unknown-linux-$libc
fi

# What a cross build needs: the rust target and a C cross toolchain (ring and the
# bundled SQLite are C) that also links the final binary.
linker='' pkg=''
case "$target" in
    x86_64-unknown-linux-gnu) linker=x86_64-linux-gnu-gcc pkg="gcc-x86-64-linux-gnu libc6-dev-amd64-cross" ;;
    aarch64-unknown-linux-gnu) linker=aarch64-linux-gnu-gcc pkg="gcc-aarch64-linux-gnu libc6-dev-arm64-cross" ;;
    armv7-unknown-linux-gnueabihf) linker=arm-linux-gnueabihf-gcc pkg="gcc-arm-linux-gnueabihf libc6-dev-armhf-cross" ;;
    x86_64-unknown-linux-musl) linker=musl-gcc pkg=musl-tools ;;
    *-linux-musl*) linker=${target%%-*}-linux-musl-gcc pkg="a musl cross toolchain (not packaged by Debian)" ;;
    *) echo "build-release.sh: unsupported target $target" >&2; exit 2 ;;
esac
target_arch=${target%%-*}
native=false
[[ "$target_arch" == "$host_arch" && "$target" == *-gnu* ]] && native=true

missing=()
has_target "$target" || missing+=("the rust target: rustup target add $target")
if ! $native && ! command -v "$linker" >/dev/null; then
    missing+=("the linker $linker: apt-get install $pkg")
fi
if ((${#missing[@]})); then
    echo "build-release.sh: cannot build for $target; missing:" >&2
    printf '  - %s\n' "${missing[@]}" >&2
    exit 1
fi

triple_env=$(tr 'a-z-' 'A-Z_' <<<"$target")
if ! $native; then
    export "CARGO_TARGET_${triple_env}_LINKER=$linker"
    export "CC_${target//-/_}=$linker"
    [[ "$target" == *musl* ]] || export "AR_${target//-/_}=${linker%-gcc}-ar"
fi
# glibc needs crt-static asked for; musl targets link statically by default.
flags="-C target-feature=+crt-static"
export "CARGO_TARGET_${triple_env}_RUSTFLAGS=${CARGO_TARGET_RUSTFLAGS_EXTRA:-} $flags"

echo "build-release.sh: building kelp for $target (release, static)" >&2
start=$(date +%s)
cargo build --release --target "$target" --bin kelp
secs=$(($(date +%s) - start))
bin=target/$target/release/kelp

# Static or nothing: a dynamic binary would not start on a device with another libc.
if [[ "$target_arch" == "$host_arch" ]]; then
    out=$(ldd "$bin" 2>&1 || true)
else
    out=$(file -L "$bin" 2>/dev/null || echo "")
fi
case "$out" in
    *"not a dynamic executable"*|*"statically linked"*|*"static-pie linked"*) ;;
    *) echo "build-release.sh: $bin is not statically linked:" >&2; echo "$out" >&2; exit 1 ;;
esac
echo "ldd $bin: $(ldd "$bin" 2>&1 | head -1 | sed 's/^[[:space:]]*//')"

version=$(kelp_version)
arch=$(debian_arch "$target") || arch=$target_arch
bundle=target/dist/kelp-$version-$arch
rm -rf "$bundle"
mkdir -p "$bundle/systemd"
cp "$bin" "$bundle/kelp"
cp scripts/install.sh scripts/kelp-killall.sh scripts/kelp-uninstall.sh "$bundle/"
cp systemd/kelp.service systemd/kelp-agent.service "$bundle/systemd/"
tar -C target/dist -czf "$bundle.tar.gz" "kelp-$version-$arch"

size=$(stat -c %s "$bin")
echo "binary: $bin"
echo "size:   $size bytes ($(awk -v s="$size" 'BEGIN { printf "%.1f", s / 1048576 }') MiB)"
echo "bundle: $bundle.tar.gz ($(stat -c %s "$bundle.tar.gz") bytes)"
echo "built in ${secs}s"
