"""Run by test_nodes.py with the comfy_api stand-in on the path: the package takes the
current node API, and every V3 node builds its schema and runs."""
import asyncio
import json

import comfyui

assert hasattr(comfyui, "comfy_entrypoint") and not hasattr(comfyui, "NODE_CLASS_MAPPINGS")
extension = asyncio.run(comfyui.comfy_entrypoint())
report = {}
for node in asyncio.run(extension.get_node_list()):
    schema = node.define_schema()
    schema.validate()
    inputs = {i.id: i.default if i.default is not None else (i.options[0] if getattr(i, "options", None) else None) for i in schema.inputs if not i.optional}
    output = node.execute(**inputs, passthrough="through")
    report[schema.node_id] = {"display": schema.display_name, "outputs": len(schema.outputs), "args": len(output.args), "first": output.args[0], "ui": output.ui is not None}
print(json.dumps(report))
