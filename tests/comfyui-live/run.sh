#!/usr/bin/env bash
# The vvram nodes in a live ComfyUI. Starts a real ComfyUI from a checkout you give it (a
# public snapshot; never part of this repository) on CPU, loopback only, with the node
# package: first without libvvram.so (the nodes must say how to start it, once), then with
# exactly the command the package printed, under libvvram.so on the fake driver. Queues
# workflows through the HTTP API and checks (check.py): the setting nodes run on every
# prompt and in order, Stats shows its table and chart on the node, an invalid TOML fails
# only its node with NAME:LINE:COLUMN, a policy that does not fit the machine does not stop
# the server, presets name themselves.
#
#   tests/comfyui-live/run.sh COMFYUI_DIR
#
# Needs `cargo build` (VVRAM_BUILD_DIR, default target/debug) and a Python with ComfyUI's
# requirements installed (PYTHON, default python3); PORT (default 8189) on 127.0.0.1.
# Exit code: the number of failed checks (0: all passed). Logs and charts stay in the
# printed work folder.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
comfy=$(cd "${1:?usage: run.sh COMFYUI_DIR}" && pwd)
build=${VVRAM_BUILD_DIR:-$repo/target/debug}
python=${PYTHON:-python3}
port=${PORT:-8189}
for built in vvram libvvram.so libfakecuda.so; do
  [ -e "$build/$built" ] || { echo "$build/$built is missing: run cargo build first" >&2; exit 1; }
done
work=$(mktemp -d /tmp/vvram-comfyui-live.XXXXXX)
mkdir -p "$work/base/custom_nodes" "$work/driver"
ln -s "$repo/tools/comfyui" "$work/base/custom_nodes/comfyui-vvram"
ln -s "$here/probe" "$work/base/custom_nodes/vvram_live_probe"
ln -s "$build/libfakecuda.so" "$work/driver/libcuda.so.1"
export PATH="$build:$PATH"

echo "ComfyUI: $comfy, version $(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$comfy/comfyui_version.py")$(git -C "$comfy" rev-parse --short HEAD 2>/dev/null | sed 's/^/, commit /')"
echo "work folder: $work"

server=
stop() {
  [ -n "$server" ] || return 0
  kill -TERM "$server" 2>/dev/null
  wait "$server" 2>/dev/null
  server=
}
trap stop EXIT
wait_up() {
  for _ in $(seq 1 600); do
    "$python" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/system_stats', timeout=2)" 2>/dev/null && return 0
    kill -0 "$server" 2>/dev/null || return 1
    sleep 0.5
  done
  return 1
}

failures=0
echo "== ComfyUI without libvvram.so"
(cd "$comfy" && exec "$python" main.py --cpu --listen 127.0.0.1 --port "$port" --base-directory "$work/base" \
  --database-url sqlite:///:memory: --disable-auto-launch) >"$work/unloaded.log" 2>&1 &
server=$!
if wait_up; then
  "$python" "$here/check.py" unloaded "$port" "$work/unloaded.log" "$work"
  failures=$((failures + $?))
else
  echo "FAIL ComfyUI did not start; its log:"; cat "$work/unloaded.log"; exit 1
fi
stop
[ -s "$work/start-command" ] || { echo "FAIL no start command to go on with"; exit $((failures + 1)); }
command=$(cat "$work/start-command")

echo "== ComfyUI started with the command the package printed, on the fake driver:"
echo "   $command"
(cd "$comfy" && export FAKECUDA_DEVICES=24GiB LD_LIBRARY_PATH="$work/driver" && eval "exec $command") >"$work/loaded.log" 2>&1 &
server=$!
if wait_up; then
  grep -q "vvram .* is active in this ComfyUI process" "$work/loaded.log" && echo "ok   the package says vvram is active" \
    || { echo "FAIL the package did not see vvram"; failures=$((failures + 1)); }
  "$python" "$here/check.py" loaded "$port" "$work/loaded.log" "$work"
  failures=$((failures + $?))
else
  echo "FAIL ComfyUI did not start under vvram; its log:"; cat "$work/loaded.log"; exit $((failures + 1))
fi
pid=$server
stop
if [ -e "/dev/shm/vvram.$pid" ]; then
  echo "FAIL /dev/shm/vvram.$pid is left behind after SIGTERM"; failures=$((failures + 1))
else
  echo "ok   no statistics region left behind after SIGTERM"
fi
echo "$failures failed"
exit "$failures"
