"""One prompt that both saves and loads the same tuned-weights file cannot be run safely: ComfyUI orders
nodes only by their links, so the load could read the file from before the save. Whichever of the two
runs first refuses the prompt, before any tuning."""

from pathlib import Path

from comfy_api.latest import io

from ..comfy_glue.model_folders import default_folder_path
from ..tav_core.errors import TAVInputError

SAVING_NODES = {"TAV_OneShotTune": "save_name", "TAV_SaveTunedWeights": "save_name"}
LOADING_NODES = {"TAV_LoadTunedWeights": "weights_name"}


def nodes_naming(prompt: dict, path: Path, file_inputs: dict[str, str]) -> list[str]:
    """The prompt's nodes (of the kinds in file_inputs) whose file-name widget names `path`."""
    found = []
    for node_id, node in prompt.items():
        input_name = file_inputs.get(node.get("class_type"))
        name = node.get("inputs", {}).get(input_name) if input_name else None
        if not isinstance(name, str) or not name.strip():
            continue  # linked, or no file
        try:
            if default_folder_path(name) == path:
                found.append(f"node {node_id} ({node['class_type']})")
        except ValueError:
            continue
    return found


def refuse_save_and_load_together(
    hidden: io.HiddenHolder | None, node: str, input_name: str, name: str, saving: bool
) -> None:
    """Raise if this prompt also loads (when saving) or saves (when loading) the file `name`."""
    prompt = getattr(hidden, "prompt", None)  # the whole prompt, when ComfyUI runs the node
    if not prompt or not name.strip():
        return
    path = default_folder_path(name)
    others = nodes_naming(prompt, path, LOADING_NODES if saving else SAVING_NODES)
    if others:
        raise TAVInputError(
            node, input_name,
            f"this prompt also {'loads' if saving else 'saves'} {path.name} ({', '.join(others)}), and ComfyUI "
            "does not order the two, so the load could read the file from before the save.",
            "Connect the tuned MODEL directly, or save in one prompt and load in a later one.",
        )
