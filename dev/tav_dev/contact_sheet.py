"""A labelled contact sheet: one row of frames per video, for people to look at."""

from pathlib import Path

import numpy as np

LABEL_WIDTH, SCALE = 220, 2


def write_contact_sheet(path: Path, rows: list[tuple[str, np.ndarray]], title: str, scale: int = SCALE) -> None:
    """rows: (label, (F, H, W, 3) RGB uint8 frames), frames enlarged `scale` times; written to a temporary
    name first, then renamed."""
    import cv2

    canvas_rows = []
    for label, frames in rows:
        strip = np.concatenate(list(frames), axis=1).repeat(scale, 0).repeat(scale, 1)
        label_box = np.full((strip.shape[0], LABEL_WIDTH, 3), 255, np.uint8)
        for line_number, text in enumerate(_wrap(label, 30)):
            cv2.putText(label_box, text, (4, 18 + 16 * line_number), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1,
                        cv2.LINE_AA)
        canvas_rows.append(np.concatenate([label_box, strip], axis=1))
    sheet = np.concatenate(canvas_rows, axis=0)
    header = np.full((28, sheet.shape[1], 3), 255, np.uint8)
    cv2.putText(header, title, (4, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    partial = path.with_name(path.stem + ".partial.png")
    cv2.imwrite(str(partial), np.concatenate([header, sheet], axis=0)[:, :, ::-1])
    partial.replace(path)


def read_frames(paths: list[Path]) -> np.ndarray:
    """PNG files -> (F, H, W, 3) RGB uint8."""
    import cv2

    return np.stack([cv2.imread(str(path), cv2.IMREAD_COLOR)[:, :, ::-1] for path in paths])


def _wrap(text: str, width: int) -> list[str]:
    lines = [""]
    for word in text.split():
        if len(lines[-1]) + len(word) + 1 > width:
            lines.append("")
        lines[-1] = f"{lines[-1]} {word}".strip()
    return lines
