#!/usr/bin/env bash
# Runs every test: unit tests, then the end-to-end tests (real kubectl against a
# real `kelp server`), serially.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
kelp_need_packages
cargo build --bins
cargo test --lib
cargo test --test '*' -- --test-threads=1
