"""The vvram nodes. They only set policy and read statistics; libvvram.so does the work.
Each takes an optional passthrough input of any type and returns it unchanged, so it
can be wired in front of a loader and therefore runs before it."""
import logging

from . import vvram_shim
from .presets import CARDS, FAMILIES, preset_text

CATEGORY = "vvram"
log = logging.getLogger("vvram")


class AnyType(str):
    """ComfyUI's wildcard socket type: compares equal to every type."""

    def __ne__(self, other):
        return False

    def __eq__(self, other):
        return True

    def __hash__(self):
        return hash("*")


ANY = AnyType("*")
PASSTHROUGH = {"passthrough": (ANY, {"tooltip": "Anything: returned unchanged, to order this node before a loader."})}


def _apply(action):
    """Runs a control API call; without the shim, says so instead (ComfyUI keeps working)."""
    if not vvram_shim.available():
        log.warning(vvram_shim.NOT_LOADED)
        return vvram_shim.NOT_LOADED
    return action()


class _SettingNode:
    """Base of the nodes that change a setting of the shim: passthrough in, passthrough and
    a status line out. Subclasses declare INPUT_TYPES and `install(**inputs) -> status`."""

    RETURN_TYPES = (ANY, "STRING")
    RETURN_NAMES = ("passthrough", "status")
    FUNCTION = "apply"
    CATEGORY = CATEGORY

    def apply(self, passthrough=None, **inputs):
        return (passthrough, _apply(lambda: self.install(**inputs)))


class PolicyPreset(_SettingNode):
    """vvram Policy (preset): a tested policy for a model family and card size."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {"family": (list(FAMILIES),), "card": (CARDS, {"default": "24 GB"})},
            "optional": dict(PASSTHROUGH),
        }

    def install(self, family, card):
        vvram_shim.set_policy_toml(preset_text(family, card))
        return f"vvram policy: {family} on a {card} card"


class PolicyToml(_SettingNode):
    """vvram Policy (TOML): any policy, validated by the shim."""

    DEFAULT = '[[device]]\nindex = 0\nlocal_budget = "20GiB"\ndonors = [{ tier = "host", capacity = "32GiB" }]\n'

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"toml": ("STRING", {"multiline": True, "default": cls.DEFAULT})}, "optional": dict(PASSTHROUGH)}

    def install(self, toml):
        vvram_shim.set_policy_toml(toml)
        return "vvram policy: set from TOML"


class Allocation(_SettingNode):
    """vvram Allocation: a DisTorch2 allocation string, as in ComfyUI-MultiGPU."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "allocation": ("STRING", {"default": "cuda:0,20gb;cpu,*"}),
                "compute_device": ("INT", {"default": 0, "min": 0, "max": 63}),
            },
            "optional": dict(PASSTHROUGH),
        }

    def install(self, allocation, compute_device):
        vvram_shim.set_alloc(allocation, compute_device)
        return f"vvram allocation: {allocation} (compute device cuda:{compute_device})"


class Phase(_SettingNode):
    """vvram Phase: the phase name placement rules match on (empty clears it)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"phase": ("STRING", {"default": "load"})}, "optional": dict(PASSTHROUGH)}

    def install(self, phase):
        vvram_shim.set_phase(phase.strip())
        return f"vvram phase: {phase.strip() or 'none'}"


def _size(n):
    for unit, name in ((1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if n >= unit:
            return f"{n / unit:.2f} {name}"
    return f"{n} B"


def render_table(stats):
    """The statistics as a readable table."""
    lines = [f"vvram {stats['version']} — policy {stats.get('policy') or 'none'}, phase {stats.get('phase') or 'none'}"]
    for device in stats["devices"]:
        lines.append(f"device {device['device']}: the application sees {_size(device['reported_total'])}, {device['allocations']} live allocations")
        for tier in device["tiers"]:
            share = 100.0 * tier["used"] / tier["capacity"] if tier["capacity"] else 0.0
            lines.append(f"  {tier['tier']:<8} {_size(tier['used']):>12} of {_size(tier['capacity']):>12}  {share:5.1f}%")
    lines.append(
        f"allocations {stats['allocations']}, freed {stats['frees']}, out of memory {stats['out_of_memory']}, "
        f"CPU-copied to host tier {_size(stats['fast_h2d_bytes'])}, host pool {_size(stats['host_pool_bytes'])}, errors {stats['errors']}"
    )
    return "\n".join(lines)


def render_chart(stats, width=512, bar_height=28):
    """A bar per tier (used over budget) as an RGB image array, H x W x 3 floats in [0, 1]."""
    import numpy as np

    tiers = [(d["device"], t) for d in stats["devices"] for t in d["tiers"]]
    height = max(1, len(tiers)) * (bar_height + 8) + 8
    image = np.ones((height, width, 3), dtype=np.float32) * 0.12
    colours = {"local": (0.30, 0.75, 0.35), "host": (0.35, 0.55, 0.90)}
    for row, (_, tier) in enumerate(tiers):
        top = 8 + row * (bar_height + 8)
        image[top : top + bar_height, 8 : width - 8] = 0.25
        used = tier["used"] / tier["capacity"] if tier["capacity"] else 0.0
        filled = int((width - 16) * min(1.0, used))
        image[top : top + bar_height, 8 : 8 + filled] = colours.get(tier["tier"], (0.85, 0.60, 0.25))
    return image


class Stats:
    """vvram Stats: what lives where, bytes moved, errors; as text and as a bar chart."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}, "optional": dict(PASSTHROUGH)}

    RETURN_TYPES = (ANY, "STRING", "IMAGE")
    RETURN_NAMES = ("passthrough", "table", "chart")
    FUNCTION = "show"
    CATEGORY = CATEGORY
    OUTPUT_NODE = True

    @classmethod
    def IS_CHANGED(cls, **_):
        return float("nan")

    def show(self, passthrough=None):
        if not vvram_shim.available():
            stats = {"version": "-", "devices": [], "allocations": 0, "frees": 0, "out_of_memory": 0, "fast_h2d_bytes": 0, "host_pool_bytes": 0, "errors": 0}
            table = vvram_shim.NOT_LOADED
        else:
            stats = vvram_shim.stats()
            table = render_table(stats)
        chart = render_chart(stats)
        try:
            import torch

            chart = torch.from_numpy(chart)[None]
        except ImportError:
            chart = chart[None]
        return {"ui": {"text": [table]}, "result": (passthrough, table, chart)}


NODE_CLASS_MAPPINGS = {
    "VvramPolicyPreset": PolicyPreset,
    "VvramPolicyToml": PolicyToml,
    "VvramAllocation": Allocation,
    "VvramPhase": Phase,
    "VvramStats": Stats,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "VvramPolicyPreset": "vvram Policy (preset)",
    "VvramPolicyToml": "vvram Policy (TOML)",
    "VvramAllocation": "vvram Allocation",
    "VvramPhase": "vvram Phase",
    "VvramStats": "vvram Stats",
}
