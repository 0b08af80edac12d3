"""The same nodes on ComfyUI's current node API (comfy_api.latest), used when the
installed ComfyUI has it. Inputs, descriptions and work are the V1 classes' in nodes.py."""
from comfy_api.latest import ComfyExtension, io

from . import nodes

PASSTHROUGH_IN = io.AnyType.Input("passthrough", optional=True, tooltip=nodes.PASSTHROUGH_TOOLTIP)
PASSTHROUGH_OUT = io.AnyType.Output("passthrough_out", display_name="passthrough", tooltip="The passthrough input, unchanged.")


def _input(field):
    """A V3 input from a nodes.Field."""
    common = {"optional": field.optional, "tooltip": field.tooltip, "default": field.default}
    if field.kind == "COMBO":
        return io.Combo.Input(field.name, options=list(field.options), **common)
    if field.kind == "FLOAT":
        return io.Float.Input(field.name, min=field.extra["min"], max=field.extra["max"], step=field.extra["step"], **common)
    return io.String.Input(field.name, multiline=field.extra.get("multiline", False), **common)


def _setting_node(node_id, v1_class):
    """A V3 node whose inputs and work are `v1_class`'s (a nodes._SettingNode). It runs on
    every prompt: its fingerprint is never equal to the previous one."""

    class Node(io.ComfyNode):
        @classmethod
        def define_schema(cls):
            return io.Schema(
                node_id=node_id,
                display_name=nodes.NODE_DISPLAY_NAME_MAPPINGS[node_id],
                category=nodes.CATEGORY,
                description=v1_class.DESCRIPTION,
                inputs=[*map(_input, v1_class.fields()), PASSTHROUGH_IN],
                outputs=[PASSTHROUGH_OUT, io.String.Output("status", display_name="status", tooltip=v1_class.OUTPUT_TOOLTIPS[1])],
                is_output_node=True,
                not_idempotent=True,
            )

        @classmethod
        def fingerprint_inputs(cls, **_):
            return float("nan")

        @classmethod
        def execute(cls, **inputs):
            shown = v1_class().apply(**inputs)
            return io.NodeOutput(*shown["result"], ui=shown["ui"])

    Node.__name__ = Node.__qualname__ = node_id
    return Node


VvramPolicyPreset = _setting_node("VvramPolicyPreset", nodes.PolicyPreset)
VvramPolicyToml = _setting_node("VvramPolicyToml", nodes.PolicyToml)
VvramAllocation = _setting_node("VvramAllocation", nodes.Allocation)
VvramPhase = _setting_node("VvramPhase", nodes.Phase)


class VvramStats(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        tooltips = nodes.Stats.OUTPUT_TOOLTIPS
        return io.Schema(
            node_id="VvramStats",
            display_name="vvram Stats",
            category=nodes.CATEGORY,
            description=nodes.Stats.DESCRIPTION,
            inputs=[PASSTHROUGH_IN],
            outputs=[
                PASSTHROUGH_OUT,
                io.String.Output("table", display_name="table", tooltip=tooltips[1]),
                io.Image.Output("chart", display_name="chart", tooltip=tooltips[2]),
            ],
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
