"""The README's demo: a demo workflow on a headless ComfyUI, its result judged.

    bash scripts/demo.sh                           # sets up the environment, then runs this
    bash scripts/demo.sh --workflow motion         # the motion-transfer demo
    .venv/bin/python tools/run_demo.py             # once the environment exists

Starts ComfyUI on 127.0.0.1 with its base folder in demo_output/comfyui/, copies the bundled clip into its
input folder, queues the workflow exactly as the frontend would, then judges the generated frames with OpenCV
and writes a side-by-side PNG. Prints where everything is and the judged metrics.
- edit (example_workflows/tuneavideo_demo_shapes.json): One-Shot Tune on the clip, DDIM Invert Video, TAV
  Sample with the edited caption.
- motion (example_workflows/tuneavideo_demo_motion_transfer.json): the demo motion module tuned to the clip as
  a motion LoRA, then text-to-video from fresh noise with another caption: does the new object move as the
  clip's did?
"""

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = {  # name -> (file, title of the SaveImage node with the generated frames)
    "edit": (REPO / "example_workflows" / "tuneavideo_demo_shapes.json", "Edited frames"),
    "motion": (REPO / "example_workflows" / "tuneavideo_demo_motion_transfer.json", "Generated frames"),
}
OUTPUT = REPO / "demo_output"


def log(message: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {message}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=OUTPUT, help=f"where everything goes (default {OUTPUT})")
    parser.add_argument("--workflow", choices=sorted(WORKFLOWS), default="edit",
                        help="edit (default): the Tune-A-Video edit; motion: the motion-transfer demo")
    args = parser.parse_args(argv)
    output, (workflow_file, frames_title) = args.output.resolve(), WORKFLOWS[args.workflow]
    from tav_dev.comfy_host import comfyui_path, setup_host

    setup_host()
    from tav_dev.contact_sheet import read_frames, write_contact_sheet
    from tav_dev.headless_comfy import ComfyServer, history_error, workflow_to_prompt
    from tav_dev.shapes_clips import CLIPS_FOLDER, read_mp4

    started = time.monotonic()
    workflow = json.loads(workflow_file.read_text())
    by_title = {node.get("title") or node["type"]: node for node in workflow["nodes"]}
    clip_name = by_title["LoadVideo"]["widgets_values"][0]
    source_caption = by_title["Source caption"]["widgets_values"][0]
    edit_caption = by_title["Edited caption"]["widgets_values"][0]
    base = output / "comfyui"
    shutil.rmtree(base / "output", ignore_errors=True)
    (base / "input").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(CLIPS_FOLDER / clip_name, base / "input" / clip_name)
    log(f"starting ComfyUI ({comfyui_path()}) headless on 127.0.0.1, base folder {base}")
    with ComfyServer(comfyui_path(), base) as server:
        prompt = workflow_to_prompt(workflow, server.get("/object_info"))
        log(f"queued {workflow_file.relative_to(REPO)}: '{source_caption}' -> '{edit_caption}' "
            "(about a minute on 2 CPU cores)")
        history = server.run_prompt(prompt, timeout=1800)
        if history["status"].get("status_str") != "success":
            log(f"the workflow failed: {history_error(history)} (server log: {server.log_path})")
            return 1
        edited = read_frames(server.output_files(history, str(by_title[frames_title]["id"])))
        videos = [path for node in workflow["nodes"] if node["type"] == "SaveVideo"
                  for path in server.output_files(history, str(node["id"]))]
    source = read_mp4(CLIPS_FOLDER / clip_name)
    sheet = output / "demo_side_by_side.png"
    write_contact_sheet(sheet, [(f"source: {source_caption}", source), (f"{args.workflow}: {edit_caption}", edited)],
                        f"Tune-A-Video demo ({clip_name})")
    log(f"done in {time.monotonic() - started:.0f} s")
    print("  videos:        " + "\n                 ".join(str(path) for path in videos))
    print(f"  side by side:  {sheet}")
    print(f"  all outputs:   {base / 'output' / 'tuneavideo'}")
    print("  judged by OpenCV on the generated frames:")
    for line in judged_lines(args.workflow, edited, source, edit_caption):
        print("    " + line)
    return 0


def judged_lines(workflow: str, frames, source, caption: str) -> list[str]:
    from comfyui_tune_a_video.shapes_demo.judge import judge
    from comfyui_tune_a_video.shapes_demo.metrics import score_edit, score_motion
    from comfyui_tune_a_video.shapes_demo.world import parse_caption

    target = parse_caption(caption)
    if workflow == "edit":
        score = score_edit(frames, source, target)
        return [
            f"text alignment  {score.text_alignment:.2f}  (frames whose colour, shape and background match the edit)",
            f"motion error    {score.motion_error:.2f} px  (object centre vs the source's, per frame)",
            f"consistency     {score.consistency:.2f}  (consecutive frames showing the same object)",
        ]
    source_path = [judge(frame).centroid for frame in source]
    score = score_motion(frames, target, source_path)
    source_speed = score_motion(source, target).speed
    return [
        f"right object      {score.right_object:.2f}  (frames whose colour, shape and background match the caption)",
        f"consistency       {score.consistency:.2f}  (consecutive frames showing the same object)",
        f"trajectory error  {score.trajectory_error:.2f} px  (centred object path vs the source clip's, per frame)",
        f"speed             {score.speed:.2f} px/frame  (the source clip: {source_speed:.2f})",
    ]


if __name__ == "__main__":
    sys.exit(main())
