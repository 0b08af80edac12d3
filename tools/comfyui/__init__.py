"""vvram for ComfyUI: nodes that set libvvram.so's policy per workflow and show where
memory lives. They move no tensors. Without the shim loaded, every node says how to start
ComfyUI under it, and ComfyUI keeps working."""
WEB_DIRECTORY = "./web"

try:
    from comfy_api.latest import ComfyExtension  # noqa: F401  (the current node API is there)
except ImportError:
    # Older ComfyUI, or no ComfyUI at all: the NODE_CLASS_MAPPINGS style.
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

    __all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
else:

    async def comfy_entrypoint():
        """ComfyUI's entry point for extensions on the current node API."""
        from .v3 import VvramExtension

        return VvramExtension()

    __all__ = ["comfy_entrypoint", "WEB_DIRECTORY"]
