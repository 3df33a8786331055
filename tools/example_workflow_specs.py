"""The example workflows, described node by node; tools/build_example_workflows.py turns them into the
UI-format JSON the ComfyUI frontend saves (by building them in the real frontend)."""

from dataclasses import dataclass, field

from train_demo_model import GATE_CFG

CHECKPOINT = "v1-5-pruned-emaonly.safetensors"
SOURCE_VIDEO = "source_clip.mp4"
CONTROLNET = "control_v11p_sd15_canny.pth"
STYLE_LORA = "style_lora.safetensors"
TUNED_WEIGHTS = "my_clip.safetensors"
SOURCE_CAPTION = "a jeep car is moving on the road"
DEMO_CLIP = "shapes_demo_arc.mp4"  # in demo_model/clips/
DEMO_SOURCE_CAPTION = "a red circle on a blue background"
DEMO_EDIT_CAPTION = "a red triangle on a blue background"
DEMO_TUNE_STEPS, DEMO_LEARNING_RATE, DEMO_DDIM_STEPS, DEMO_CFG = 300, 3e-4, 25, GATE_CFG


@dataclass
class Node:
    key: str
    type: str
    pos: tuple[int, int]
    widgets: dict = field(default_factory=dict)
    title: str | None = None
    size: tuple[int, int] | None = None


@dataclass
class Workflow:
    name: str
    nodes: list[Node]
    links: list[tuple[str, str | int, str, str]]  # (from node, output name or index, to node, input name)
    groups: list[dict] = field(default_factory=list)  # {"title", "bounding": [x, y, w, h]}


def note(key: str, pos: tuple[int, int], text: str, size: tuple[int, int] = (420, 260)) -> Node:
    return Node(key, "Note", pos, {"text": text.strip()}, size=size)


LIGHTER = """
Lighter settings to try things quickly: TAV Sample Frames count 8 and 256x256, One-Shot Tune
100-200 steps, DDIM Invert Video and TAV Sample 20 steps. The paper's settings (the defaults here)
are 24 frames at 512x512, 500 tuning steps and 50 DDIM steps; tuning then takes minutes on a
recent GPU and needs about 8 GB of VRAM with gradient checkpointing and bf16.
"""


def source_nodes(x: int = 0) -> list[Node]:
    """Checkpoint, clip and the frames: shared by every workflow."""
    return [
        Node("ckpt", "CheckpointLoaderSimple", (x, 0), {"ckpt_name": CHECKPOINT}),
        Node("video", "LoadVideo", (x, 200), {"file": SOURCE_VIDEO}),
        Node("components", "GetVideoComponents", (x, 620)),
        Node("frames", "TAV_SampleFrames", (x + 360, 200),
             {"count": 24, "start": 0, "stride": 2, "width": 512, "height": 512, "resize": "crop"}),
        Node("encode", "VAEEncode", (x + 360, 520)),
    ]


SOURCE_LINKS = [
    ("video", "VIDEO", "components", "video"),
    ("components", "images", "frames", "images"),
    ("frames", "IMAGE", "encode", "pixels"),
    ("ckpt", "VAE", "encode", "vae"),
]


def prompt_nodes(x: int, edit: str) -> list[Node]:
    return [
        Node("source_prompt", "CLIPTextEncode", (x, 0), {"text": SOURCE_CAPTION}, title="Source caption"),
        Node("empty_prompt", "CLIPTextEncode", (x, 250), {"text": ""}, title="Empty prompt (inversion, negative)"),
        Node("edit_prompt", "CLIPTextEncode", (x, 500), {"text": edit}, title="Edited caption"),
    ]


PROMPT_LINKS = [
    ("ckpt", "CLIP", "source_prompt", "clip"),
    ("ckpt", "CLIP", "empty_prompt", "clip"),
    ("ckpt", "CLIP", "edit_prompt", "clip"),
]


def tune_nodes(x: int, save_name: str = "") -> list[Node]:
    return [
        Node("inflate", "TAV_InflateUNet", (x, 0), {
            "attention": "sparse_causal", "temporal_layers": True, "temporal_position_encoding": "none",
            "groupnorm": "per_frame"}),
        Node("tune", "TAV_OneShotTune", (x, 230), {
            "steps": 500, "learning_rate": 3e-5, "seed": 33, "control_after_generate": "fixed",
            "gradient_checkpointing": "blocks", "precision": "auto", "save_name": save_name,
            "caption": SOURCE_CAPTION}),
        Node("loss", "PreviewImage", (x, 680), title="Loss curve"),
    ]


TUNE_LINKS = [
    ("ckpt", "MODEL", "inflate", "model"),
    ("inflate", "MODEL", "tune", "model"),
    ("encode", "LATENT", "tune", "latents"),
    ("source_prompt", "CONDITIONING", "tune", "conditioning"),
    ("tune", "loss_curve", "loss", "images"),
]


def edit_nodes(
    x: int, y: int, suffix: str = "", model_from: str = "tune", positive: tuple[str, str | int] = ("edit_prompt", 0),
    negative: tuple[str, str | int] = ("empty_prompt", 0), latent_from: str = "invert", vae_from: str = "ckpt",
    fps: float = 12.0, prefix: str = "tuneavideo/edit",
) -> tuple[list[Node], list[tuple]]:
    """Sample from the inversion, decode, make and save the edited video."""
    sample, decode, video, save = (f"{name}{suffix}" for name in ("sample", "decode", "make_video", "save"))
    nodes = [
        Node(sample, "TAV_Sample", (x, y), {
            "steps": 50, "cfg": 12.5, "eta": 0.0, "seed": 0, "control_after_generate": "fixed"}),
        Node(decode, "VAEDecode", (x + 360, y)),
        Node(video, "CreateVideo", (x + 360, y + 120), {"fps": fps}),
        Node(save, "SaveVideo", (x + 720, y), {"filename_prefix": f"{prefix}{suffix}", "format": "auto",
                                               "codec": "auto"}),
    ]
    links = [
        (model_from, "MODEL", sample, "model"),
        (positive[0], positive[1], sample, "positive"),
        (negative[0], negative[1], sample, "negative"),
        (latent_from, "LATENT", sample, "latent"),
        (sample, "LATENT", decode, "samples"),
        (vae_from, "VAE", decode, "vae"),
        (decode, "IMAGE", video, "images"),
        (video, "VIDEO", save, "video"),
    ]
    return nodes, links


def invert_node(x: int, y: int, key: str = "invert", model_from: str = "tune") -> tuple[list[Node], list[tuple]]:
    return [Node(key, "TAV_DDIMInvertVideo", (x, y), {"steps": 50, "inversion_strength": 1.0})], [
        (model_from, "MODEL", key, "model"),
        ("encode", "LATENT", key, "latents"),
        ("empty_prompt", "CONDITIONING", key, "conditioning"),
    ]


def side_by_side(
    x: int, y: int, edited_decode: str = "decode", source_from: tuple[str, str | int] = ("frames", "IMAGE"),
    fps: float = 12.0, prefix: str = "tuneavideo/side_by_side",
) -> tuple[list[Node], list[tuple]]:
    return [
        Node("stitch", "ImageStitch", (x, y), {"direction": "right", "match_image_size": True, "spacing_width": 0,
                                               "spacing_color": "white"}, title="Source | edit"),
        Node("stitch_video", "CreateVideo", (x + 360, y), {"fps": fps}),
        Node("stitch_save", "SaveVideo", (x + 720, y), {"filename_prefix": prefix, "format": "auto",
                                                        "codec": "auto"}),
    ], [
        (*source_from, "stitch", "image1"),
        (edited_decode, "IMAGE", "stitch", "image2"),
        ("stitch", "IMAGE", "stitch_video", "images"),
        ("stitch_video", "VIDEO", "stitch_save", "video"),
    ]


def edit_workflow() -> Workflow:
    invert, invert_links = invert_node(1600, 0)
    edit, edit_links = edit_nodes(1600, 260)
    stitch, stitch_links = side_by_side(1960, 560)
    return Workflow(
        "tuneavideo_edit",
        [*source_nodes(), *prompt_nodes(800, "a Porsche car is moving on the beach"), *tune_nodes(1200), *invert,
         *edit, *stitch,
         note("about", (0, -330), """
Tune-A-Video edit: one-shot tune the checkpoint on your clip, DDIM-invert the clip, then sample it
again with an edited caption. The result keeps the clip's motion and follows the new text.
1. Pick your checkpoint (SD1.x, SD2.x or SDXL) and your video in Load Video.
2. Write the source caption (what the clip shows) and the edited caption.
3. Queue. Outputs: the edit and a side-by-side video in output/tuneavideo/, and the loss curve.
TAV Sample Frames keeps 24 frames every 2nd frame at 512x512 (the paper). Invert with the empty
prompt, as the paper; cfg 12.5 is the paper's value, 7-10 is often nicer.
""" + LIGHTER, size=(700, 330))],
        SOURCE_LINKS + PROMPT_LINKS + TUNE_LINKS + invert_links + edit_links + stitch_links,
    )


def tune_once_edit_many_workflow() -> Workflow:
    invert, links = invert_node(1600, 0)
    nodes = [*invert]
    edits = [("_a", "a Porsche car is moving on the beach"), ("_b", "a jeep car is moving on the snow"),
             ("_c", "a cartoon jeep car is moving on the road, comic style")]
    for number, (suffix, caption) in enumerate(edits):
        prompt_key = f"edit_prompt{suffix}"
        nodes.append(Node(prompt_key, "CLIPTextEncode", (1200, 900 + 250 * number), {"text": caption},
                          title=f"Edit {suffix[1:].upper()}"))
        edit, edit_links = edit_nodes(1600, 260 + 260 * number, suffix, positive=(prompt_key, 0))
        nodes += edit
        links += [("ckpt", "CLIP", prompt_key, "clip"), *edit_links]
    # A later session loads the saved weights instead of tuning again.
    later_invert, later_invert_links = invert_node(1600, 1300, key="invert_later", model_from="load_tuned")
    later_edit, later_edit_links = edit_nodes(
        1600, 1560, "_later", model_from="load_tuned", positive=("edit_prompt_a", 0), latent_from="invert_later"
    )
    return Workflow(
        "tuneavideo_tune_once_edit_many",
        [*source_nodes(), *prompt_nodes(800, "")[:2], *tune_nodes(1200),
         Node("save_weights", "TAV_SaveTunedWeights", (1200, 1700),
              {"save_name": TUNED_WEIGHTS.removesuffix(".safetensors"), "precision": "fp16"}),
         *nodes,
         Node("load_tuned", "TAV_LoadTunedWeights", (800, 1400),
              {"weights_name": TUNED_WEIGHTS, "allow_mismatch": False}),
         *later_invert, *later_edit,
         note("about", (0, -330), """
Tune once, edit many: the tuned model feeds several TAV Sample nodes (one edit per caption), and
TAV Save Tuned Weights keeps the tuning in models/tuneavideo/ (about 140 MB for SD1.5).
The lower group shows a later session: TAV Load Tuned Weights puts the saved tuning back on the
same checkpoint, so new edits need no tuning. Bypass (Ctrl+B) the nodes you do not need: e.g. the
upper group once the weights are saved, or the lower group on the first run before they exist.
""" + LIGHTER, size=(700, 330))],
        SOURCE_LINKS + PROMPT_LINKS[:2] + TUNE_LINKS + links + [
            ("tune", "tuned_weights", "save_weights", "tuned_weights"),
            ("ckpt", "MODEL", "load_tuned", "model"),
            *later_invert_links, *later_edit_links,
        ],
        groups=[{"title": "First session: tune, save and edit", "bounding": [1180, -60, 1900, 1240]},
                {"title": "Later: load the saved tuning and edit", "bounding": [780, 1260, 2300, 560]}],
    )


def controlled_edit_workflow() -> Workflow:
    invert, invert_links = invert_node(1600, 0)
    edit, edit_links = edit_nodes(2000, 260, positive=("control", "positive"), negative=("control", "negative"))
    stitch, stitch_links = side_by_side(2360, 560)
    return Workflow(
        "tuneavideo_controlled_edit",
        [*source_nodes(), *prompt_nodes(800, "a red Porsche car is moving on a mountain road"), *tune_nodes(1200),
         *invert,
         Node("controlnet", "ControlNetLoader", (1600, 420), {"control_net_name": CONTROLNET}),
         Node("control", "TAV_ControlCondition", (1600, 560), {
             "preprocessor": "canny", "strength": 1.0, "start_percent": 0.0, "end_percent": 1.0,
             "low_threshold": 100, "high_threshold": 200, "line_thickness": 3, "block_size": 64}),
         Node("hints", "PreviewImage", (1600, 1120), title="Hints (canny)"),
         *edit, *stitch,
         note("about", (0, -330), """
Controlled edit: as the plain edit, plus a ControlNet (or T2I-Adapter) that follows the source's
canny edges frame by frame, so shapes stay put while the caption changes the look.
Load a canny ControlNet for your checkpoint family (SD1.5 here). The hints preview shows what the
model is given; tune the thresholds if it shows too many or too few edges. Other preprocessors:
soft_edge, scribble, lineart, color (T2I color adapter), tile, or none for a ready hint video.
The inversion stays without control: it should describe the source, not the hints.
""" + LIGHTER, size=(700, 330))],
        SOURCE_LINKS + PROMPT_LINKS + TUNE_LINKS + invert_links + edit_links + stitch_links + [
            ("edit_prompt", "CONDITIONING", "control", "positive"),
            ("empty_prompt", "CONDITIONING", "control", "negative"),
            ("controlnet", "CONTROL_NET", "control", "control_net"),
            ("frames", "IMAGE", "control", "frames"),
            ("control", "hints", "hints", "images"),
        ],
    )


def style_edit_workflow() -> Workflow:
    invert, invert_links = invert_node(1600, 0)
    edit, edit_links = edit_nodes(2000, 260, model_from="lora", positive=("style_prompt", 0))
    stitch, stitch_links = side_by_side(2360, 560)
    return Workflow(
        "tuneavideo_style_edit",
        [*source_nodes(), *prompt_nodes(800, "")[:2], *tune_nodes(1200), *invert,
         Node("lora", "LoraLoader", (1600, 420), {"lora_name": STYLE_LORA, "strength_model": 0.8,
                                                  "strength_clip": 0.8}),
         Node("style_prompt", "CLIPTextEncode", (1600, 700), {"text": "a jeep car is moving on the road, in my style"},
              title="Edited caption (with the style's trigger words)"),
         *edit, *stitch,
         note("about", (0, -330), """
Personalised / style edit: a LoRA (or a DreamBooth-style checkpoint in Load Checkpoint) on top of
the tuned model. Tune on the base checkpoint as usual; the LoRA is applied after tuning, to both
the tuned video model and the text encoder, and the edited caption uses its trigger words.
Set the LoRA strengths to taste; 0.6-1.0 is typical. Inversion runs on the tuned model without
the LoRA, so the noise still describes the source clip.
""" + LIGHTER, size=(700, 330))],
        SOURCE_LINKS + PROMPT_LINKS[:2] + TUNE_LINKS + invert_links + edit_links + stitch_links + [
            ("tune", "MODEL", "lora", "model"),
            ("ckpt", "CLIP", "lora", "clip"),
            ("lora", "CLIP", "style_prompt", "clip"),
        ],
    )


def demo_workflow() -> Workflow:
    """The README's demo: the embedded toy model edits a bundled shapes-world clip, all on a CPU."""
    invert, invert_links = invert_node(1600, 0)
    invert[0].widgets["steps"] = DEMO_DDIM_STEPS
    edit, edit_links = edit_nodes(1600, 260, vae_from="demo", fps=8.0, prefix="tuneavideo/demo_edit")
    edit[0].widgets.update({"steps": DEMO_DDIM_STEPS, "cfg": DEMO_CFG})
    stitch, stitch_links = side_by_side(1960, 560, source_from=("components", "images"), fps=8.0,
                                        prefix="tuneavideo/demo_side_by_side")
    tune = tune_nodes(1200)
    tune[1].widgets.update({"steps": DEMO_TUNE_STEPS, "learning_rate": DEMO_LEARNING_RATE,
                            "gradient_checkpointing": "off", "caption": DEMO_SOURCE_CAPTION})
    return Workflow(
        "tuneavideo_demo_shapes",
        [Node("demo", "TAV_LoadDemoModel", (0, 0)),
         Node("video", "LoadVideo", (0, 200), {"file": DEMO_CLIP}),
         Node("components", "GetVideoComponents", (0, 620)),
         Node("encode", "VAEEncode", (360, 200)),
         Node("source_prompt", "CLIPTextEncode", (800, 0), {"text": DEMO_SOURCE_CAPTION}, title="Source caption"),
         Node("empty_prompt", "CLIPTextEncode", (800, 250), {"text": ""}, title="Empty prompt (inversion, negative)"),
         Node("edit_prompt", "CLIPTextEncode", (800, 500), {"text": DEMO_EDIT_CAPTION}, title="Edited caption"),
         *tune, *invert, *edit,
         Node("save_frames", "SaveImage", (2320, 260), {"filename_prefix": "tuneavideo/demo_frames"},
              title="Edited frames"),
         *stitch,
         note("about", (0, -330), f"""
Demo on the pack's own toy model (no downloads, runs on a CPU in about a minute): TAV Load Demo Model
is a tiny text-to-image model of a "shapes world" (one circle, square or triangle in red, green,
blue, yellow, purple or orange on a white, black, gray or blue background). The clip is
demo_model/clips/{DEMO_CLIP} of this pack: copy it into ComfyUI's input/ folder, or load another
clip of the same world (8 frames at 64x64).
It is tuned on its caption, inverted, and sampled again as "{DEMO_EDIT_CAPTION}": the object
should change as the caption says and keep the clip's motion.
The toy model wants low guidance (cfg {DEMO_CFG:g}) and a higher learning rate than the paper's 3e-5;
`bash scripts/demo.sh` runs this workflow headless and judges the result with OpenCV.
""", size=(700, 330))],
        [
            ("video", "VIDEO", "components", "video"),
            ("components", "images", "encode", "pixels"),
            ("demo", "VAE", "encode", "vae"),
            ("demo", "CLIP", "source_prompt", "clip"),
            ("demo", "CLIP", "empty_prompt", "clip"),
            ("demo", "CLIP", "edit_prompt", "clip"),
            ("demo", "MODEL", "inflate", "model"),
            *TUNE_LINKS[1:], *invert_links, *edit_links,
            ("decode", "IMAGE", "save_frames", "images"),
            *stitch_links,
        ],
    )


WORKFLOWS = [demo_workflow, edit_workflow, tune_once_edit_many_workflow, controlled_edit_workflow, style_edit_workflow]
