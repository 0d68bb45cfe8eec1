#!/usr/bin/env bash
# The test command of lockstep (the README's): formatting, lints, then every test of
# the workspace. Runs on a fresh machine; ci/setup.sh installs what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
# The data path's process-fault tests again, with the peer links on emulated RDMA
# rings (a test double of verbs over shared memory), at a short size.
LOCKSTEP_TEST_TRANSPORT=rdma-emu LOCKSTEP_CHAOS_ROUNDS=5 \
    cargo test --locked --test repl_faults
