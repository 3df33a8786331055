"""Errors a ComfyUI user sees: each names the node and the input so the fix is obvious."""


class TAVInputError(ValueError):
    """A workflow input the pack cannot use."""

    def __init__(self, node: str, input_name: str, problem: str, hint: str = "") -> None:
        message = f"{node}: input '{input_name}': {problem}"
        if hint:
            message += f" {hint}"
        super().__init__(message)
