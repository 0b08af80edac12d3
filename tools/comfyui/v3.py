"""The same nodes on ComfyUI's current node API (comfy_api.latest), used when the
installed ComfyUI has it. Each node's work is the V1 class's method in nodes.py."""
from comfy_api.latest import ComfyExtension, io

from . import nodes
from .presets import CARDS, FAMILIES

PASSTHROUGH_IN = io.AnyType.Input("passthrough", optional=True, tooltip="Anything: returned unchanged, to order this node before a loader.")


def _outputs(*extra):
    return [io.AnyType.Output("passthrough_out", display_name="passthrough"), *extra]


class VvramPolicyPreset(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VvramPolicyPreset",
            display_name="vvram Policy (preset)",
            category=nodes.CATEGORY,
            description=nodes.PolicyPreset.__doc__,
            inputs=[io.Combo.Input("family", options=list(FAMILIES)), io.Combo.Input("card", options=CARDS, default="24 GB"), PASSTHROUGH_IN],
            outputs=_outputs(io.String.Output("status")),
        )

    @classmethod
    def execute(cls, family, card, passthrough=None):
        return io.NodeOutput(*nodes.PolicyPreset().apply(family, card, passthrough))


class VvramPolicyToml(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        default = nodes.PolicyToml.INPUT_TYPES()["required"]["toml"][1]["default"]
        return io.Schema(
            node_id="VvramPolicyToml",
            display_name="vvram Policy (TOML)",
            category=nodes.CATEGORY,
            description=nodes.PolicyToml.__doc__,
            inputs=[io.String.Input("toml", multiline=True, default=default), PASSTHROUGH_IN],
            outputs=_outputs(io.String.Output("status")),
        )

    @classmethod
    def execute(cls, toml, passthrough=None):
        return io.NodeOutput(*nodes.PolicyToml().apply(toml, passthrough))


class VvramAllocation(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VvramAllocation",
            display_name="vvram Allocation",
            category=nodes.CATEGORY,
            description=nodes.Allocation.__doc__,
            inputs=[io.String.Input("allocation", default="cuda:0,20gb;cpu,*"), io.Int.Input("compute_device", default=0, min=0, max=63), PASSTHROUGH_IN],
            outputs=_outputs(io.String.Output("status")),
        )

    @classmethod
    def execute(cls, allocation, compute_device, passthrough=None):
        return io.NodeOutput(*nodes.Allocation().apply(allocation, compute_device, passthrough))


class VvramPhase(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VvramPhase",
            display_name="vvram Phase",
            category=nodes.CATEGORY,
            description=nodes.Phase.__doc__,
            inputs=[io.String.Input("phase", default="load"), PASSTHROUGH_IN],
            outputs=_outputs(io.String.Output("status")),
        )

    @classmethod
    def execute(cls, phase, passthrough=None):
        return io.NodeOutput(*nodes.Phase().apply(phase, passthrough))


class VvramStats(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="VvramStats",
            display_name="vvram Stats",
            category=nodes.CATEGORY,
            description=nodes.Stats.__doc__,
            inputs=[PASSTHROUGH_IN],
            outputs=_outputs(io.String.Output("table"), io.Image.Output("chart")),
            is_output_node=True,
            not_idempotent=True,
        )

    @classmethod
    def fingerprint_inputs(cls, **_):
        return float("nan")

    @classmethod
    def execute(cls, passthrough=None):
        shown = nodes.Stats().show(passthrough)
        return io.NodeOutput(*shown["result"], ui=shown["ui"])


class VvramExtension(ComfyExtension):
    async def get_node_list(self):
        return [VvramPolicyPreset, VvramPolicyToml, VvramAllocation, VvramPhase, VvramStats]
