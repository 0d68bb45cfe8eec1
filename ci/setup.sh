#!/usr/bin/env bash
# Installs what lockstep's tests and demo need on a fresh Debian machine, and says
# clearly what is missing when it cannot be installed. Safe to run again.
set -euo pipefail

need_apt=()
command -v mkfs.ext4 >/dev/null || need_apt+=(e2fsprogs)
command -v mount >/dev/null || need_apt+=(mount)
command -v losetup >/dev/null || need_apt+=(mount)

if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        cache=$(mktemp -d)
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            -o Dir::Cache::Archives="$cache" "${need_apt[@]}"
        rm -rf "$cache"
    else
        echo "setup: cannot install ${need_apt[*]} (not root or no apt-get);" \
             "the tests that need them skip with a reason" >&2
    fi
fi

for tool in cargo rustfmt cargo-clippy; do
    if ! command -v "$tool" >/dev/null; then
        echo "setup: $tool is missing: install the Rust toolchain with rustfmt and clippy" >&2
        exit 1
    fi
done
