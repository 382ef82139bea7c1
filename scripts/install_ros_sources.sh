#!/usr/bin/env bash
# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

# Install ROS 2 packages that are not on PyPI from a folder of their release tarballs into the project venv:
#   scripts/install_ros_sources.sh DIR      (scripts/setup.sh runs it when ROBOVISION_ROS_SOURCES=DIR is set)
# DIR holds `git archive` tarballs (*.tar.gz) of upstream ROS repositories, e.g. ../shared/ros-launch with
# launch, launch_ros, launch_testing(_ros), ros2cli and its verbs, rosidl_runtime_py, composition_interfaces and
# vision_msgs. Every package.xml in them is installed by its build type:
#   ament_python: `pip install --no-deps --no-build-isolation` (their Python dependencies come from
#                 requirements-ros-sources.txt; the ROS ones are the venv's PyPI wheels);
#   ament_cmake:  (message packages) configured with CMake against the venv and installed into the venv prefix,
#                 which scripts/env.sh already puts on PATH, LD_LIBRARY_PATH, AMENT_PREFIX_PATH and the venv's
#                 site-packages, so `import vision_msgs.msg` works without another setup file.
# Idempotent: a stamp in the venv holds a hash of the tarballs, this script, the requirements file and the venv's
# main install stamp; unchanged, nothing is reinstalled. Expects the environment of scripts/env.sh.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
sources=${1:?usage: install_ros_sources.sh DIR}
venv=${VIRTUAL_ENV:?source scripts/env.sh first}
log() { printf '[setup] %s\n' "$*" >&2; }

[ -d "$sources" ] || { log "ROBOVISION_ROS_SOURCES=$sources is not a directory"; exit 2; }
sources=$(cd "$sources" && pwd)
shopt -s nullglob
tarballs=("$sources"/*.tar.gz)
shopt -u nullglob
[ ${#tarballs[@]} -gt 0 ] || { log "ROBOVISION_ROS_SOURCES=$sources holds no *.tar.gz"; exit 2; }

stamp="$venv/.robovision-ros-sources-stamp"
want=$( (sha256sum "${tarballs[@]}" | sed "s#$sources/##"; cat "$root/scripts/install_ros_sources.sh" \
  "$root/requirements-ros-sources.txt" "$venv/.robovision-install-stamp" 2>/dev/null) | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  log "ROS sources up to date ($sources)"
  exit 0
fi

started=$SECONDS
work=$(mktemp -d "${TMPDIR:-/tmp}/robovision-ros-sources.XXXXXX")
trap 'rm -rf "$work"' EXIT
for tarball in "${tarballs[@]}"; do
  tar -xzf "$tarball" -C "$work"
done

python_packages=()
cmake_packages=()
names=()
while IFS= read -r manifest; do
  folder=$(dirname "$manifest")
  names+=("$(sed -n 's#.*<name>\(.*\)</name>.*#\1#p' "$manifest" | head -1)")
  build_type=$(sed -n 's#.*<build_type>\(.*\)</build_type>.*#\1#p' "$manifest" | head -1)
  case "$build_type" in
    ament_python) python_packages+=("$folder") ;;
    ament_cmake) cmake_packages+=("$folder") ;;
    *) log "$(basename "$folder"): build type '$build_type' is neither ament_python nor ament_cmake"; exit 2 ;;
  esac
done < <(find "$work" -name package.xml -not -path '*/test/*' | sort)

log "installing ${#python_packages[@]} Python packages from $sources"
"$venv/bin/python" -m pip install -q --disable-pip-version-check -c "$root/constraints.txt" \
  -r "$root/requirements-ros-sources.txt" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
"$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation \
  "${python_packages[@]}" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)

for folder in "${cmake_packages[@]}"; do
  name=$(basename "$folder")
  log "building $name with CMake into $venv"
  build="$work/build-$name"
  { cmake -S "$folder" -B "$build" -DCMAKE_INSTALL_PREFIX="$venv" -DBUILD_TESTING=OFF \
      "-DPython3_EXECUTABLE=$venv/bin/python" -Wno-dev \
    && cmake --build "$build" -j "$(nproc)" \
    && cmake --install "$build"; } > "$work/$name.log" 2>&1 \
    || { tail -40 "$work/$name.log" >&2; log "$name: build failed"; exit 1; }
done

# Every package installed must import now (each is a Python package of its name, messages included): a broken
# install fails here, not later as tests that skip.
(cd "$work" && "$venv/bin/python" -c 'import importlib, sys; [importlib.import_module(n) for n in sys.argv[1:]]' \
  "${names[@]}") || { log "an installed ROS source package does not import"; exit 1; }
echo "$want" > "$stamp"
log "ROS sources installed in $((SECONDS - started)) s: ${#python_packages[@]} Python packages, ${#cmake_packages[@]} CMake packages"
