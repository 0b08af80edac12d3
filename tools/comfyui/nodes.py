"""The vvram nodes (ComfyUI's V1 node API; v3.py declares the same nodes on the current
API). They only set policy and read statistics; libvvram.so does the work.

Each takes an optional passthrough input of any type and returns it unchanged, so it can
be wired in front of a loader and therefore runs before it. The nodes that change a setting
of the shim run on every prompt (their fingerprint is never equal to the last one): a
setting is global state, and a cached node would leave whatever the previous prompt set in
force. Everything wired after them therefore runs again too."""
import logging
import os
import tempfile
import uuid

from . import report, startup, vvram_shim
from .presets import AUTO_CARD, CARDS, FAMILIES, Preset

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
PASSTHROUGH_TOOLTIP = (
    "Anything (a file name, a model, a latent): returned unchanged. Wire it in front of a loader, "
    "e.g. the checkpoint name into the loader's ckpt_name, so this node runs first."
)
PHASES = ["load", "sampling", "none"]


class Field:
    """One input, declared once for both node APIs."""

    def __init__(self, name, kind, tooltip, default=None, options=None, optional=False, **extra):
        self.name, self.kind, self.tooltip, self.default = name, kind, tooltip, default
        self.options, self.optional, self.extra = options, optional, extra

    def v1(self):
        """The V1 `INPUT_TYPES` entry."""
        settings = {"tooltip": self.tooltip, **self.extra}
        if self.default is not None:
            settings["default"] = self.default
        if self.kind == "COMBO":
            return (list(self.options), settings)
        return (self.kind, settings)


def input_types(fields):
    """V1 `INPUT_TYPES` from fields, with the passthrough last."""
    types = {"required": {}, "optional": {}}
    for field in fields:
        types["optional" if field.optional else "required"][field.name] = field.v1()
    types["optional"]["passthrough"] = (ANY, {"tooltip": PASSTHROUGH_TOOLTIP})
    return types


def compute_devices():
    """The CUDA devices this process sees (`cuda:0`, ...), at least `cuda:0`."""
    try:
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except ImportError:
        count = 0
    return [f"cuda:{i}" for i in range(max(1, count))]


def _unloaded():
    """Whether libvvram.so is missing from the process."""
    return not vvram_shim.available()


class _SettingNode:
    """Base of the nodes that change a setting of the shim: passthrough in, passthrough
    and a status line out, the status also shown on the node. Subclasses declare their
    inputs (`fields()`), a DESCRIPTION and `install(**inputs) -> status`."""

    RETURN_TYPES = (ANY, "STRING")
    RETURN_NAMES = ("passthrough", "status")
    OUTPUT_TOOLTIPS = ("The passthrough input, unchanged.", "What this node set, or why it changed nothing.")
    FUNCTION = "apply"
    CATEGORY = CATEGORY
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return input_types(cls.fields())

    @classmethod
    def IS_CHANGED(cls, **_):
        return float("nan")

    def apply(self, passthrough=None, **inputs):
        if _unloaded():
            status = startup.not_loaded_message()
        else:
            status = self.install(**inputs)
            log.debug("%s", status)
        return {"ui": {"text": [status]}, "result": (passthrough, status)}


class PolicyPreset(_SettingNode):
    DESCRIPTION = (
        "Sets a tested placement policy for a model family on a card size: how much of the card vvram uses "
        "and how much pinned host RAM extends it. The host amount is the model's need, lowered to 3/4 of "
        "this machine's RAM where that is less (the status says so). Use it in front of the loaders when "
        "you don't want to write a policy."
    )

    @classmethod
    def fields(cls):
        return [
            Field("family", "COMBO", "The model family the workflow loads; sets how much host RAM the preset asks for.", options=list(FAMILIES)),
            Field(
                "card",
                "COMBO",
                f"The card the workflow computes on. `{AUTO_CARD}` gives vvram 85% of the card it runs on; a size keeps "
                "about 1.5-3 GiB of that card free for the driver, cuBLAS and the display.",
                default=AUTO_CARD,
                options=CARDS,
            ),
        ]

    def install(self, family, card):
        preset = Preset(family, card)
        vvram_shim.set_policy_toml(preset.text, name=preset.name)
        return preset.describe()


class PolicyToml(_SettingNode):
    DESCRIPTION = (
        "Sets any placement policy written in TOML (the README's policy reference): budgets, donors, rules by "
        "size, phase and tag. The shim checks it against this machine; an invalid one fails this node with "
        "NAME:LINE:COLUMN and what would be valid. Use it when a preset does not fit your workflow."
    )
    DEFAULT = '[[device]]\nindex = 0\nlocal_budget = { fraction = 0.85 }\ndonors = [{ tier = "host", capacity = { fraction = 0.5 } }]\n'

    @classmethod
    def fields(cls):
        return [
            Field("toml", "STRING", "The policy. Amounts may be sizes (\"10GiB\"), \"*\", { fraction = 0.5 } or { share = 8 }.", default=cls.DEFAULT, multiline=True),
            Field("name", "STRING", "A name for this policy in error messages and in Stats (empty: <policy>).", default="", optional=True),
        ]

    def install(self, toml, name=""):
        vvram_shim.set_policy_toml(toml, name=name.strip() or None)
        return f"vvram policy: {name.strip() or '<policy>'} set from TOML"


class Allocation(_SettingNode):
    DESCRIPTION = (
        "Sets the policy the ComfyUI-MultiGPU way: the card to compute on and how many GB of virtual VRAM a "
        "donor (host RAM or another card) adds to it. Unlike DisTorch2, vvram's amount for the compute card is "
        "its whole budget, activations included, not only weights; the simple mode gives vvram all of the card. "
        "An expert DisTorch2 string replaces the simple inputs."
    )

    @classmethod
    def fields(cls):
        devices = compute_devices()
        return [
            Field("compute_device", "COMBO", "The card the model computes on (CUDA index as this process sees it).", default=devices[0], options=devices),
            Field("virtual_vram_gb", "FLOAT", "GB the donor adds to the compute card (binary GB, as in ComfyUI-MultiGPU).", default=8.0, min=0.0, max=1024.0, step=0.5),
            Field("donor_device", "COMBO", "Where the extra memory lives: pinned host RAM (cpu) or another card.", default="cpu", options=["cpu", *devices]),
            Field(
                "expert_allocation",
                "STRING",
                "A DisTorch2 allocation string such as cuda:0,2.5gb;cpu,* (bytes), cuda:0,8%;cpu,4% (ratio) or "
                "cuda:0,0.9;cpu,0.5 (fraction). Not empty: used instead of the inputs above.",
                default="",
                optional=True,
            ),
        ]

    def install(self, compute_device, virtual_vram_gb, donor_device, expert_allocation=""):
        device = int(compute_device.split(":")[1])
        allocation = expert_allocation.strip()
        if not allocation:
            if donor_device == compute_device:
                raise ValueError(f"the donor must be another device than the compute device {compute_device}")
            allocation = f"{compute_device},*" + (f";{donor_device},{virtual_vram_gb:g}gb" if virtual_vram_gb > 0 else "")
        vvram_shim.set_alloc(allocation, device)
        return f"vvram allocation: {allocation} (compute device {compute_device})"


class Phase(_SettingNode):
    DESCRIPTION = (
        "Sets the phase that placement rules match on, e.g. `load` in front of a loader and `sampling` after "
        "it, so weights and activations land where the policy's rules say. `none` clears it."
    )

    @classmethod
    def fields(cls):
        return [
            Field("phase", "COMBO", "The phase name: load and sampling are the ones vvram's default rules and the presets know.", default="load", options=PHASES),
            Field("custom_phase", "STRING", "Any other phase name your policy's rules use (letters, digits, _ - .); not empty: used instead.", default="", optional=True),
        ]

    def install(self, phase, custom_phase=""):
        name = custom_phase.strip() or ("" if phase == "none" else phase)
        vvram_shim.set_phase(name)
        return f"vvram phase: {name or 'none'}"


def _ui_image(array):
    """Saves an image for the node's preview (ComfyUI's temp folder) and names it as
    ComfyUI's UI output does."""
    try:
        import folder_paths

        directory = folder_paths.get_temp_directory()
    except ImportError:
        directory = tempfile.gettempdir()
    os.makedirs(directory, exist_ok=True)
    name = f"vvram_stats_{uuid.uuid4().hex[:12]}.png"
    report.Image.fromarray((array * 255).round().astype("uint8")).save(os.path.join(directory, name), compress_level=1)
    return {"filename": name, "subfolder": "", "type": "temp"}


def _image_output(array):
    try:
        import torch

        return torch.from_numpy(array)[None]
    except ImportError:
        return array[None]


class Stats:
    DESCRIPTION = (
        "Shows what lives where: for each card under vvram, the bytes on the card, on peer cards and in pinned "
        "host RAM against their budgets, as a table and a labelled chart on the node, plus allocations, "
        "out-of-memory answers and errors. Runs on every prompt; wire it after the sampler to see the peak."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return input_types([])

    RETURN_TYPES = (ANY, "STRING", "IMAGE")
    RETURN_NAMES = ("passthrough", "table", "chart")
    OUTPUT_TOOLTIPS = ("The passthrough input, unchanged.", "The statistics as text.", "The chart as an image.")
    FUNCTION = "show"
    CATEGORY = CATEGORY
    OUTPUT_NODE = True

    @classmethod
    def IS_CHANGED(cls, **_):
        return float("nan")

    def show(self, passthrough=None):
        if _unloaded():
            table = startup.not_loaded_message()
            chart = report.render_message("vvram is not loaded in this ComfyUI process", table)
        else:
            stats = vvram_shim.stats()
            if stats.get("policy_error"):
                raise vvram_shim.PolicyError(f"policy {stats.get('policy')} does not fit this machine: {stats['policy_error']}")
            table = report.render_table(stats)
            chart = report.render_chart(stats)
        ui = {"text": [table], "images": [_ui_image(chart)]}
        return {"ui": ui, "result": (passthrough, table, _image_output(chart))}


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
