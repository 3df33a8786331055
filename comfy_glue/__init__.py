"""Everything that touches ComfyUI's internals lives here; tav_core stays host-free and nodes stay thin."""
