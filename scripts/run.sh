#!/usr/bin/env bash
# Builds kelp (release) and starts `kelp server`. Extra arguments go to `kelp server`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
kelp_need_packages
cargo build --release
echo "kelp: starting; in another shell run:  sudo KUBECONFIG=/etc/kelp/kelp.yaml kubectl get ns   (or: sudo target/release/kelp kubectl get ns)" >&2
exec target/release/kelp server "$@"
