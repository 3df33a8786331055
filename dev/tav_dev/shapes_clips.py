"""Shapes-world source clips as lossless MP4 files, and the few committed for the demo and the tests.

    .venv/bin/python -m tav_dev.shapes_clips     # rewrites demo_model/clips/ from the seeds below

The files are H.264 in RGB at qp 0 (bit-exact after decoding, so the clip ComfyUI's Load Video reads is
exactly the generated one); some browsers do not preview that profile, any video player does."""

import json
from pathlib import Path

import av
import numpy as np

REPO = Path(__file__).resolve().parents[2]
CLIPS_FOLDER = REPO / "demo_model" / "clips"
FPS = 8
# name -> (seed, path); frames are 8, the demo's length
COMMITTED = {
    "shapes_demo_arc.mp4": (3, "arc"),
    "shapes_demo_bounce.mp4": (2, "bounce"),
    "shapes_demo_diagonal.mp4": (5, "diagonal"),
}
COMMITTED_FRAMES = 8


def write_lossless_mp4(path: Path, frames: np.ndarray, fps: int = FPS) -> None:
    """frames: (F, H, W, 3) RGB uint8. Written to a temporary name first, then renamed."""
    partial = path.with_name(path.name + ".partial.mp4")
    with av.open(str(partial), "w") as container:
        stream = container.add_stream("libx264rgb", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "rgb24"
        stream.options = {"qp": "0", "preset": "veryslow"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode(None))
    partial.replace(path)


def read_mp4(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def committed_captions() -> dict[str, dict]:
    return json.loads((CLIPS_FOLDER / "clips.json").read_text())


def main() -> None:
    from tav_dev.comfy_host import setup_host

    setup_host()
    from comfyui_tune_a_video.shapes_demo.world import random_clip

    CLIPS_FOLDER.mkdir(parents=True, exist_ok=True)
    index = {}
    for name, (seed, path) in COMMITTED.items():
        clip = random_clip(seed, frames=COMMITTED_FRAMES, path=path)
        write_lossless_mp4(CLIPS_FOLDER / name, clip.frames)
        index[name] = {"caption": clip.caption, "seed": seed, "path": path, "frames": COMMITTED_FRAMES}
        print(f"{name}: {clip.caption} ({path}, seed {seed})")
    (CLIPS_FOLDER / "clips.json").write_text(json.dumps(index, indent=1) + "\n")


if __name__ == "__main__":
    main()
