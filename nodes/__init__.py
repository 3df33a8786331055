"""The pack's ComfyUI nodes (V3 schema); each module holds one node and stays thin."""

from .inflate_unet import InflateUNet

NODE_CLASSES = [InflateUNet]
