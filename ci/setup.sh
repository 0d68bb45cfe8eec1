#!/usr/bin/env bash
# Installs what lockstep's tests and demo need on a fresh Debian machine, and says
# clearly what is missing when it cannot be installed. Safe to run again.
set -euo pipefail

need_apt=()
command -v mkfs.ext4 >/dev/null || need_apt+=(e2fsprogs)
command -v mount >/dev/null || need_apt+=(mount)
command -v losetup >/dev/null || need_apt+=(mount)
# The peers of `lockstep-bench peers` (its quick size runs in the tests). Their
# services must not start: the benchmark runs its own instances.
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need_apt+=(postgresql)
[ -x /usr/sbin/mariadbd ] || need_apt+=(mariadb-server)
[ -x /usr/bin/etcd ] || need_apt+=(etcd-server)
# The load generator of `lockstep-bench mariadb` (its quick size runs in the tests).
command -v sysbench >/dev/null || need_apt+=(sysbench)
# promtool checks a live scrape, the alert rules and their unit tests (tests/ops.rs);
# its package also brings a Prometheus service, which must not start.
command -v promtool >/dev/null || need_apt+=(prometheus)
# systemd-analyze verifies the packaged unit (tests/ops.rs).
command -v systemd-analyze >/dev/null || need_apt+=(systemd)
# The sideway crate (RDMA verbs, lockstep-sys) builds rdma-core-mummy with cmake and
# generates its bindings with libclang; libibverbs itself is loaded at run time, and
# libibverbs-dev brings its headers and the library the probe loads.
command -v cmake >/dev/null || need_apt+=(cmake)
ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 || need_apt+=(libclang-dev)
[ -e /usr/include/infiniband/verbs.h ] || need_apt+=(libibverbs-dev)

if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        cache=$(mktemp -d)
        policy=""
        if [ ! -e /usr/sbin/policy-rc.d ]; then
            printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
            chmod 755 /usr/sbin/policy-rc.d
            policy=/usr/sbin/policy-rc.d
        fi
        apt-get update -qq || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            -o Dir::Cache::Archives="$cache" -o APT::Sandbox::User=root "${need_apt[@]}" ||
            echo "setup: apt-get could not install ${need_apt[*]};" \
                 "the tests that need them skip with a reason" >&2
        rm -rf "$cache"
        [ -z "$policy" ] || rm -f "$policy"
        if [ -d /run/systemd/system ]; then
            systemctl disable --now --quiet postgresql mariadb etcd prometheus 2>/dev/null || true
        fi
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
