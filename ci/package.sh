#!/usr/bin/env bash
# Builds the Debian package of lockstep (target/debian/lockstep_*.deb): the two
# binaries, the systemd unit, the default configuration, the example cluster, the
# configuration reference, the alert rules and dashboard, man pages and shell
# completions. Installs cargo-deb when it is missing (cargo install, from crates.io).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo-deb >/dev/null; then
    echo "package: installing cargo-deb" >&2
    cargo install --locked cargo-deb
fi
cargo build --release --locked -p lockstep --bin lockstepd --bin lockstep
assets=target/assets
rm -rf "$assets"
mkdir -p "$assets/man" "$assets/completions"
target/release/lockstep man --out "$assets/man"
target/release/lockstepd man > "$assets/man/lockstepd.1"
for bin in lockstep lockstepd; do
    "target/release/$bin" completions bash > "$assets/completions/$bin.bash"
    "target/release/$bin" completions zsh > "$assets/completions/_$bin"
    "target/release/$bin" completions fish > "$assets/completions/$bin.fish"
done
gzip -9n "$assets"/man/*.1
# Release binaries carry debug info (profile.release debug = 1) for backtraces and
# perf; the package ships them stripped.
cargo deb -p lockstep --no-build --locked --strip "$@"
ls -l target/debian/*.deb
