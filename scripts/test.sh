#!/usr/bin/env bash
# Runs every test: unit tests, then the end-to-end tests (real kubectl against a
# real `kelp server`, real containerd + runc for the node), serially.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
kelp_need_packages
cargo build --bins
scripts/build-test-images.sh target/test-images
cargo test --lib
cargo test --test '*' -- --test-threads=1
