# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

# Source this file (bash) for a shell in which the project venv, the ROS 2 Kilted wheels and the colcon install
# of robovision_ros work: `source scripts/env.sh`. scripts/setup.sh creates what it points at.
_rv_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
_rv_venv=${ROBOVISION_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/robovision_ros/venv}
if [ ! -x "$_rv_venv/bin/python" ]; then
  echo "robovision_ros: no venv at $_rv_venv; run scripts/setup.sh first" >&2
  return 1 2>/dev/null || exit 1
fi

export VIRTUAL_ENV=$_rv_venv
case ":$PATH:" in *":$_rv_venv/bin:"*) ;; *) export PATH="$_rv_venv/bin:$PATH" ;; esac

# The wheels keep their shared libraries in the venv's lib/ and in site-packages/ros_*.libs. Setting
# LD_LIBRARY_PATH here (and marking the bootstrap done) spares every Python start the re-exec that
# ros_wheels_bootstrapper does otherwise, and lets non-Python tools (cmake, the generators) find them too.
_rv_site=$("$_rv_venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' 2>/dev/null \
  || true)
_rv_libs="$_rv_venv/lib"
for _rv_d in "$_rv_site"/ros_*.libs; do
  [ -d "$_rv_d" ] && _rv_libs="$_rv_libs:$_rv_d"
done
case ":${LD_LIBRARY_PATH:-}:" in
  *":$_rv_venv/lib:"*) ;;
  *) export LD_LIBRARY_PATH="$_rv_libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ;;
esac
export _ROS_WHEELS_BOOTSTRAP_COMPLETE=1

# The venv is the underlay, as /opt/ros/<distro> is on a robot.
case ":${AMENT_PREFIX_PATH:-}:" in
  *":$_rv_venv:"*) ;;
  *) export AMENT_PREFIX_PATH="$_rv_venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}" ;;
esac
case ":${CMAKE_PREFIX_PATH:-}:" in
  *":$_rv_venv:"*) ;;
  *) export CMAKE_PREFIX_PATH="$_rv_venv${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}" ;;
esac
export RMW_IMPLEMENTATION=${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}
export ROS_DISTRO=${ROS_DISTRO:-kilted}
export ROS_VERSION=2
export ROS_PYTHON_VERSION=3

if [ -z "${ROBOVISION_SKIP_INSTALL_SPACE:-}" ]; then
  if [ -f "$_rv_root/install/setup.bash" ]; then
    # colcon's setup scripts read unset variables; allow that even when the caller runs under `set -u`.
    case $- in *u*) _rv_nounset=1; set +u ;; *) _rv_nounset= ;; esac
    # shellcheck disable=SC1091
    source "$_rv_root/install/setup.bash"
    [ -n "$_rv_nounset" ] && set -u
  else
    echo "robovision_ros: no colcon install at $_rv_root/install; run scripts/setup.sh" >&2
  fi
fi
unset _rv_root _rv_venv _rv_site _rv_libs _rv_d _rv_nounset
