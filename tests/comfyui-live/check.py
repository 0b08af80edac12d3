"""Drives a live ComfyUI through its HTTP API (loopback only) and checks the vvram nodes.
Run by run.sh; standard library only. Each check prints one line, `ok ...` or `FAIL ...`;
the exit code is the number of failures.

  check.py unloaded PORT LOG OUT  ComfyUI without libvvram.so: the nodes say how to start
                                  it, once per process; the command goes to OUT/start-command
  check.py loaded PORT LOG OUT    ComfyUI under libvvram.so on the fake driver; the charts
                                  go to OUT/chart-run1.png and OUT/chart-run2.png
"""
import json
import re
import sys
import time
import urllib.parse
import urllib.request

SETTING_NODES = ("1", "2", "4")
POLICY = """[[device]]
index = 0
local_budget = "2GiB"
donors = [{ tier = "host", capacity = "1GiB" }]

[[rule]]
name = "weights to the host while loading"
phase = "load"
tiers = ["host", "local"]
"""
failures = 0


def check(condition, what, detail=""):
    global failures
    failures += not condition
    print(f"{'ok  ' if condition else 'FAIL'} {what}" + (f": {detail}" if detail and not condition else ""), flush=True)
    return condition


class ComfyUI:
    def __init__(self, port):
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path):
        with urllib.request.urlopen(self.base + path, timeout=30) as response:
            return response.read()

    def run(self, prompt, timeout=180):
        """Queues a prompt and waits for its history entry."""
        body = json.dumps({"prompt": prompt, "client_id": "vvram-live"}).encode()
        request = urllib.request.Request(self.base + "/prompt", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            prompt_id = json.load(response)["prompt_id"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            history = json.loads(self.get(f"/history/{prompt_id}"))
            if prompt_id in history and history[prompt_id]["status"].get("completed") is not None:
                return History(history[prompt_id])
            time.sleep(0.2)
        raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout} s")

    def alive(self):
        try:
            return "system" in json.loads(self.get("/system_stats"))
        except OSError:
            return False


class History:
    def __init__(self, entry):
        self.entry = entry
        self.status = entry["status"]["status_str"]
        self.messages = {kind: data for kind, data in entry["status"]["messages"]}

    def text(self, node):
        return "\n".join(self.entry["outputs"].get(node, {}).get("text", []))

    def images(self, node):
        return self.entry["outputs"].get(node, {}).get("images", [])

    def cached(self):
        return set(self.messages.get("execution_cached", {}).get("nodes", []))

    def error(self):
        return self.messages.get("execution_error", {})


def node(class_type, **inputs):
    return {"class_type": class_type, "inputs": inputs}


def workflow():
    """Policy (TOML) -> Phase(load) -> loader -> Phase(sampling) -> Stats, chained by
    passthrough: the order a user wires in front of a loader."""
    return {
        "1": node("VvramPolicyToml", toml=POLICY, name="live-policy"),
        "2": node("VvramPhase", phase="load", passthrough=["1", 0]),
        "3": node("VvramLiveLoader", passthrough=["2", 0]),
        "4": node("VvramPhase", phase="sampling", passthrough=["3", 0]),
        "5": node("VvramStats", passthrough=["4", 0]),
    }


def unloaded(port, log_path, out_dir):
    comfy = ComfyUI(port)
    prompt = {"1": node("VvramPhase", phase="load"), "2": node("VvramPolicyPreset", family="SDXL", card="this card (85%)", passthrough=["1", 0])}
    for run in (1, 2):
        history = comfy.run(prompt)
        check(history.status == "success", f"without the shim, run {run} succeeds", history.status)
        check("vvram is not loaded" in history.text("2"), f"without the shim, run {run}: the node's status says vvram is not loaded", history.text("2"))
    log = open(log_path, encoding="utf-8", errors="replace").read()
    check(log.count("vvram is not loaded") == 1, "the not-loaded warning is logged once per process", f"{log.count('vvram is not loaded')} times")
    command = re.search(r"start it under vvram:\n +(.+)\n", log)
    if check(command is not None, "the warning names the start command"):
        with open(f"{out_dir}/start-command", "w", encoding="utf-8") as f:
            f.write(command.group(1))


def loaded(port, log_path, out_dir):
    comfy = ComfyUI(port)
    runs = [comfy.run(workflow()) for _ in range(2)]
    for number, history in enumerate(runs, 1):
        check(history.status == "success", f"run {number} succeeds", json.dumps(history.error()))
        check(not (history.cached() & set(SETTING_NODES + ("5",))), f"run {number}: no vvram node is taken from the cache", sorted(history.cached()))
        statuses = [history.text(n) for n in SETTING_NODES]
        check(
            statuses == ["vvram policy: live-policy set from TOML", "vvram phase: load", "vvram phase: sampling"],
            f"run {number}: the setting nodes ran and showed their status",
            statuses,
        )
        loader = json.loads(history.text("3") or "{}")
        check(
            loader.get("phase") == "load" and loader.get("policy") == "live-policy" and loader.get("grown_mib") == {"host": 64},
            f"run {number}: the loader ran after Policy and Phase(load): phase load, its 64 MiB on the host tier as the rule says",
            loader,
        )
        table = history.text("5")
        check(
            "policy live-policy, phase sampling" in table and "host RAM" in table and "cuda:0" in table,
            f"run {number}: Stats ran after Phase(sampling) and shows its table on the node",
            table,
        )
        images = history.images("5")
        if check(len(images) == 1 and images[0]["type"] == "temp", f"run {number}: Stats shows its chart on the node", images):
            query = urllib.parse.urlencode({k: images[0][k] for k in ("filename", "subfolder", "type")})
            png = comfy.get(f"/view?{query}")
            check(png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000, f"run {number}: the chart is a PNG served by ComfyUI", len(png))
            with open(f"{out_dir}/chart-run{number}.png", "wb") as f:
                f.write(png)
    print("Stats table (run 2):\n" + runs[1].text("5"), flush=True)

    bad = comfy.run({"1": node("VvramPolicyToml", toml='[[device]]\nindex = 0\nlocal_budgt = "2GiB"\n', name="live-bad"), "2": node("VvramStats", passthrough=["1", 0])})
    error = bad.error()
    check(
        bad.status == "error" and error.get("node_id") == "1" and error.get("exception_message", "").startswith("live-bad:3:1:"),
        "an invalid TOML fails its own node with NAME:LINE:COLUMN",
        error.get("exception_message"),
    )
    print(f"  message: {error.get('exception_message', '').strip()}", flush=True)

    big = comfy.run({"1": node("VvramPolicyToml", toml='[[device]]\nindex = 0\nlocal_budget = "100GiB"\n', name="live-too-big")})
    message = big.error().get("exception_message", "")
    check(big.status == "error" and message.startswith("live-too-big"), "a policy that does not fit the machine fails its node", message)
    print(f"  message: {message.strip()}", flush=True)
    check(comfy.alive(), "the server is still up after the misfitting policy")
    after = comfy.run({"1": node("VvramStats")})
    check(after.status == "success" and "policy live-policy" in after.text("1"), "Stats still answers, and the refused policy did not replace the last one", after.text("1"))

    preset = comfy.run({"1": node("VvramPolicyPreset", family="FLUX", card="this card (85%)"), "2": node("VvramStats", passthrough=["1", 0])})
    status, table = preset.text("1"), preset.text("2")
    check(preset.status == "success" and status.startswith("vvram policy: preset flux-auto"), "a preset names itself in its status", status)
    check("policy preset flux-auto" in table, "and in Stats", table)
    print(f"  preset status: {status}", flush=True)
    log = open(log_path, encoding="utf-8", errors="replace").read()
    check("stopping" not in log and "vvram is not loaded" not in log, "the log has no stop and no not-loaded warning")


if __name__ == "__main__":
    mode, port, log_path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    (unloaded if mode == "unloaded" else loaded)(port, log_path, sys.argv[4])
    sys.exit(failures)
