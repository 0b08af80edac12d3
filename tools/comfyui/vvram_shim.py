"""The vvram control API as Python sees it: the preloaded libvvram.so, found with
ctypes.CDLL(None). Nothing here moves tensors; it only sets policy and reads stats."""
import ctypes
import json
import os


class PolicyError(ValueError):
    """The shim refused a policy (the message names line and column), or the policy in
    force does not fit the machine."""


def _library():
    """The preloaded shim's control API, or None when the process was not started under it."""
    try:
        process = ctypes.CDLL(None)
        version = process.vvram_version
    except (OSError, AttributeError):
        return None
    version.restype = ctypes.c_char_p
    process.vvram_set_policy_toml.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t]
    process.vvram_set_policy_toml.restype = ctypes.c_int
    process.vvram_set_policy_named.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t]
    process.vvram_set_policy_named.restype = ctypes.c_int
    process.vvram_set_alloc.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t]
    process.vvram_set_alloc.restype = ctypes.c_int
    process.vvram_set_phase.argtypes = [ctypes.c_char_p]
    process.vvram_set_phase.restype = ctypes.c_int
    process.vvram_stats_json.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    process.vvram_stats_json.restype = ctypes.c_size_t
    return process


def available():
    """Whether this process runs under libvvram.so."""
    return _library() is not None


def version():
    """libvvram.so's version, or None when it is not loaded."""
    lib = _library()
    return lib.vvram_version().decode() if lib else None


def _require():
    lib = _library()
    if lib is None:
        raise RuntimeError("libvvram.so is not loaded in this process")
    return lib


def _checked(code, error, what):
    if code == 2:
        raise PolicyError(error.value.decode(errors="replace"))
    if code != 0:
        raise RuntimeError(f"vvram refused {what} (code {code})")


def set_policy_toml(text, name=None):
    """Replaces the policy with a TOML text; raises PolicyError with NAME:line:column
    (`<policy>` without a name). The name is what statistics show as the policy."""
    lib = _require()
    error = ctypes.create_string_buffer(4096)
    if name is None:
        code = lib.vvram_set_policy_toml(text.encode(), error, len(error))
    else:
        code = lib.vvram_set_policy_named(name.encode(), text.encode(), error, len(error))
    _checked(code, error, "the policy")


def set_alloc(allocation, device=0):
    """Replaces the policy with a DisTorch2 allocation string for compute device `device`."""
    lib = _require()
    error = ctypes.create_string_buffer(4096)
    _checked(lib.vvram_set_alloc(allocation.encode(), int(device), error, len(error)), error, "the allocation")


def set_phase(phase):
    """Sets the phase placement rules match on; an empty name clears it."""
    lib = _require()
    code = lib.vvram_set_phase(phase.encode() if phase else None)
    if code != 0:
        raise PolicyError(f"`{phase}` is not a phase name: use 1-64 letters, digits, '_', '-' or '.'")


def stats():
    """The live state as a dict (see include/vvram.h for the fields; `policy_error` says
    why the policy in force does not fit the machine)."""
    lib = _require()
    size = 1 << 14
    while True:
        buffer = ctypes.create_string_buffer(size)
        needed = lib.vvram_stats_json(buffer, size)
        if needed <= size:
            return json.loads(buffer.value.decode())
        size = needed * 2


def preset_dir():
    """Where the preset policies are."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "presets")
