"""vvram as installed by `pip install vvram`: the `vvram` command and libvvram.so.

Start a program under vvram with the command (`vvram run --policy POLICY.toml -- python
main.py`, or `python -m vvram run ...`). A process started that way finds vvram's control
API with `ctypes.CDLL(None)`; this module only says where the installed files are.
"""
import importlib.metadata
import pathlib

_PACKAGE = pathlib.Path(__file__).resolve().parent


def library_path():
    """The libvvram.so of this installation (what `vvram run` preloads)."""
    return _PACKAGE / "libvvram.so"


def fake_driver_path():
    """The fake CUDA driver (libfakecuda.so, soname libcuda.so.1) `vvram demo` uses without a GPU."""
    return _PACKAGE / "libfakecuda.so"


def command_path():
    """The `vvram` command installed with this package, as the wheel's file record lists it."""
    distribution = importlib.metadata.distribution("vvram")
    for file in distribution.files or []:
        if file.name == "vvram" and file.parent.name == "bin":
            path = pathlib.Path(distribution.locate_file(file)).resolve()
            if path.is_file():
                return path
    raise FileNotFoundError(
        f"the vvram command of the package at {_PACKAGE} is missing: reinstall with `pip install --force-reinstall vvram`"
    )
