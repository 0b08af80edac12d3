"""Runs before ComfyUI imports torch: says whether vvram is active in this process."""
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
try:
    import vvram_shim
finally:
    sys.path.pop(0)

log = logging.getLogger("vvram")
if vvram_shim.available():
    log.info("vvram %s is active in this ComfyUI process", vvram_shim.version())
    if "--disable-dynamic-vram" not in sys.argv:
        log.warning("vvram: start ComfyUI with --disable-dynamic-vram: its Dynamic VRAM (comfy-aimdo) patches the same CUDA calls vvram manages")
else:
    log.info(vvram_shim.NOT_LOADED)
