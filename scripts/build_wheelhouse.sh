#!/usr/bin/env bash
# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

# Build a folder of wheels for an offline install, for this machine's Python or another version:
#   scripts/build_wheelhouse.sh DIR [PYTHON_VERSION]        e.g. scripts/build_wheelhouse.sh /media/usb/wheels 3.12
# Then, on the offline machine (Linux x86_64, glibc >= 2.28, that Python version):
#   ROBOVISION_WHEELS=DIR scripts/setup.sh                  (add ROBOVISION_TORCH=system to keep a CUDA torch there)
# The package set is the one scripts/setup.sh resolved into this machine's venv (run it first): each is fetched
# as a binary wheel for the target version and manylinux x86_64; pure-Python packages published only as source
# are built into version-independent wheels here.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:?usage: scripts/build_wheelhouse.sh DIR [PYTHON_VERSION]}
venv=${ROBOVISION_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/robovision_ros/venv}
[ -x "$venv/bin/python" ] || { echo "[wheelhouse] no venv at $venv: run scripts/setup.sh first" >&2; exit 2; }
version=${2:-$("$venv/bin/python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')}
mkdir -p "$out"
out=$(cd "$out" && pwd)
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 linux_x86_64; do
  platforms+=(--platform "$p")
done
quiet() { grep -v "is ignored: it is neither a file nor a directory" >&2 || true; }
# --all: pip, setuptools and wheel too, at the versions the constraints chose.
packages=$("$venv/bin/python" -m pip freeze --all --disable-pip-version-check --exclude-editable | grep '==')
echo "[wheelhouse] $(echo "$packages" | wc -l) packages for Python $version into $out" >&2
built=()
bundled=()
for spec in $packages; do
  if python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
      --python-version "$version" "${platforms[@]}" -d "$out" "$spec" 2>/dev/null; then
    continue
  fi
  if ! python3 -m pip download -q --disable-pip-version-check --no-deps --no-binary=:all: -d "$out/.src" "$spec" \
      2>/dev/null; then
    # Not on the index at all: metadata installed by another wheel (the ROS wheels carry their generated
    # packages' own dist-info, e.g. action_msgs inside ros-action-msgs).
    bundled+=("$spec")
    continue
  fi
  # No binary wheel for that version: a pure-Python source package builds into a py3 wheel usable anywhere.
  python3 -m pip wheel -q --disable-pip-version-check --no-deps -w "$out" "$out"/.src/* 2> >(quiet)
  rm -rf "$out/.src"
  built+=("$spec")
done
[ ${#built[@]} -eq 0 ] || echo "[wheelhouse] built from source: ${built[*]}" >&2
[ ${#bundled[@]} -eq 0 ] || echo "[wheelhouse] installed by other wheels (not on the index): ${#bundled[@]}" >&2
echo "[wheelhouse] $(find "$out" -name '*.whl' | wc -l) wheels, $(du -sh "$out" | cut -f1)" >&2
