"""Tune-A-Video, the method itself: importable and testable without ComfyUI running."""
