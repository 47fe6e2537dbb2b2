#!/usr/bin/env bash
# Installs everything Aspen and its tests need on a fresh Debian machine:
# system packages (etcd, bubblewrap, a C compiler, BLAKE3's C sources), a virtualenv in .venv with the package
# and its test extras, and the example/test WASM plugins built from source.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO=sudo; fi
need=()
command -v etcd >/dev/null || need+=(etcd-server)
command -v bwrap >/dev/null || need+=(bubblewrap)
command -v cc >/dev/null || need+=(gcc)  # the plugin hand-off's C extension
ls /usr/share/cargo/registry/blake3-*/c/blake3.h >/dev/null 2>&1 || need+=(librust-blake3-dev)  # BLAKE3's C sources, for aspen/storage/_treehash.c
command -v wrk >/dev/null || need+=(wrk)  # HTTP load for benchmarks/bench_rpc.py and bench_http.py
python3 -c 'import os, sysconfig; raise SystemExit(not os.path.exists(sysconfig.get_paths()["include"] + "/Python.h"))' \
    || need+=(python3-dev)
# vm jobs (aspen.jobs.executors.vm): QEMU, and the guest image's kernel and busybox.
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
ls /boot/vmlinuz-*-amd64 >/dev/null 2>&1 || need+=(linux-image-amd64)
if [ ${#need[@]} -gt 0 ]; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test]'

# Build every WASM plugin in the repository from source (Zig from PyPI).
if [ -f aspen/plugins/build.py ]; then
    .venv/bin/python -m aspen.plugins.build
fi

# The vm jobs' guest image, built from the Debian packages into the default cache
# (/var/tmp/aspen-vm-cache/build; skipped when its sources are unchanged).
.venv/bin/python -c 'from aspen.jobs.vm.cache import ImageCache; print(*ImageCache().prebuilt())'
