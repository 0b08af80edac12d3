"""The same nodes on ComfyUI's current node API (comfy_api.latest), used when the
installed ComfyUI has it. Each node's work is the V1 class's method in nodes.py."""
from comfy_api.latest import ComfyExtension, io

from . import nodes
from .presets import CARDS, FAMILIES

PASSTHROUGH_IN = io.AnyType.Input("passthrough", optional=True, tooltip="Anything: returned unchanged, to order this node before a loader.")


def _outputs(*extra):
    return [io.AnyType.Output("passthrough_out", display_name="passthrough"), *extra]


def _setting_node(node_id, v1_class, inputs):
    """A V3 node whose work is `v1_class().apply` (a nodes._SettingNode)."""

    class Node(io.ComfyNode):
        @classmethod
        def define_schema(cls):
            return io.Schema(
                node_id=node_id,
                display_name=nodes.NODE_DISPLAY_NAME_MAPPINGS[node_id],
                category=nodes.CATEGORY,
                description=v1_class.__doc__,
                inputs=[*inputs, PASSTHROUGH_IN],
                outputs=_outputs(io.String.Output("status")),
            )

        @classmethod
        def execute(cls, **inputs):
            return io.NodeOutput(*v1_class().apply(**inputs))

    Node.__name__ = Node.__qualname__ = node_id
    return Node


VvramPolicyPreset = _setting_node(
    "VvramPolicyPreset", nodes.PolicyPreset, [io.Combo.Input("family", options=list(FAMILIES)), io.Combo.Input("card", options=CARDS, default="24 GB")]
)
VvramPolicyToml = _setting_node("VvramPolicyToml", nodes.PolicyToml, [io.String.Input("toml", multiline=True, default=nodes.PolicyToml.DEFAULT)])
VvramAllocation = _setting_node(
    "VvramAllocation", nodes.Allocation, [io.String.Input("allocation", default="cuda:0,20gb;cpu,*"), io.Int.Input("compute_device", default=0, min=0, max=63)]
)
VvramPhase = _setting_node("VvramPhase", nodes.Phase, [io.String.Input("phase", default="load")])


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
