"""Progress for long node work: ComfyUI's progress bar (whose hook also raises on Cancel) plus a text line."""

import comfy.model_management
import comfy.utils


class NodeProgress:
    def __init__(self, total: int) -> None:
        self.bar = comfy.utils.ProgressBar(total)
        self.node_id = _executing_node_id()

    def update(self, done: int, text: str | None = None, preview: tuple | None = None) -> None:
        """`preview`: a latent previewer's (format, image, max size), shown over the node as samplers' are."""
        self.bar.update_absolute(done, None, preview)
        if text and self.node_id is not None:
            _send_text(text, self.node_id)


def show_on_node(text: str) -> None:
    """A line of text under the node that is running now, in the user's frontend."""
    node_id = _executing_node_id()
    if node_id is not None:
        _send_text(text, node_id)


def check_cancel() -> None:
    """Raise ComfyUI's InterruptProcessingException if the user pressed Cancel."""
    comfy.model_management.throw_exception_if_processing_interrupted()


def _executing_node_id() -> str | None:
    try:
        from comfy_execution.utils import get_executing_context
    except ImportError:
        return None
    context = get_executing_context()
    return None if context is None else context.node_id


def _send_text(text: str, node_id: str) -> None:
    try:
        from server import PromptServer
    except ImportError:
        return
    instance = getattr(PromptServer, "instance", None)
    if instance is not None and hasattr(instance, "send_progress_text"):
        instance.send_progress_text(text, node_id)
