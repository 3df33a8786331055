"""A picture of the tuning loss: people read curves faster than numbers."""

import numpy as np

from .opencv import import_cv2

WIDTH, HEIGHT, MARGIN = 640, 320, 48
RAW_COLOUR, SMOOTH_COLOUR, AXIS_COLOUR, TEXT_COLOUR = (200, 200, 235), (40, 60, 200), (90, 90, 90), (30, 30, 30)


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or len(values) < 2:
        return values
    kernel = np.ones(window) / window
    padded = np.concatenate([np.full(window - 1, values[0]), values])
    return np.convolve(padded, kernel, mode="valid")


def draw_loss_curve(losses: list[float], title: str = "One-Shot Tune loss") -> np.ndarray:
    """RGB uint8 image (HEIGHT, WIDTH, 3): raw loss per step, a moving average, and the axes' ranges."""
    cv2 = import_cv2()
    image = np.full((HEIGHT, WIDTH, 3), 255, dtype=np.uint8)
    values = np.asarray(losses, dtype=np.float64)
    low, high = (float(values.min()), float(values.max())) if len(values) else (0.0, 1.0)
    if high - low < 1e-12:
        low, high = low - 0.5, high + 0.5
    plot_w, plot_h = WIDTH - 2 * MARGIN, HEIGHT - 2 * MARGIN

    def to_points(series: np.ndarray) -> np.ndarray:
        xs = MARGIN + np.arange(len(series)) * plot_w / max(len(series) - 1, 1)
        ys = MARGIN + (high - series) / (high - low) * plot_h
        return np.stack([xs, ys], axis=1).round().astype(np.int32).reshape(-1, 1, 2)

    cv2.rectangle(image, (MARGIN, MARGIN), (MARGIN + plot_w, MARGIN + plot_h), AXIS_COLOUR, 1)
    if len(values):
        cv2.polylines(image, [to_points(values)], False, RAW_COLOUR, 1, cv2.LINE_AA)
        window = max(1, len(values) // 20)
        cv2.polylines(image, [to_points(moving_average(values, window))], False, SMOOTH_COLOUR, 2, cv2.LINE_AA)
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(image, title, (MARGIN, 30), font, 0.6, TEXT_COLOUR, 1, cv2.LINE_AA)
    cv2.putText(image, f"{high:.4g}", (4, MARGIN + 5), font, 0.4, TEXT_COLOUR, 1, cv2.LINE_AA)
    cv2.putText(image, f"{low:.4g}", (4, MARGIN + plot_h), font, 0.4, TEXT_COLOUR, 1, cv2.LINE_AA)
    cv2.putText(image, "step 1", (MARGIN, HEIGHT - 14), font, 0.4, TEXT_COLOUR, 1, cv2.LINE_AA)
    last = f"step {len(values)}"
    cv2.putText(image, last, (MARGIN + plot_w - 8 * len(last), HEIGHT - 14), font, 0.4, TEXT_COLOUR, 1, cv2.LINE_AA)
    return image
