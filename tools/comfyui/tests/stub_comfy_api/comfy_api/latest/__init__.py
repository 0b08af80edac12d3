"""A stand-in for ComfyUI's comfy_api.latest with the constructor signatures of the real
io module (ComfyUI itself needs torch and cannot be installed in CI): enough to check
that the package's V3 nodes build their schemas and run. Unknown keyword arguments raise,
as they would in ComfyUI."""
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from types import SimpleNamespace


class ComfyExtension(ABC):
    async def on_load(self):
        pass

    @abstractmethod
    async def get_node_list(self):
        ...


class _Input:
    def __init__(self, id, display_name=None, optional=False, tooltip=None, lazy=None, extra_dict=None, raw_link=None):
        self.id, self.optional, self.tooltip = id, optional, tooltip


class _WidgetInput(_Input):
    def __init__(self, id, display_name=None, optional=False, tooltip=None, lazy=None, default=None, socketless=None, widget_type=None, force_input=None, extra_dict=None, raw_link=None):
        super().__init__(id, display_name, optional, tooltip, lazy, extra_dict, raw_link)
        self.default = default


class _Output:
    def __init__(self, id=None, display_name=None, tooltip=None, is_output_list=False):
        self.id, self.display_name, self.tooltip = id, display_name, tooltip


class _StringInput(_WidgetInput):
    def __init__(self, id, display_name=None, optional=False, tooltip=None, lazy=None, multiline=False, placeholder=None, default=None, dynamic_prompts=None, socketless=None, force_input=None, extra_dict=None, raw_link=None):
        super().__init__(id, display_name, optional, tooltip, lazy, default)


class _IntInput(_WidgetInput):
    def __init__(self, id, display_name=None, optional=False, tooltip=None, lazy=None, default=None, min=None, max=None, step=None, control_after_generate=None, display_mode=None, socketless=None, force_input=None, extra_dict=None, raw_link=None):
        super().__init__(id, display_name, optional, tooltip, lazy, default)


class _FloatInput(_WidgetInput):
    def __init__(self, id, display_name=None, optional=False, tooltip=None, lazy=None, default=None, min=None, max=None, step=None, round=None, display_mode=None, socketless=None, force_input=None, extra_dict=None, raw_link=None):
        super().__init__(id, display_name, optional, tooltip, lazy, default)


class _ComboInput(_WidgetInput):
    def __init__(self, id, options=None, display_name=None, optional=False, tooltip=None, lazy=None, default=None, control_after_generate=None, upload=None, image_folder=None, remote=None, socketless=None, extra_dict=None, raw_link=None):
        super().__init__(id, display_name, optional, tooltip, lazy, default)
        self.options = options


@dataclass
class Schema:
    node_id: str
    display_name: str = None
    category: str = "sd"
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    hidden: list = field(default_factory=list)
    description: str = ""
    is_input_list: bool = False
    is_output_node: bool = False
    is_deprecated: bool = False
    is_experimental: bool = False
    is_api_node: bool = False
    not_idempotent: bool = False
    enable_expand: bool = False

    def validate(self):
        ids = [i.id for i in self.inputs] + [o.id for o in self.outputs]
        if len(ids) != len(set(ids)):
            raise ValueError(f"input and output ids must be unique: {ids}")


class ComfyNode:
    @classmethod
    def define_schema(cls):
        raise NotImplementedError

    @classmethod
    def execute(cls, **kwargs):
        raise NotImplementedError


class NodeOutput:
    def __init__(self, *args, ui=None, expand=None, block_execution=None):
        self.args, self.ui = args, ui


def _type(input_class=_Input):
    return SimpleNamespace(Input=input_class, Output=_Output)


io = SimpleNamespace(
    ComfyNode=ComfyNode,
    Schema=Schema,
    NodeOutput=NodeOutput,
    AnyType=_type(),
    Image=_type(),
    String=_type(_StringInput),
    Int=_type(_IntInput),
    Float=_type(_FloatInput),
    Combo=_type(_ComboInput),
)
IO = io
