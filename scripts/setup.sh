#!/usr/bin/env bash
# Installs everything napari-iog and its tests need, on a fresh Debian/Ubuntu machine.
#   bash scripts/setup.sh
# Environment:
#   TORCH_SPEC   the torch requirement installed first (default: torch==2.13.0, which on the
#                project's CI machines is a local CPU build; set it to e.g. "torch" on a GPU box)
#   SKIP_APT=1   do not install the system libraries for Qt and Xvfb
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${SKIP_APT:-0}" != 1 ] && command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO="sudo"
    # Qt's xcb platform plugin and a virtual display for the GUI tests.
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        xvfb libxcb-icccm4 libxcb-keysyms1 libxcb-xinerama0 libxcb-cursor0 libxkbcommon-x11-0 \
        libgl1 libegl1 libdbus-1-3 libfontconfig1 libxcb-shape0 libxcb-randr0 libxcb-render-util0 \
        libxcb-image0 libxcb-xfixes0 libxcb-xkb1 >/dev/null
fi

PYTHON="${PYTHON:-python3}"
# torch first and pinned, so that the package's unpinned "torch" does not pull a CUDA build.
"$PYTHON" -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
"$PYTHON" -m pip install -q -e ".[testing]"
"$PYTHON" -c "import napari_iog, torch; print('napari-iog', napari_iog.__version__, '| torch', torch.__version__)"
