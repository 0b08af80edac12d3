"""The node package's registry metadata: it depends on the vvram wheel of its own release,
and requirements.txt (what ComfyUI-Manager and `pip install -r` read) says the same."""
import re
import tomllib

from conftest import PACKAGE, REPO


def node_project():
    with open(PACKAGE / "pyproject.toml", "rb") as file:
        return tomllib.load(file)["project"]


def workspace_version():
    with open(REPO / "Cargo.toml", "rb") as file:
        return tomllib.load(file)["workspace"]["package"]["version"]


def test_requirements_txt_lists_the_pyproject_dependencies():
    lines = (PACKAGE / "requirements.txt").read_text().split()
    assert lines == node_project()["dependencies"]


def test_the_nodes_require_the_wheel_of_their_own_minor_release():
    major, minor, _ = workspace_version().split(".")
    wheel = [d for d in node_project()["dependencies"] if re.match(r"vvram\b", d)]
    assert wheel == [f"vvram>={major}.{minor}.0,<{major}.{int(minor) + 1}"]
    assert node_project()["version"] == workspace_version()


def test_the_node_package_is_not_named_like_the_wheel():
    # ComfyUI imports a custom node under its folder name, and the registry installs it
    # into a folder named like the project: `vvram` would shadow the wheel's package.
    with open(REPO / "tools" / "pyproject.toml", "rb") as file:
        wheel = tomllib.load(file)["project"]["name"]
    assert node_project()["name"] != wheel
