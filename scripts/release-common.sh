# shellcheck shell=bash
# Sourced by build-release.sh and build-deb.sh (bash): what both read from the
# command line and the project.

# Sets $target from `--target TRIPLE` / `--target=TRIPLE` (or TARGET); empty
# when neither is given. `-h` prints the calling script's header comment.
# shellcheck disable=SC2034 # $target is read by the sourcing script
release_target_args() {
    target=${TARGET:-}
    while (($#)); do
        case "$1" in
            --target) target=${2:?--target needs a triple}; shift 2 ;;
            --target=*) target=${1#--target=}; shift ;;
            -h|--help) sed -n '2,/^set /{/^#/s/^# \{0,1\}//p}' "$0"; exit 0 ;;
            *) echo "$(basename "$0"): unknown argument $1" >&2; exit 2 ;;
        esac
    done
}

# Debian's name for a target triple's architecture; fails for others.
debian_arch() {
    case "${1%%-*}" in
        x86_64) echo amd64 ;;
        aarch64) echo arm64 ;;
        armv7) echo armhf ;;
        *) return 1 ;;
    esac
}

# The package version from Cargo.toml.
kelp_version() {
    sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1
}
