"""`python -m vvram ARGS`: the `vvram` command installed with this package."""
import os
import sys

from vvram import command_path


def main():
    """Replaces this process with the `vvram` command, passing the arguments on."""
    command = str(command_path())
    os.execv(command, [command, *sys.argv[1:]])


if __name__ == "__main__":
    main()
