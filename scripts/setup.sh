#!/usr/bin/env bash
# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

# One-command setup on a machine without a ROS install (Debian 12, Python 3.11):
#   1. create the project venv (.venv) and install the ROS 2 Kilted wheels and the Python dependencies;
#   2. make the wheels' CMake exports usable on this machine;
#   3. with ROBOVISION_ROS_SOURCES=DIR (a folder of ROS release tarballs, e.g. ../shared/ros-launch): install the
#      ROS packages that are not on PyPI from it (launch, launch_testing, the ros2 CLI, vision_msgs, ...; see
#      scripts/install_ros_sources.sh);
#   4. build the packages (robovision_msgs, robovision_ros) with colcon, exactly as on a robot, into build/ and
#      install/
# Idempotent: a second run reinstalls nothing unless a requirements file changed, and colcon rebuilds only
# what changed. Afterwards `source scripts/env.sh` gives a shell where rclpy and robovision_msgs.msg import.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The venv lives outside the source tree: CMake refuses exported include dirs (numpy's, from the wheels)
# that lie inside the source directory of the package being built.
venv=${ROBOVISION_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/robovision_ros/venv}
python=${PYTHON:-python3}
cd "$root"

log() { printf '[setup] %s\n' "$*" >&2; }

if [ ! -x "$venv/bin/python" ]; then
  log "creating venv $venv"
  "$python" -m venv "$venv"
fi

# Offline machines: ROBOVISION_WHEELS=DIR installs from a folder of wheels only (scripts/build_wheelhouse.sh
# makes one for a given Python version). A machine that already has a torch (e.g. a CUDA build) keeps it with
# ROBOVISION_TORCH=system: the venv then sees the system site-packages and nothing installs another torch.
wheels=${ROBOVISION_WHEELS:-}
torch_source=${ROBOVISION_TORCH:-pip}
case "$torch_source" in pip|system) ;; *) log "ROBOVISION_TORCH must be pip or system, not '$torch_source'"; exit 2 ;; esac
if [ ! -x "$venv/bin/python" ] && [ "$torch_source" = system ]; then
  log "creating venv $venv (with system site-packages, for the installed torch)"
  "$python" -m venv --system-site-packages "$venv"
fi

# The stamp holds a hash of everything that decides what is installed; unchanged, the install is skipped.
stamp="$venv/.robovision-install-stamp"
want=$( (cat requirements-ros.txt requirements.txt constraints.txt scripts/setup.sh; echo "$wheels $torch_source") \
  | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "installing ROS 2 Kilted wheels and Python dependencies (first run: a few minutes)"
  source_args=()
  if [ -n "$wheels" ]; then
    [ -d "$wheels" ] || { log "ROBOVISION_WHEELS=$wheels is not a directory"; exit 2; }
    source_args=(--no-index --find-links "$wheels")
    log "offline: installing from $wheels only"
  fi
  constraints=constraints.txt
  requirements=(-r requirements-ros.txt -r requirements.txt)
  if [ "$torch_source" = system ]; then
    "$venv/bin/python" -c 'import torch; print("[setup] using the installed torch", torch.__version__)' >&2 \
      || { log "ROBOVISION_TORCH=system but no torch is importable"; exit 2; }
    # Everything but the torch pin: pip must accept the installed torch, whatever its version and build.
    constraints=$(mktemp)
    grep -v '^torch' constraints.txt > "$constraints"
    grep -v '^torch' requirements.txt > "$constraints.requirements"
    requirements=(-r requirements-ros.txt -r "$constraints.requirements")
  fi
  pip_install() {
    # pip warns once per package about this machine's unused local index paths; keep the rest of stderr.
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "${source_args[@]}" -c "$constraints" "$@" \
      2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
  }
  # torch first and alone, so that pip takes the local CPU build before anything else can ask for torch.
  if [ "$torch_source" = pip ]; then
    pip_install "$(grep '^torch==' requirements.txt)"
  fi
  pip_install "${requirements[@]}"

  # The wheels were built under /opt/python/cp3XY-cp3XY (cp311, cp312); their generated CMake exports name that
  # interpreter's include dirs, which don't exist here and stop CMake's generate step. Point them at this
  # venv's interpreter and numpy.
  py_include=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
  np_include=$("$venv/bin/python" -c 'import numpy; print(numpy.get_include())')
  py_version=$("$venv/bin/python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
  tag="cp${py_version/./}"
  { grep -rl --include='*.cmake' "/opt/python/$tag-$tag" "$venv/share" || true; } | while read -r f; do
    sed -i -e "s#/opt/python/$tag-$tag/lib/python$py_version/site-packages/numpy/_core/include#$np_include#g" \
           -e "s#/opt/python/$tag-$tag/include/python$py_version#$py_include#g" "$f"
  done
  echo "$want" > "$stamp"
else
  log "dependencies up to date ($venv)"
fi

# shellcheck source=env.sh
ROBOVISION_SKIP_INSTALL_SPACE=1 source "$root/scripts/env.sh"

if [ -n "${ROBOVISION_ROS_SOURCES:-}" ]; then
  "$root/scripts/install_ros_sources.sh" "$ROBOVISION_ROS_SOURCES"
fi

mkdir -p "$root/log"
log "colcon build"
colcon --log-base "$root/log" build \
  --base-paths "$root" \
  --build-base "$root/build" \
  --install-base "$root/install" \
  --symlink-install \
  --event-handlers console_cohesion- summary- status- \
  --cmake-args -DBUILD_TESTING=OFF "-DPython3_EXECUTABLE=$venv/bin/python" -Wno-dev \
  > "$root/log/colcon-build.out" 2>&1 || { cat "$root/log/colcon-build.out" >&2; exit 1; }
log "ready: source scripts/env.sh"
