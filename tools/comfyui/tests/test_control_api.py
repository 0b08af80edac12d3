"""The control API never ends the process: a policy that does not fit the machine comes
back as an error (set calls) or as `policy_error` (stats), whoever initialised CUDA."""
import json
import pathlib
import subprocess
import sys

SCRIPT = pathlib.Path(__file__).with_name("control_session.py")


def run(env, mode):
    result = subprocess.run([sys.executable, str(SCRIPT), mode], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    steps = {s["step"]: s for s in map(json.loads, result.stdout.splitlines())}
    assert "alive" in steps, result.stdout + result.stderr
    return steps, result.stderr


def test_stats_under_a_start_policy_that_does_not_fit_report_it_and_return(shim_environment, tmp_path):
    policy = tmp_path / "big.toml"
    policy.write_text('[[device]]\nindex = 0\nlocal_budget = "100GiB"\n')
    steps, stderr = run(dict(shim_environment, VVRAM_POLICY=str(policy)), "start-policy-too-big")
    for name in ("stats", "stats-again"):
        assert steps[name]["policy"] == str(policy) and not steps[name]["active"]
        assert "100" in steps[name]["policy_error"] and "24" in steps[name]["policy_error"], steps[name]
    assert "stopping" not in stderr
    fits = steps["named-fits"]
    assert fits["code"] == 0 and fits["active"] and fits["policy"] == "preset test-fits" and fits["policy_error"] is None


def test_a_policy_set_before_cuda_is_checked_against_the_machine_at_once(shim_environment):
    steps, _ = run(shim_environment, "set-before-cuda")
    assert steps["too-big"]["code"] == 2 and "100" in steps["too-big"]["error"]
    assert steps["too-big"]["policy"] is None
    named = steps["named-too-big"]
    assert named["code"] == 2 and named["error"].startswith("preset too-big"), named
    assert steps["fits"]["code"] == 0 and steps["fits"]["policy"] == "<policy>"
