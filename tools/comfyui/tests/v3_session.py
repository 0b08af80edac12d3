"""Run by test_nodes.py with the comfy_api stand-in on the path: the package takes the
current node API, and every V3 node builds its schema and runs. Prints what ComfyUI would
read from each schema, and what one execution returns."""
import asyncio
import json
import math

import comfyui

assert hasattr(comfyui, "comfy_entrypoint") and not hasattr(comfyui, "NODE_CLASS_MAPPINGS")
assert comfyui.WEB_DIRECTORY == "./web"
extension = asyncio.run(comfyui.comfy_entrypoint())
report = {}
for node in asyncio.run(extension.get_node_list()):
    schema = node.define_schema()
    schema.validate()
    inputs = {i.id: i.default if i.default is not None else (i.options[0] if getattr(i, "options", None) else None) for i in schema.inputs if not i.optional}
    output = node.execute(**inputs, passthrough="through")
    fingerprint = node.fingerprint_inputs(**inputs)
    report[schema.node_id] = {
        "display": schema.display_name,
        "description": schema.description,
        "inputs": {i.id: i.tooltip for i in schema.inputs},
        "outputs": [o.display_name for o in schema.outputs],
        "output_tooltips": all(o.tooltip for o in schema.outputs),
        "output_node": schema.is_output_node,
        "not_idempotent": schema.not_idempotent,
        "reruns": isinstance(fingerprint, float) and math.isnan(fingerprint),
        "args": len(output.args),
        "first": output.args[0],
        "ui": sorted(output.ui),
    }
print(json.dumps(report))
