"""Post-install step (ComfyUI-Manager and the Comfy CLI run it after requirements.txt).

The pack needs OpenCV's `cv2`, which several wheels provide (opencv-python, -headless, -contrib...).
Installing a second one beside the user's corrupts `cv2`, so this adds opencv-python only when no
OpenCV wheel is installed yet.
"""

import importlib.metadata
import subprocess
import sys

OPENCV_WHEELS = (
    "opencv-python",
    "opencv-python-headless",
    "opencv-contrib-python",
    "opencv-contrib-python-headless",
)


def installed_opencv() -> str | None:
    for name in OPENCV_WHEELS:
        try:
            importlib.metadata.version(name)
            return name
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def main() -> None:
    present = installed_opencv()
    if present:
        print(f"[Tune-A-Video] OpenCV already provided by {present}")
        return
    subprocess.check_call([sys.executable, "-m", "pip", "install", "opencv-python"])


if __name__ == "__main__":
    main()
