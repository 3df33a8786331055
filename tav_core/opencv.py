"""OpenCV, imported where it is used, with an actionable message when the user's Python lacks it."""


def import_cv2():
    try:
        import cv2
    except ImportError as error:  # only on installs where install.py never ran
        raise ImportError(
            "Tune-A-Video needs OpenCV: run `python install.py` in the pack folder (or pip install opencv-python)"
        ) from error
    return cv2
