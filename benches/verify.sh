#!/usr/bin/env bash
# What `verify` costs on one large file (issue 16's targets): a copy with
# crc32 and with sha256 against the same copy without, sha256 against
# sha256sum, and the read-back against a read of a file just written.
#
#   benches/verify.sh [DIR] [MiB] [rounds]     # default /tmp 2048 5
#
# Not part of `cargo test`. Prints a markdown table (see
# copyd-service/engine/examples/verify_bench.rs for what each column is);
# docs/PERFORMANCE.md, "Verification", has the numbers of the last runs.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
cargo build --release -q -p copyd-engine --example verify_bench
exec "$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/examples/verify_bench" \
    "${1:-/tmp}" "${2:-2048}" "${3:-5}"
