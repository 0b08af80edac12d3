// Shows what a vvram node reported (its status, or the Stats table) on the node itself,
// in a read-only text box under its widgets. The Stats chart shows as the node's image.
import { app } from "../../scripts/app.js";
import { ComfyWidgets } from "../../scripts/widgets.js";

const VVRAM_NODES = new Set(["VvramPolicyPreset", "VvramPolicyToml", "VvramAllocation", "VvramPhase", "VvramStats"]);
const BOX = "vvram_report";

app.registerExtension({
  name: "vvram.report",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!VVRAM_NODES.has(nodeData.name)) {
      return;
    }
    const previous = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      previous?.apply(this, arguments);
      const text = (message?.text ?? []).join("\n");
      let box = this.widgets?.find((widget) => widget.name === BOX);
      if (!box) {
        box = ComfyWidgets.STRING(this, BOX, ["STRING", { multiline: true }], app).widget;
        box.element.readOnly = true;
        box.serialize = false;
      }
      box.value = text;
      this.setDirtyCanvas?.(true, true);
    };
  },
});
