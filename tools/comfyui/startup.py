"""How to start the installed ComfyUI under vvram: the exact `vvram run ... -- python
main.py ...` command for this ComfyUI, with `--disable-dynamic-vram` only where this
ComfyUI accepts it (versions with Dynamic VRAM, comfy-aimdo), and the not-loaded message
(logged once, by prestartup_script.py; the nodes only show it)."""
import os
import shlex
import shutil
import sys

DYNAMIC_VRAM_FLAG = "--disable-dynamic-vram"
# A starting policy that fits any machine: 85% of the compute card, up to half the host
# RAM beside it. The nodes replace it per workflow.
START_ALLOCATION = "cuda:0,0.85;cpu,0.5"


def comfyui_dir():
    """The ComfyUI checkout this package runs in: the folder of the running main.py, else
    the folder above custom_nodes/, else None."""
    main = getattr(sys.modules.get("__main__"), "__file__", None)
    if main and os.path.basename(main) == "main.py":
        return os.path.dirname(os.path.abspath(main))
    above = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return above if os.path.isfile(os.path.join(above, "main.py")) else None


def accepts_dynamic_vram_flag(directory=None):
    """Whether this ComfyUI has `--disable-dynamic-vram` (older ones exit 2 on it): asked of
    its argument parser when it is loaded, else read from its comfy/cli_args.py."""
    cli_args = sys.modules.get("comfy.cli_args")
    parser = getattr(cli_args, "parser", None)
    if parser is not None:
        return any(DYNAMIC_VRAM_FLAG in action.option_strings for action in parser._actions)
    directory = directory or comfyui_dir()
    if directory is None:
        return False
    try:
        with open(os.path.join(directory, "comfy", "cli_args.py"), encoding="utf-8") as f:
            return f'"{DYNAMIC_VRAM_FLAG}"' in f.read()
    except OSError:
        return False


def start_command(argv=None, directory=None):
    """The command that starts this ComfyUI, with its current arguments, under vvram."""
    directory = directory or comfyui_dir()
    main = os.path.join(directory, "main.py") if directory else "main.py"
    arguments = [a for a in (sys.argv[1:] if argv is None else argv) if a != DYNAMIC_VRAM_FLAG]
    if accepts_dynamic_vram_flag(directory):
        arguments.append(DYNAMIC_VRAM_FLAG)
    beside_python = os.path.join(os.path.dirname(sys.executable), "vvram")
    vvram = beside_python if os.access(beside_python, os.X_OK) else shutil.which("vvram") or "vvram"
    return shlex.join([vvram, "run", "--alloc", START_ALLOCATION, "--", sys.executable, main, *arguments])


def not_loaded_message():
    """What every node says when libvvram.so is not in the process."""
    why = (
        f" {DYNAMIC_VRAM_FLAG} turns ComfyUI's own Dynamic VRAM (comfy-aimdo) off: it patches the same CUDA calls."
        if accepts_dynamic_vram_flag()
        else ""
    )
    return (
        "vvram is not loaded in this ComfyUI process, so the vvram nodes change nothing. "
        f"Stop ComfyUI and start it under vvram:\n  {start_command()}\n"
        "(`vvram` and libvvram.so come with the vvram wheel, `pip install vvram`, which this package's "
        "requirements.txt installs, or from the Rust build, `cargo build --release`, in target/release/; "
        f"the nodes then replace that starting policy per workflow).{why}"
    )
