#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what it needs, builds, lints, runs
# unit tests and the privileged integration tests (real veths, namespaces, AF_XDP),
# then a short run of every fuzz target (scripts/fuzz.sh).
# Must run as root; the privileged tier fails (does not skip) when it cannot run here.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "test: the privileged integration tests need root (sudo $0)"; exit 1
fi
bash scripts/setup.sh

export XSKNET_REQUIRE_PRIVILEGED=1
echo "== fmt"
cargo fmt --all -- --check
echo "== clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== build (release binaries used by the integration tests)"
cargo build --workspace --release --locked --bins
echo "== tests"
# Privileged tests build real namespaces/veths; two at a time keeps a 2-core box sane.
cargo test --workspace --locked --release -- --test-threads=2
echo "== fuzz (every target from its seeds, 30 s each)"
bash scripts/fuzz.sh 30
