"""Runs before ComfyUI imports torch: says whether vvram is active in this process and,
when it is not, the exact command that starts this ComfyUI under it."""
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
try:
    import startup
    import vvram_shim
finally:
    sys.path.pop(0)

log = logging.getLogger("vvram")
if vvram_shim.available():
    log.info("vvram %s is active in this ComfyUI process", vvram_shim.version())
    if startup.accepts_dynamic_vram_flag() and startup.DYNAMIC_VRAM_FLAG not in sys.argv:
        log.warning(
            "vvram: this ComfyUI has Dynamic VRAM (comfy-aimdo), which patches the same CUDA calls vvram manages: "
            "restart it with %s:\n  %s",
            startup.DYNAMIC_VRAM_FLAG,
            startup.start_command(),
        )
else:
    # Logged here, once per process; the nodes show it on themselves without logging it.
    log.warning(startup.not_loaded_message())
