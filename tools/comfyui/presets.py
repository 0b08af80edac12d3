"""Preset policies per model family and card size, shipped as TOML files in presets/,
adapted to the machine they run on: the host RAM a preset asks for is its model's need,
and where that is more than 3/4 of this machine's RAM the node gives it that much instead
and says so."""
import os
import re

from .vvram_shim import preset_dir

FAMILIES = {
    "FLUX": "flux",
    "Qwen-Image": "qwen-image",
    "WAN 2.x": "wan",
    "HunyuanVideo": "hunyuanvideo",
    "SDXL": "sdxl",
}
AUTO_CARD = "this card (85%)"
CARDS = [AUTO_CARD, "8 GB", "12 GB", "16 GB", "24 GB"]
GIB = 1 << 30
# Pinned host memory is locked: leave a quarter of the RAM to the system and to ComfyUI's
# own copies of the weights while it loads them.
HOST_SHARE = 0.75

_HOST_DONOR = re.compile(r'^donors = \[\{ tier = "host", capacity = "(?P<gib>[0-9.]+)GiB" \}\]$', re.M)
_PIN_AHEAD = re.compile(r'^pin_ahead = "(?P<gib>[0-9.]+)GiB"$', re.M)


def preset_name(family, card):
    """The preset's name as errors and statistics show it, e.g. `preset flux-12gb`."""
    if family not in FAMILIES:
        raise ValueError(f"unknown model family `{family}`: expected one of {', '.join(FAMILIES)}")
    if card not in CARDS:
        raise ValueError(f"unknown card size `{card}`: expected one of {', '.join(CARDS)}")
    size = "auto" if card == AUTO_CARD else f"{card.split()[0]}gb"
    return f"preset {FAMILIES[family]}-{size}"


def preset_path(family, card):
    """The preset file for a family and card size."""
    return os.path.join(preset_dir(), preset_name(family, card).split()[1] + ".toml")


def preset_text(family, card):
    """The preset's TOML text, as shipped."""
    with open(preset_path(family, card), encoding="utf-8") as f:
        return f.read()


def host_ram():
    """This machine's RAM in bytes, as libvvram.so measures it."""
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _gib(n):
    return f"{n:g} GiB"


class Preset:
    """A preset fitted to a machine: `text` is the policy, `need` and `host` the host RAM
    (GiB) its model needs and the amount it gets here, `note` says what was changed."""

    def __init__(self, family, card, ram=None):
        self.name = preset_name(family, card)
        self.family, self.card = family, card
        text = preset_text(family, card)
        donor = _HOST_DONOR.search(text)
        if donor is None:
            raise ValueError(f"{preset_path(family, card)}: expected one line `donors = [{{ tier = \"host\", capacity = \"NGiB\" }}]`")
        self.need = float(donor["gib"])
        ram = host_ram() if ram is None else ram
        allowed = int(ram * HOST_SHARE / GIB * 2) / 2  # whole half-GiB
        self.host = min(self.need, allowed)
        self.note = ""
        if self.host < self.need:
            if self.host < 0.5:
                raise ValueError(f"{self.name} needs {_gib(self.need)} of host RAM; this machine has {ram / GIB:.1f} GiB in all")
            text = text[: donor.start("gib")] + f"{self.host:g}" + text[donor.end("gib") :]
            pin = _PIN_AHEAD.search(text)
            if pin and float(pin["gib"]) > self.host:
                text = text[: pin.start("gib")] + f"{self.host:g}" + text[pin.end("gib") :]
            self.note = (
                f"{self.name} asks for {_gib(self.need)} of host RAM; this machine's 3/4 is {_gib(self.host)} "
                f"(of {ram / GIB:.1f} GiB), so the card looks {_gib(self.need - self.host)} smaller to ComfyUI, "
                "which offloads what does not fit itself"
            )
        self.text = text

    def describe(self):
        """One line for the node's status."""
        card = "the card it runs on" if self.card == AUTO_CARD else f"a {self.card} card"
        line = f"vvram policy: {self.name} ({self.family} on {card}), {_gib(self.host)} of host RAM"
        return f"{line}. {self.note}" if self.note else f"{line}, all it needs"
