"""Count what autograd saves for backward in one UNet forward, per site layer: the input of the memory forecast."""

from collections.abc import Callable

import torch
from comfy.ldm.modules.attention import SpatialTransformer
from torch import nn
from torch.utils._pytree import tree_leaves

from ..tav_core.memory_forecast import SavedBytes


class _SavedCounter:
    """Bytes saved for backward, by the site layer running when they were saved; each storage counted once.

    Weights are resident whatever the scope, so a saved tensor that is a parameter (or a view of one), or that
    shares a layer's parameter or buffer storage, is left out; a cast copy of a weight is new memory and counts.
    """

    def __init__(self, layers: tuple[tuple[str, nn.Module], ...]) -> None:
        self.resident = {
            tensor.untyped_storage().data_ptr()
            for _, module in layers
            for tensor in (*module.parameters(), *module.buffers())
        }
        self.saved: dict[int, torch.UntypedStorage] = {}  # held until the count ends, so no address is reused
        self.inputs: dict[int, torch.UntypedStorage] = {}
        self.per_layer = [0] * len(layers)
        self.layer_inputs = [0] * len(layers)
        self.outside = 0
        self.running: int | None = None

    def is_resident(self, tensor: torch.Tensor) -> bool:
        base = tensor if tensor._base is None else tensor._base
        return isinstance(base, nn.Parameter) or tensor.untyped_storage().data_ptr() in self.resident

    def new_bytes(self, tensor: torch.Tensor, seen: dict[int, torch.UntypedStorage]) -> int:
        """The tensor's storage bytes the first time that storage shows up in `seen`, else 0."""
        storage = tensor.untyped_storage()
        if self.is_resident(tensor) or storage.data_ptr() in seen:
            return 0
        seen[storage.data_ptr()] = storage
        return storage.nbytes()

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        nbytes = self.new_bytes(tensor, self.saved)
        if self.running is None:
            self.outside += nbytes
        else:
            self.per_layer[self.running] += nbytes
        return tensor

    def enter(self, index: int, args: tuple, kwargs: dict) -> None:
        self.running = index
        tensors = [leaf for leaf in tree_leaves((args, kwargs)) if isinstance(leaf, torch.Tensor)]
        self.layer_inputs[index] += sum(self.new_bytes(tensor, self.inputs) for tensor in tensors)

    def leave(self) -> None:
        self.running = None


def probe_saved_bytes(
    run_forward: Callable[[int], None], layers: tuple[tuple[str, nn.Module], ...], frames: int
) -> SavedBytes:
    """What run_forward(frames), a grad-enabled eager UNet forward with no layer checkpointed, saves for backward.

    Site layers run one after another (none nests in another); a layer's inputs count where a storage is first
    an input (the text embedding and timestep embedding, which every layer takes, once). Saved tensors are
    handed back to autograd untouched, and every hook is removed afterwards.
    """
    counter = _SavedCounter(layers)
    handles = []
    try:
        for index, (_, module) in enumerate(layers):
            handles.append(module.register_forward_pre_hook(
                lambda module, args, kwargs, index=index: counter.enter(index, args, kwargs), with_kwargs=True
            ))
            handles.append(module.register_forward_hook(lambda module, args, output: counter.leave()))
        with torch.autograd.graph.saved_tensors_hooks(counter.pack, lambda tensor: tensor):
            run_forward(frames)
    finally:
        for handle in handles:
            handle.remove()
    if not counter.saved:
        raise ValueError("nothing was saved for backward: run_forward must run with grad and something trainable")
    return SavedBytes(
        frames=frames,
        per_layer=tuple(counter.per_layer),
        kinds=tuple(isinstance(module, SpatialTransformer) for _, module in layers),
        layer_inputs=tuple(counter.layer_inputs),
        outside=counter.outside,
    )
