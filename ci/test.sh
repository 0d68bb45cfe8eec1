#!/usr/bin/env bash
# The test command of lockstep (the README's): formatting, lints, then every test of
# the workspace. Runs on a fresh machine; ci/setup.sh installs what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The simulator checks a fresh range of seeds drawn from the commit besides its fixed
# ones (tests/sim.rs prints the range; this value replays it).
LOCKSTEP_SIM_FRESH="${LOCKSTEP_SIM_FRESH:-$(git rev-parse HEAD 2>/dev/null || echo no-commit)}"
export LOCKSTEP_SIM_FRESH
echo "ci: fresh simulator seeds drawn from LOCKSTEP_SIM_FRESH=$LOCKSTEP_SIM_FRESH"
cargo test --workspace --locked
# The data path's process-fault tests again, with the peer links on emulated RDMA
# rings (a test double of verbs over shared memory), at a short size.
LOCKSTEP_TEST_TRANSPORT=rdma-emu LOCKSTEP_CHAOS_ROUNDS=5 \
    cargo test --locked --test repl_faults
