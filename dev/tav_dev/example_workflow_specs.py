"""The example workflows, described node by node; tools/build_example_workflows.py turns them into the
UI-format JSON the ComfyUI frontend saves (by building them in the real frontend).

Layout: stages read left to right, one group each (inputs, prompts, tune, invert, edit, compare); long wires run
in horizontal lanes through Reroute nodes (labelled with the type they carry) so that few of them cross and none
runs over a node. Positions are the top-left corners of node bodies (the title bar, 30 high, sits above)."""

from dataclasses import dataclass, field

from tav_dev.demo_gate import GATE_CFG

CHECKPOINT = "v1-5-pruned-emaonly.safetensors"
SOURCE_VIDEO = "source_clip.mp4"
CONTROLNET = "control_v11p_sd15_canny.pth"
STYLE_LORA = "style_lora.safetensors"
TUNED_WEIGHTS = "my_clip.safetensors"
MOTION_MODULE = "mm_sd_v15_v2.safetensors"
MOTION_LORA_NAME = "my_clip_motion"
SOURCE_CAPTION = "a jeep car is moving on the road"
DEMO_CLIP = "shapes_demo_arc.mp4"  # in demo_model/clips/
DEMO_SOURCE_CAPTION = "a red circle on a blue background"
DEMO_EDIT_CAPTION = "a red triangle on a blue background"
DEMO_TUNE_STEPS, DEMO_LEARNING_RATE, DEMO_DDIM_STEPS, DEMO_CFG = 300, 3e-4, 25, GATE_CFG
DEMO_MOTION_MODULE = "tav_shapes_world_motion.safetensors"  # the pack's demo_model/animatediff_models/
DEMO_MOTION_CLIP = "shapes_demo_bounce.mp4"
DEMO_MOTION_SOURCE_CAPTION = "a green square on a blue background"
DEMO_MOTION_EDIT_CAPTION = "a red circle on a white background"
MUTED = 2  # LiteGraph mode "never": the frontend leaves the node out of the prompt


@dataclass
class Node:
    key: str
    type: str
    pos: tuple[int, int]
    widgets: dict = field(default_factory=dict)
    title: str | None = None
    size: tuple[int, int] | None = None  # default: the frontend's computeSize()
    width: int | None = None  # at least this wide, as tall as the frontend computes
    mode: int = 0  # 0 always, 2 muted ("never"), 4 bypassed


@dataclass
class Workflow:
    name: str
    nodes: list[Node]
    links: list[tuple[str, str | int, str, str | int]]  # (from node, output name or index, to node, input name)
    groups: list[dict] = field(default_factory=list)  # {"title", "nodes": [keys] (fitted around them), "color"}


class Graph:
    """Nodes and links of one workflow; links can run through Reroute nodes."""

    def __init__(self):
        self.nodes: list[Node] = []
        self.links: list[tuple] = []
        self._fed: dict[str, tuple] = {}  # reroute -> the output it carries

    def add(self, *nodes: Node) -> None:
        self.nodes += nodes

    def reroute(self, key: str, pos: tuple[int, int]) -> None:
        self.add(Node(key, "Reroute", pos))

    def link(self, source: str, output: str | int, target: str, input: str | int, via: tuple[str, ...] = ()) -> None:
        """source.output -> target.input, through the reroutes `via` (in order; shared prefixes are linked once)."""
        origin = (source, output)
        for reroute in via:
            if reroute in self._fed:
                if self._fed[reroute] != origin:
                    raise ValueError(f"reroute {reroute} already carries {self._fed[reroute]}, not {origin}")
            else:
                self.links.append((*origin, reroute, 0))
                self._fed[reroute] = origin
            origin = (reroute, 0)
        self.links.append((*origin, target, input))

    def workflow(self, name: str, groups: list[dict]) -> Workflow:
        return Workflow(name, self.nodes, self.links, groups)


def note(key: str, pos: tuple[int, int], text: str, size: tuple[int, int] = (760, 300)) -> Node:
    return Node(key, "Note", pos, {"text": text.strip()}, size=size)


LIGHTER = """
Lighter settings to try things quickly: TAV Sample Frames count 8 and 256x256, One-Shot Tune
100-200 steps, DDIM Invert Video and TAV Sample 20 steps. The paper's settings (the defaults here)
are 24 frames at 512x512, 500 tuning steps and 50 DDIM steps; tuning then takes minutes on a
recent GPU and needs about 8 GB of VRAM with gradient checkpointing and bf16.
"""

# Columns (x of node bodies) and rows (y) shared by the workflows.
PROMPTS_X = 1260
INFLATE_X, TUNE_X, TUNE_OUT_X = 1700, 2080, 2390  # TUNE_OUT_X: loss curve, saved weights
INVERT_X, INVERT_Y = 2800, 540
EDIT_X, EDIT_Y = 3140, 660
COMPARE_Y = 1060
TOP_LANE_Y = 90  # the VAE runs above the prompts and the tuning to the decoders
BOTTOM_LANE_Y = 1080  # the source frames run below everything to the side-by-side
PROMPT_SIZE = (300, 110)
NOTE_POS = (0, -460)
SOURCE_PROMPT = ("source_prompt", "Source caption")
EMPTY_PROMPT = ("empty_prompt", "Empty prompt (inversion, negative)")
EDIT_PROMPT = ("edit_prompt", "Edited caption")


def add_inputs(g: Graph, demo: bool = False, clip_y: int = 400) -> None:
    """Checkpoint (or the demo model) above the clip -> frames -> latents row; VAE and CLIP leave through reroutes.

    The demo has no TAV Sample Frames: its clip is already 8 frames at 64x64."""
    if demo:
        g.add(Node("ckpt", "TAV_LoadDemoModel", (0, 0), width=260),
              Node("video", "LoadVideo", (0, 200), {"file": DEMO_CLIP}, size=(240, 330)),
              Node("components", "GetVideoComponents", (340, 200), width=220),
              Node("encode", "VAEEncode", (680, 200), width=160))
        g.reroute("r_vae", (560, TOP_LANE_Y))
        g.link("components", "images", "encode", "pixels")
    else:
        g.add(Node("ckpt", "CheckpointLoaderSimple", (0, 0), {"ckpt_name": CHECKPOINT}, width=260),
              Node("video", "LoadVideo", (0, 200), {"file": SOURCE_VIDEO}, size=(240, 330)),
              Node("components", "GetVideoComponents", (340, 200), width=200),
              Node("frames", "TAV_SampleFrames", (600, 200), {
                  "count": 24, "start": 0, "stride": 2, "width": 512, "height": 512, "resize": "crop"}, width=240),
              Node("encode", "VAEEncode", (920, 200), width=160))
        g.reroute("r_vae", (800, TOP_LANE_Y))
        g.link("components", "images", "frames", "images")
        g.link("frames", "IMAGE", "encode", "pixels")
    g.link("video", "VIDEO", "components", "video")
    g.link("ckpt", "VAE", "encode", "vae", via=("r_vae",))
    g.reroute("r_clip", (1050, 21))  # CLIP: along the top, then down beside the prompts
    g.reroute("r_clip_prompts", (1140, clip_y))


INPUTS_GROUP = ["ckpt", "video", "components", "frames", "encode"]


def add_prompts(g: Graph, prompts: list[tuple[str, str, str, int]]) -> None:
    """(key, title, text, y) text encoders in one column, fed from the CLIP reroute."""
    for key, title, text, y in prompts:
        g.add(Node(key, "CLIPTextEncode", (PROMPTS_X, y), {"text": text}, title=title, size=PROMPT_SIZE))
        g.link("ckpt", "CLIP", key, "clip", via=("r_clip", "r_clip_prompts"))


def add_tune(g: Graph, dx: int = 0, loss_y: int = 230, invert_y: int = INVERT_Y, **tune_widgets) -> None:
    """Inflate UNet -> One-Shot Tune (source latents and caption) -> loss curve; the tuned model leaves upwards."""
    g.add(Node("inflate", "TAV_InflateUNet", (INFLATE_X + dx, -100), {
              "attention": "sparse_causal", "temporal_layers": True, "temporal_position_encoding": "none",
              "groupnorm": "per_frame"}, width=260),
          Node("tune", "TAV_OneShotTune", (TUNE_X + dx, 180), {
              "steps": 500, "learning_rate": 3e-5, "seed": 33, "control_after_generate": "fixed",
              "gradient_checkpointing": "auto", "precision": "auto", "save_name": "",
              "caption": SOURCE_CAPTION, **tune_widgets}, width=240),
          Node("loss", "PreviewImage", (TUNE_OUT_X + dx, loss_y), title="Loss curve", size=(200, 120)))
    g.reroute("r_latent", (1620 + dx, 201))  # the source latents: into the tuning, and under it to the inversion
    g.reroute("r_latent_invert", (1980 + dx, invert_y - 30))
    g.reroute("r_model", (TUNE_OUT_X + 230 + dx, 140))  # the tuned model, over the loss curve
    g.link("ckpt", "MODEL", "inflate", "model")
    g.link("inflate", "MODEL", "tune", "model")
    g.link("encode", "LATENT", "tune", "latents", via=("r_latent",))
    g.link("source_prompt", "CONDITIONING", "tune", "conditioning")
    g.link("tune", "loss_curve", "loss", "images")


def add_invert(g: Graph, key: str = "invert", model: tuple[str, ...] = ("tune", "MODEL", "r_model"),
               pos: tuple[int, int] = (INVERT_X, INVERT_Y), steps: int = 50,
               latents_via: tuple[str, ...] = ("r_latent", "r_latent_invert")) -> None:
    """DDIM Invert Video of the source latents (brought under the tuning) with the empty prompt."""
    g.add(Node(key, "TAV_DDIMInvertVideo", pos, {"steps": steps, "inversion_strength": 1.0}, width=240))
    g.link(model[0], model[1], key, "model", via=model[2:])
    g.link("encode", "LATENT", key, "latents", via=latents_via)
    g.link("empty_prompt", "CONDITIONING", key, "conditioning")


def add_edit(g: Graph, x: int = EDIT_X, y: int = EDIT_Y, suffix: str = "", fps: float = 12.0,
             prefix: str = "tuneavideo/edit", model: tuple[str, ...] = ("tune", "MODEL", "r_model", "r_model_edit"),
             positive: tuple = (EDIT_PROMPT[0], "CONDITIONING"), negative: tuple = (EMPTY_PROMPT[0], "CONDITIONING"),
             latent: tuple = ("invert", "LATENT"), vae_via: tuple[str, ...] = ("r_vae", "r_vae_decode"),
             decode_gap: int = 60, **sample_widgets) -> list[str]:
    """TAV Sample -> VAE Decode -> Create Video -> Save Video in a row; returns their keys.

    model, positive, negative, latent: (node, output, reroutes on the way...)."""
    sample, decode, video, save = (f"{name}{suffix}" for name in ("sample", "decode", "make_video", "save"))
    g.add(Node(sample, "TAV_Sample", (x, y), {
              "steps": 50, "cfg": 12.5, "eta": 0.0, "seed": 0, "control_after_generate": "fixed", **sample_widgets},
              width=240),
          Node(decode, "VAEDecode", (x + 240 + decode_gap, y), width=160),
          Node(video, "CreateVideo", (x + 460 + decode_gap, y), {"fps": fps}, width=220),
          Node(save, "SaveVideo", (x + 740 + decode_gap, y),
               {"filename_prefix": f"{prefix}{suffix}", "format": "auto", "codec": "auto"}, width=240))
    g.link(model[0], model[1], sample, "model", via=model[2:])
    g.link(*positive[:2], sample, "positive", via=positive[2:])
    g.link(*negative[:2], sample, "negative", via=negative[2:])
    g.link(*latent[:2], sample, "latent", via=latent[2:])
    g.link(sample, "LATENT", decode, "samples")
    g.link("ckpt", "VAE", decode, "vae", via=vae_via)
    g.link(decode, "IMAGE", video, "images")
    g.link(video, "VIDEO", save, "video")
    return [sample, decode, video, save]


def add_compare(g: Graph, source: tuple[str, str], x: int = EDIT_X + 520, y: int = COMPARE_Y, fps: float = 12.0,
                prefix: str = "tuneavideo/side_by_side") -> None:
    """Source | edit side by side, below the edit; the source frames come along the bottom lane."""
    g.add(Node("stitch", "ImageStitch", (x, y), {"direction": "right", "match_image_size": True, "spacing_width": 0,
                                                 "spacing_color": "white"}, title="Source | edit", width=220),
          Node("stitch_video", "CreateVideo", (x + 280, y), {"fps": fps}, width=220),
          Node("stitch_save", "SaveVideo", (x + 560, y), {"filename_prefix": prefix, "format": "auto",
                                                          "codec": "auto"}, width=240))
    g.link(*source, "stitch", "image1", via=("r_source_frames",))
    g.link("decode", "IMAGE", "stitch", "image2")
    g.link("stitch", "IMAGE", "stitch_video", "images")
    g.link("stitch_video", "VIDEO", "stitch_save", "video")


COMPARE_GROUP = {"title": "Compare", "nodes": ["stitch", "stitch_video", "stitch_save"]}


def stage_groups(edit: list[str], tune: tuple[str, ...] = ("inflate", "tune", "loss"), inputs: list[str] = INPUTS_GROUP,
                 prompts: tuple[str, ...] = (SOURCE_PROMPT[0], EMPTY_PROMPT[0], EDIT_PROMPT[0])) -> list[dict]:
    return [
        {"title": "Inputs (checkpoint, video, frames)", "nodes": inputs},
        {"title": "Prompts", "nodes": list(prompts)},
        {"title": "Tune", "nodes": list(tune)},
        {"title": "Invert", "nodes": ["invert"]},
        {"title": "Edit / decode / save", "nodes": edit},
    ]


def add_invert_edit_compare(g: Graph) -> list[str]:
    """The plain edit's second half: inversion, one edit row and the side by side; returns the edit row's keys."""
    add_invert(g)
    g.reroute("r_model_edit", (EDIT_X - 200, 440))
    g.reroute("r_vae_decode", (EDIT_X + 180, TOP_LANE_Y))
    edit = add_edit(g)
    g.reroute("r_source_frames", (850, BOTTOM_LANE_Y))
    add_compare(g, ("frames", "IMAGE"))
    return edit


def edit_workflow() -> Workflow:
    g = Graph()
    add_inputs(g)
    add_prompts(g, [(*SOURCE_PROMPT, SOURCE_CAPTION, 330), (*EMPTY_PROMPT, "", 540),
                    (*EDIT_PROMPT, "a Porsche car is moving on the beach", 730)])
    add_tune(g)
    edit = add_invert_edit_compare(g)
    g.add(note("about", NOTE_POS, """
Tune-A-Video edit: one-shot tune the checkpoint on your clip, DDIM-invert the clip, then sample it
again with an edited caption. The result keeps the clip's motion and follows the new text.
1. Pick your checkpoint (SD1.x, SD2.x or SDXL) and your video in Load Video.
2. Write the source caption (what the clip shows) and the edited caption.
3. Queue. Outputs: the edit and a side-by-side video in output/tuneavideo/, and the loss curve.
TAV Sample Frames keeps 24 frames every 2nd frame at 512x512 (the paper). Invert with the empty
prompt, as the paper; cfg 12.5 is the paper's value, 7-10 is often nicer.
""" + LIGHTER))
    return g.workflow("tuneavideo_edit", [*stage_groups(edit), COMPARE_GROUP])


def demo_workflow() -> Workflow:
    """The README's demo: the embedded toy model edits a bundled shapes-world clip, all on a CPU."""
    g = Graph()
    add_inputs(g, demo=True)
    add_prompts(g, [(*SOURCE_PROMPT, DEMO_SOURCE_CAPTION, 330), (*EMPTY_PROMPT, "", 540),
                    (*EDIT_PROMPT, DEMO_EDIT_CAPTION, 730)])
    add_tune(g, steps=DEMO_TUNE_STEPS, learning_rate=DEMO_LEARNING_RATE, gradient_checkpointing="off",
             caption=DEMO_SOURCE_CAPTION)
    add_invert(g, steps=DEMO_DDIM_STEPS)
    g.reroute("r_model_edit", (EDIT_X - 200, 440))
    g.reroute("r_vae_decode", (EDIT_X + 180, TOP_LANE_Y))
    edit = add_edit(g, fps=8.0, prefix="tuneavideo/demo_edit", steps=DEMO_DDIM_STEPS, cfg=DEMO_CFG)
    g.add(Node("save_frames", "SaveImage", (EDIT_X + 520, EDIT_Y + 150), {"filename_prefix": "tuneavideo/demo_frames"},
               title="Edited frames", width=220))
    g.link("decode", "IMAGE", "save_frames", "images")
    g.reroute("r_source_frames", (540, BOTTOM_LANE_Y))
    add_compare(g, ("components", "images"), fps=8.0, prefix="tuneavideo/demo_side_by_side")
    g.add(note("about", NOTE_POS, f"""
Demo on the pack's own toy model (no downloads, runs on a CPU in about a minute): TAV Load Demo Model
is a tiny text-to-image model of a "shapes world" (one circle, square or triangle in red, green,
blue, yellow, purple or orange on a white, black, gray or blue background). The clip is
demo_model/clips/{DEMO_CLIP} of this pack: copy it into ComfyUI's input/ folder, or load another
clip of the same world (8 frames at 64x64).
It is tuned on its caption, inverted, and sampled again as "{DEMO_EDIT_CAPTION}": the object
should change as the caption says and keep the clip's motion.
The toy model wants low guidance (cfg {DEMO_CFG:g}) and a higher learning rate than the paper's 3e-5;
`bash scripts/demo.sh` runs this workflow headless and judges the result with OpenCV.
"""))
    groups = stage_groups([*edit, "save_frames"], inputs=["ckpt", "video", "components", "encode"])
    groups[0]["title"] = "Inputs (demo model, video)"
    return g.workflow("tuneavideo_demo_shapes", [*groups, COMPARE_GROUP])


TUNE_ONCE_EDITS = [("a", "a Porsche car is moving on the beach"), ("b", "a jeep car is moving on the snow"),
                   ("c", "a cartoon jeep car is moving on the road, comic style")]
SHIFT = 300  # the sessions sit further right than in the other workflows: the later session's inputs come down
LATER_Y = 1920  # between the prompts and the first session; the later session's row is below the first session's
DECODE_GAP = 220  # between TAV Sample and VAE Decode: room for the VAE fanning out to the rows


def tune_once_edit_many_workflow() -> Workflow:
    g = Graph()
    add_inputs(g, clip_y=720)
    edit_rows = [EDIT_Y + 300 * row for row in range(len(TUNE_ONCE_EDITS))]
    add_prompts(g, [(*SOURCE_PROMPT, SOURCE_CAPTION, 330), (*EMPTY_PROMPT, "", 540)] + [
        (f"edit_prompt_{name}", f"Edit {name.upper()}", caption, y + 70)
        for (name, caption), y in zip(TUNE_ONCE_EDITS, edit_rows, strict=True)])
    add_tune(g, dx=SHIFT, loss_y=400, invert_y=500)
    g.add(Node("save_weights", "TAV_SaveTunedWeights", (TUNE_OUT_X + SHIFT, 200),
               {"save_name": TUNED_WEIGHTS.removesuffix(".safetensors"), "precision": "fp16"}, width=200))
    g.link("tune", "tuned_weights", "save_weights", "tuned_weights")
    invert_x, edit_x = INVERT_X + SHIFT - 60, EDIT_X + SHIFT
    add_invert(g, pos=(invert_x, 500))
    # Near the rows, the tuned model, the negative prompt and the VAE fan out to every edit.
    g.reroute("r_model_edit", (edit_x - 200, 400))
    g.reroute("r_empty_edit", (invert_x - 220, 640))
    g.reroute("r_vae_decode", (edit_x + 180, TOP_LANE_Y))
    g.reroute("r_vae_rows", (edit_x + 290, EDIT_Y - 100))
    first = ["inflate", "tune", "loss", "save_weights", "invert"]
    for (name, _), y in zip(TUNE_ONCE_EDITS, edit_rows, strict=True):
        first += add_edit(g, x=edit_x, y=y, suffix=f"_{name}", decode_gap=DECODE_GAP,
                          positive=(f"edit_prompt_{name}", "CONDITIONING"),
                          negative=(EMPTY_PROMPT[0], "CONDITIONING", "r_empty_edit"),
                          vae_via=("r_vae", "r_vae_decode", "r_vae_rows"))
    # A later session loads the saved weights instead of tuning again (muted until the weights exist). Its inputs
    # come down on the left: the checkpoint's model and VAE beside the clip, latents and prompts beside the prompts.
    g.reroute("r_model_later", (280, 700))
    g.reroute("r_vae_later", (300, 760))
    g.reroute("r_model_later_band", (1100, LATER_Y - 207))
    g.reroute("r_vae_later_band", (1100, LATER_Y + 260))
    g.reroute("r_vae_later_decode", (edit_x + 250, LATER_Y + 260))
    for key, pos in [("r_latent_later", (1910, 700)), ("r_latent_later_2", (1910, 1200)),
                     ("r_latent_later_band", (2060, LATER_Y + 7)), ("r_empty_later", (1820, 1300)),
                     ("r_empty_later_band", (1700, LATER_Y + 60)), ("r_edit_later", (1640, LATER_Y + 120))]:
        g.reroute(key, pos)
    g.add(Node("load_tuned", "TAV_LoadTunedWeights", (INFLATE_X + SHIFT + 160, LATER_Y - 220),
               {"weights_name": TUNED_WEIGHTS, "allow_mismatch": False}, width=260))
    g.link("ckpt", "MODEL", "load_tuned", "model", via=("r_model_later", "r_model_later_band"))
    g.reroute("r_load_tuned", (TUNE_OUT_X + SHIFT, LATER_Y - 233))
    g.reroute("r_load_tuned_edit", (edit_x - 260, LATER_Y - 180))
    g.add(Node("invert_later", "TAV_DDIMInvertVideo", (invert_x, LATER_Y - 100),
               {"steps": 50, "inversion_strength": 1.0}, width=240))
    g.link("load_tuned", "model", "invert_later", "model", via=("r_load_tuned",))
    g.link("encode", "LATENT", "invert_later", "latents",
           via=("r_latent", "r_latent_later", "r_latent_later_2", "r_latent_later_band"))
    g.link(EMPTY_PROMPT[0], "CONDITIONING", "invert_later", "conditioning", via=("r_empty_later", "r_empty_later_band"))
    later = ["load_tuned", "invert_later"] + add_edit(
        g, x=edit_x, y=LATER_Y, suffix="_later", model=("load_tuned", "model", "r_load_tuned", "r_load_tuned_edit"),
        decode_gap=DECODE_GAP, positive=("edit_prompt_a", "CONDITIONING", "r_edit_later"),
        negative=(EMPTY_PROMPT[0], "CONDITIONING", "r_empty_later", "r_empty_later_band"),
        latent=("invert_later", "LATENT"), vae_via=("r_vae_later", "r_vae_later_band", "r_vae_later_decode"))
    for node in g.nodes:
        if node.key in later:
            node.mode = MUTED
    g.add(note("about", NOTE_POS, """
Tune once, edit many: the tuned model feeds several TAV Sample nodes (one edit per caption), and
TAV Save Tuned Weights keeps the tuning in models/tuneavideo/ (about 140 MB for SD1.5).
The first run tunes, saves and edits (the upper group); the lower group, a later session, is muted.
Next time, mute the first-session group and unmute the later one (select a group's nodes and press
Ctrl+M, or right-click the group: Set Group Nodes to Never / Always): TAV Load Tuned Weights then
puts the saved tuning back on the same checkpoint, so new edits need no tuning.
""" + LIGHTER))
    prompts = [SOURCE_PROMPT[0], EMPTY_PROMPT[0]] + [f"edit_prompt_{name}" for name, _ in TUNE_ONCE_EDITS]
    return g.workflow("tuneavideo_tune_once_edit_many", [
        {"title": "Inputs (checkpoint, video, frames)", "nodes": INPUTS_GROUP},
        {"title": "Prompts", "nodes": prompts},
        {"title": "First session: tune, save and edit", "nodes": first},
        {"title": "Later session: load the saved tuning and edit (starts muted)", "nodes": later},
    ])


def controlled_edit_workflow() -> Workflow:
    g = Graph()
    add_inputs(g)
    add_prompts(g, [(*SOURCE_PROMPT, SOURCE_CAPTION, 330), (*EMPTY_PROMPT, "", 540),
                    (*EDIT_PROMPT, "a red Porsche car is moving on a mountain road", 730)])
    add_tune(g)
    add_invert(g)
    control_x, edit_x = EDIT_X + 300, EDIT_X + 920
    g.add(Node("controlnet", "ControlNetLoader", (EDIT_X, 800), {"control_net_name": CONTROLNET}, width=240),
          Node("control", "TAV_ControlCondition", (control_x, 680), {
              "preprocessor": "canny", "strength": 1.0, "start_percent": 0.0, "end_percent": 1.0,
              "low_threshold": 100, "high_threshold": 200, "line_thickness": 3, "block_size": 64}, width=260),
          Node("hints", "PreviewImage", (control_x + 320, 820), title="Hints (canny)", size=(200, 160)))
    g.reroute("r_source_frames", (850, BOTTOM_LANE_Y))
    g.link(EDIT_PROMPT[0], "CONDITIONING", "control", "positive")
    g.link(EMPTY_PROMPT[0], "CONDITIONING", "control", "negative")
    g.link("controlnet", "CONTROL_NET", "control", "control_net")
    g.link("frames", "IMAGE", "control", "frames", via=("r_source_frames",))
    g.link("control", "hints", "hints", "images")
    g.reroute("r_model_edit", (edit_x - 200, 440))
    g.reroute("r_vae_decode", (edit_x + 180, TOP_LANE_Y))
    g.reroute("r_inverted", (control_x + 60, INVERT_Y + 1))  # the inverted latents, over the ControlNet
    edit = add_edit(g, x=edit_x, positive=("control", "positive"), negative=("control", "negative"),
                    latent=("invert", "LATENT", "r_inverted"))
    add_compare(g, ("frames", "IMAGE"), x=edit_x + 520)
    g.add(note("about", NOTE_POS, """
Controlled edit: as the plain edit, plus a ControlNet (or T2I-Adapter) that follows the source's
canny edges frame by frame, so shapes stay put while the caption changes the look.
Load a canny ControlNet for your checkpoint family (SD1.5 here). The hints preview shows what the
model is given; tune the thresholds if it shows too many or too few edges. Other preprocessors:
soft_edge, scribble, lineart, color (T2I color adapter), tile, or none for a ready hint video.
The inversion stays without control: it should describe the source, not the hints.
""" + LIGHTER))
    groups = stage_groups(edit)
    groups.insert(4, {"title": "ControlNet", "nodes": ["controlnet", "control", "hints"]})
    return g.workflow("tuneavideo_controlled_edit", [*groups, COMPARE_GROUP])


def style_edit_workflow() -> Workflow:
    g = Graph()
    add_inputs(g)
    add_prompts(g, [(*SOURCE_PROMPT, SOURCE_CAPTION, 330), (*EMPTY_PROMPT, "", 540)])
    add_tune(g)
    add_invert(g)
    lora_x, edit_x = EDIT_X, EDIT_X + 780
    g.add(Node("lora", "LoraLoader", (lora_x, 260), {"lora_name": STYLE_LORA, "strength_model": 0.8,
                                                    "strength_clip": 0.8}, width=240),
          Node("style_prompt", "CLIPTextEncode", (lora_x + 300, 420),
               {"text": "a jeep car is moving on the road, in my style"},
               title="Edited caption (with the style's trigger words)", size=(400, 110)))
    g.reroute("r_clip_style", (lora_x - 300, 47))  # the checkpoint's CLIP along the top, to the LoRA
    g.link("tune", "MODEL", "lora", "model", via=("r_model",))
    g.link("ckpt", "CLIP", "lora", "clip", via=("r_clip", "r_clip_style"))
    g.link("lora", "CLIP", "style_prompt", "clip")
    g.reroute("r_model_edit", (edit_x - 110, 260))
    g.reroute("r_empty_edit", (INVERT_X + 300, 700))  # under the inversion
    g.reroute("r_vae_decode", (edit_x + 180, TOP_LANE_Y))
    edit = add_edit(g, x=edit_x, model=("lora", "MODEL", "r_model_edit"), positive=("style_prompt", "CONDITIONING"),
                    negative=(EMPTY_PROMPT[0], "CONDITIONING", "r_empty_edit"))
    g.reroute("r_source_frames", (850, BOTTOM_LANE_Y))
    add_compare(g, ("frames", "IMAGE"), x=edit_x + 520)
    g.add(note("about", NOTE_POS, """
Personalised / style edit: a LoRA (or a DreamBooth-style checkpoint in Load Checkpoint) on top of
the tuned model. Tune on the base checkpoint as usual; the LoRA is applied after tuning, to both
the tuned video model and the text encoder, and the edited caption uses its trigger words.
Set the LoRA strengths to taste; 0.6-1.0 is typical. Inversion runs on the tuned model without
the LoRA, so the noise still describes the source clip.
""" + LIGHTER))
    groups = stage_groups(edit, prompts=(SOURCE_PROMPT[0], EMPTY_PROMPT[0]))
    groups.insert(4, {"title": "Style (LoRA)", "nodes": ["lora", "style_prompt"]})
    return g.workflow("tuneavideo_style_edit", [*groups, COMPARE_GROUP])


def motion_module_edit_workflow() -> Workflow:
    """AnimateDiff's motion prior, tuned to the clip the MotionDirector way (a motion LoRA), then the usual edit."""
    g = Graph()
    add_inputs(g)
    next(node for node in g.nodes if node.key == "frames").widgets["count"] = 16
    add_prompts(g, [(*SOURCE_PROMPT, SOURCE_CAPTION, 330), (*EMPTY_PROMPT, "", 540),
                    (*EDIT_PROMPT, "a Porsche car is moving on the beach", 730)])
    add_tune(g, loss_y=400, steps=300, learning_rate=1e-4, motion_training="lora", motion_rank=32)
    inflate = next(node for node in g.nodes if node.key == "inflate")
    inflate.widgets.update({"attention": "per_frame", "temporal_layers": False})
    g.add(Node("motion", "TAV_LoadMotionModule", (PROMPTS_X, -140),
               {"motion_module": MOTION_MODULE, "motion_lora": "none", "lora_strength": 1.0}, width=320),
          Node("save_motion_lora", "TAV_SaveTunedWeights", (TUNE_OUT_X, 200), {
              "save_name": MOTION_LORA_NAME, "precision": "fp16", "format": "animatediff_motion_lora"}, width=240))
    g.link("motion", "motion_module", "inflate", "motion_module")
    g.link("tune", "tuned_weights", "save_motion_lora", "tuned_weights")
    edit = add_invert_edit_compare(g)
    g.add(note("about", NOTE_POS, f"""
Motion-module edit: AnimateDiff's motion module (trained on millions of clips) inside the video
model, one-shot tuned to your clip as a motion LoRA (MotionDirector's way), then inverted and edited.
1. Download an AnimateDiff SD1.5 motion module, e.g. {MOTION_MODULE} (v2) or v3_sd15_mm.ckpt,
   into ComfyUI/models/animatediff_models/ (the folder AnimateDiff-Evolved uses; .ckpt files are
   read with torch's weights-only loader). Pick your SD1.5 checkpoint and your video.
2. Inflate UNet runs it as AnimateDiff does (attention per_frame, no temporal layers, per-frame
   GroupNorm; use per_video for v1 modules). Turn sparse_causal and temporal_layers on for a hybrid.
3. Queue: the tuned motion LoRA lands in models/animatediff_motion_lora/{MOTION_LORA_NAME}.safetensors,
   in AnimateDiff's layout (TAV Load Motion Module and AnimateDiff-Evolved read it), and the edit in
   output/tuneavideo/. Modules have a 32-frame table (v1: 24): keep count at or below it.
16 frames at 512x512 and 300 steps: a LoRA learns faster than the paper's to_q tuning (lr 1e-4).
"""))
    groups = stage_groups(edit, tune=("inflate", "tune", "loss", "save_motion_lora"))
    groups.insert(2, {"title": "Motion module", "nodes": ["motion"]})
    return g.workflow("tuneavideo_motion_module_edit", [*groups, COMPARE_GROUP])


def demo_motion_transfer_workflow() -> Workflow:
    """The second demo: the demo motion module, tuned to a bundled clip as a motion LoRA, then text-to-video from
    fresh noise with another caption: the clip's motion on another object (the paper's one-shot claim)."""
    g = Graph()
    add_inputs(g, demo=True)
    next(node for node in g.nodes if node.key == "video").widgets["file"] = DEMO_MOTION_CLIP
    add_prompts(g, [(*SOURCE_PROMPT, DEMO_MOTION_SOURCE_CAPTION, 330), (*EMPTY_PROMPT, "", 540),
                    (*EDIT_PROMPT, DEMO_MOTION_EDIT_CAPTION, 730)])
    add_tune(g, steps=DEMO_TUNE_STEPS, learning_rate=DEMO_LEARNING_RATE, gradient_checkpointing="off",
             caption=DEMO_MOTION_SOURCE_CAPTION, motion_training="lora", motion_rank=32, fresh_noise_share=1.0)
    inflate = next(node for node in g.nodes if node.key == "inflate")
    inflate.widgets.update({"attention": "per_frame", "temporal_layers": False})
    g.add(Node("motion", "TAV_LoadMotionModule", (PROMPTS_X, -140),
               {"motion_module": DEMO_MOTION_MODULE, "motion_lora": "none", "lora_strength": 1.0}, width=320),
          Node("fresh", "EmptyLatentImage", (INVERT_X, INVERT_Y), {"width": 64, "height": 64, "batch_size": 8},
               title="Fresh noise (8 frames)", width=240))
    g.link("motion", "motion_module", "inflate", "motion_module")
    g.reroute("r_model_edit", (EDIT_X - 200, 440))
    g.reroute("r_vae_decode", (EDIT_X + 180, TOP_LANE_Y))
    edit = add_edit(g, fps=8.0, prefix="tuneavideo/demo_motion", steps=DEMO_DDIM_STEPS, cfg=DEMO_CFG,
                    latent=("fresh", "LATENT"))
    g.add(Node("save_frames", "SaveImage", (EDIT_X + 520, EDIT_Y + 150),
               {"filename_prefix": "tuneavideo/demo_motion_frames"}, title="Generated frames", width=220))
    g.link("decode", "IMAGE", "save_frames", "images")
    g.reroute("r_source_frames", (540, BOTTOM_LANE_Y))
    add_compare(g, ("components", "images"), fps=8.0, prefix="tuneavideo/demo_motion_side_by_side")
    g.add(note("about", NOTE_POS, f"""
Motion-transfer demo on the pack's own toy models (no downloads, a CPU is enough): the demo motion
module {DEMO_MOTION_MODULE} (trained by tools/train_demo_motion.py on clips of the shapes world, listed
by TAV Load Motion Module from the pack's own demo_model/animatediff_models/) runs in the demo model as
AnimateDiff runs a module (attention per_frame, no temporal layers). One-Shot Tune tunes it to the
bundled clip demo_model/clips/{DEMO_MOTION_CLIP} ("{DEMO_MOTION_SOURCE_CAPTION}", bouncing) as a motion
LoRA, every step fitted from noise alone at the top of the schedule (fresh_noise_share 1), as
text-to-video starts; TAV Sample then draws "{DEMO_MOTION_EDIT_CAPTION}" from fresh noise, with no
inversion: the new object should move as the clip's did. `bash scripts/demo.sh --workflow motion` runs it headless
and judges the frames with OpenCV (right object, consistency, the centred path against the clip's).
"""))
    groups = stage_groups([*edit, "save_frames"], tune=("inflate", "tune", "loss"),
                          inputs=["ckpt", "video", "components", "encode"])
    groups[0]["title"] = "Inputs (demo model, video)"
    groups[3] = {"title": "Fresh noise", "nodes": ["fresh"]}
    groups.insert(2, {"title": "Motion module", "nodes": ["motion"]})
    return g.workflow("tuneavideo_demo_motion_transfer", [*groups, COMPARE_GROUP])


INTERPOLATE_KEYFRAMES = 12  # every 2nd frame of a 24 fps clip: 12 fps, interpolated to 23 frames at 24 fps


def interpolate_workflow() -> Workflow:
    """Make-A-Video's frame interpolation with the clip's own tuned model: tune on the keyframes, then generate
    one new frame between each neighbouring pair (twice the frame rate) and save the MP4."""
    g = Graph()
    add_inputs(g)
    frames = next(node for node in g.nodes if node.key == "frames")
    frames.widgets["count"] = INTERPOLATE_KEYFRAMES
    add_prompts(g, [(*SOURCE_PROMPT, SOURCE_CAPTION, 330), (*EMPTY_PROMPT, "", 540)])
    add_tune(g, invert_y=700)  # the latents' lane runs under the tuning, beside the prompts' lanes
    g.reroute("r_source_interpolate", (1980, 770))
    g.reroute("r_empty_interpolate", (1980, 810))
    g.add(Node("interpolate", "TAV_InterpolateFrames", (INVERT_X, INVERT_Y - 60), {
              "factor": 1, "mode": "interpolate", "steps": 50, "cfg": 7.5, "seed": 0,
              "control_after_generate": "fixed", "resample": 0, "inversion_strength": 1.0}, width=260),
          Node("decode", "VAEDecode", (INVERT_X + 320, INVERT_Y - 60), width=160),
          Node("make_video", "CreateVideo", (INVERT_X + 540, INVERT_Y - 60), {"fps": 24.0}, width=220),
          Node("save", "SaveVideo", (INVERT_X + 820, INVERT_Y - 60),
               {"filename_prefix": "tuneavideo/interpolated", "format": "auto", "codec": "auto"}, width=240),
          Node("source_video", "CreateVideo", (INVERT_X + 540, INVERT_Y + 380), {"fps": 12.0},
               title="Keyframes (12 fps)", width=220),
          Node("source_save", "SaveVideo", (INVERT_X + 820, INVERT_Y + 380),
               {"filename_prefix": "tuneavideo/keyframes", "format": "auto", "codec": "auto"}, width=240))
    g.reroute("r_vae_decode", (INVERT_X + 280, TOP_LANE_Y))
    g.reroute("r_source_frames", (850, BOTTOM_LANE_Y))
    g.link("tune", "MODEL", "interpolate", "model", via=("r_model",))
    g.link("encode", "LATENT", "interpolate", "keyframes", via=("r_latent", "r_latent_invert"))
    g.link(SOURCE_PROMPT[0], "CONDITIONING", "interpolate", "positive", via=("r_source_interpolate",))
    g.link(EMPTY_PROMPT[0], "CONDITIONING", "interpolate", "negative", via=("r_empty_interpolate",))
    g.link("interpolate", "LATENT", "decode", "samples")
    g.link("ckpt", "VAE", "decode", "vae", via=("r_vae", "r_vae_decode"))
    g.link("decode", "IMAGE", "make_video", "images")
    g.link("make_video", "VIDEO", "save", "video")
    g.link("frames", "IMAGE", "source_video", "images", via=("r_source_frames",))
    g.link("source_video", "VIDEO", "source_save", "video")
    g.add(note("about", NOTE_POS, f"""
Frame interpolation (Make-A-Video's idea, with your clip's own tuned model): One-Shot Tune learns the
clip from its keyframes, then TAV Interpolate Frames generates a new frame between each neighbouring
pair while holding the keyframes on their own DDIM-inversion path, so they come out unchanged.
1. Pick your checkpoint and video; TAV Sample Frames keeps {INTERPOLATE_KEYFRAMES} keyframes, every 2nd frame.
2. Write the source caption (what the clip shows): the tuning and the new frames both use it.
3. Queue: output/tuneavideo/interpolated is {2 * INTERPOLATE_KEYFRAMES - 1} frames at 24 fps (factor 1 doubles the
   frame rate; factor 2-4 puts more frames in each gap, mode extend adds frames after the last one),
   output/tuneavideo/keyframes the {INTERPOLATE_KEYFRAMES} keyframes at 12 fps to compare.
Inflate UNet's temporal_conv pseudo3d adds Make-A-Video's temporal convolutions to the tuning.
resample > 0 (RePaint's jump-backs) can help where neighbouring keyframes differ much.
""" + LIGHTER))
    groups = stage_groups([], prompts=(SOURCE_PROMPT[0], EMPTY_PROMPT[0]))
    groups[3] = {"title": "Interpolate / decode / save", "nodes": ["interpolate", "decode", "make_video", "save"]}
    groups[4] = {"title": "Keyframes", "nodes": ["source_video", "source_save"]}
    return g.workflow("tuneavideo_interpolate_frames", groups)


WORKFLOWS = [demo_workflow, edit_workflow, tune_once_edit_many_workflow, controlled_edit_workflow, style_edit_workflow,
             motion_module_edit_workflow, demo_motion_transfer_workflow, interpolate_workflow]
