"""Preset policies per model family and card size, shipped as TOML files in presets/."""
import os

from .vvram_shim import preset_dir

FAMILIES = {
    "FLUX": "flux",
    "Qwen-Image": "qwen-image",
    "WAN 2.x": "wan",
    "HunyuanVideo": "hunyuanvideo",
    "SDXL": "sdxl",
}
CARDS = ["8 GB", "12 GB", "16 GB", "24 GB"]


def preset_path(family, card):
    """The preset file for a family and card size."""
    if family not in FAMILIES:
        raise ValueError(f"unknown model family `{family}`: expected one of {', '.join(FAMILIES)}")
    if card not in CARDS:
        raise ValueError(f"unknown card size `{card}`: expected one of {', '.join(CARDS)}")
    return os.path.join(preset_dir(), f"{FAMILIES[family]}-{card.split()[0]}gb.toml")


def preset_text(family, card):
    """The preset's TOML text."""
    with open(preset_path(family, card), encoding="utf-8") as f:
        return f.read()
