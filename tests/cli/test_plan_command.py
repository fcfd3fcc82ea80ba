"""`main.py plan` as a user runs it: tables, JSON, exports, and one-line errors with exit code 2."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

import main

ROOT = Path(__file__).resolve().parents[2]
PROBLEM = {
    "layers": [
        {"name": "embed", "params": 1000, "flops": 1e12, "activation_bytes": 100, "output_bytes": 10**8},
        {"name": "h.0", "params": 4000, "flops": 4e12, "activation_bytes": 400, "output_bytes": 10**8},
        {"name": "h.1", "params": 4000, "flops": 4e12, "activation_bytes": 400, "output_bytes": 10**8},
        {"name": "head", "params": 1000, "flops": 1e12, "activation_bytes": 100, "output_bytes": 10**8},
    ],
    "devices": [
        {"name": "gpu0", "memory_bytes": 4 * 10**9, "tflops": 100.0, "bandwidth_gbps": 25.0},
        {"name": "gpu1", "memory_bytes": 4 * 10**9, "tflops": 100.0, "bandwidth_gbps": 25.0},
    ],
    "setup": {"mode": "train", "bytes_per_param": 16, "micro_batches": 8, "schedule": "1f1b"},
}


@pytest.fixture
def problem_file(tmp_path: Path) -> Path:
    path = tmp_path / "problem.json"
    path.write_text(json.dumps(PROBLEM))
    return path


def run_main(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    try:
        code = main.main(list(argv))
    except SystemExit as exit_:  # argparse
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def test_explicit_problem_as_json(capsys, problem_file):
    code, out, _ = run_main(capsys, "plan", "--problem", str(problem_file), "--json")
    assert code == 0
    answer = json.loads(out)  # stdout holds the JSON and nothing else
    assert answer["status"] == "optimal" and answer["solver"] == "exact"
    for key in ("objective_s", "bottleneck_s", "lower_bound_s", "solve_time_s"):
        assert isinstance(answer[key], float)
    layers = [name for stage in answer["stages"] for name in stage["layers"]]
    assert layers == ["embed", "h.0", "h.1", "head"]
    assert {"device", "layers", "time_s", "memory_bytes"} <= set(answer["stages"][0])


def test_explicit_problem_imports_no_torch(problem_file):
    code = (
        "import sys, main\n"
        f"rc = main.main(['plan', '--problem', {str(problem_file)!r}, '--json'])\n"
        "assert rc == 0, rc\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["status"] == "optimal"


def test_human_report_shows_stages_and_the_comparison(capsys, problem_file):
    code, out, _ = run_main(capsys, "plan", "--problem", str(problem_file))
    assert code == 0
    assert "stage" in out and "lower bound" in out
    for solver in ("exact", "greedy", "uniform", "parameters", "accelerate"):
        assert solver in out


def test_infeasible_problem_exits_1_with_the_reason(capsys, tmp_path):
    data = json.loads(json.dumps(PROBLEM))
    for device in data["devices"]:
        device["memory_bytes"] = 1000
    path = tmp_path / "tight.json"
    path.write_text(json.dumps(data))
    code, out, _ = run_main(capsys, "plan", "--problem", str(path), "--json")
    answer = json.loads(out)
    assert code == 1 and answer["status"] == "infeasible" and answer["stages"] == []
    assert "short by" in answer["reason"]


def test_model_plan_and_exported_problem_agree(capsys, tmp_path):
    exported = tmp_path / "exported.json"
    code, out, _ = run_main(capsys, "plan", "--model", "gpt-nano", "--devices", "2xA10:1GiB", "--seq", "128",
                            "--json", "--export-problem", str(exported))
    assert code == 0
    first = json.loads(out)
    code, out, _ = run_main(capsys, "plan", "--problem", str(exported), "--json")
    assert code == 0
    assert json.loads(out)["objective_s"] == pytest.approx(first["objective_s"], rel=1e-12)


def test_custom_size_and_solver_choice(capsys):
    code, out, _ = run_main(capsys, "plan", "--layers", "3", "--d-model", "64", "--heads", "4", "--seq", "64",
                            "--devices", "2xL4", "--solver", "parameters", "--json")
    assert code == 0
    answer = json.loads(out)
    assert answer["solver"] == "parameters"
    assert [s["layers"][0] for s in answer["stages"]][0] == "embed"


@pytest.mark.slow
def test_accelerate_device_map_loads_with_from_pretrained(capsys, tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64, n_positions=64)
    weights = tmp_path / "tiny-gpt2"
    transformers.GPT2LMHeadModel(config).save_pretrained(weights)  # random weights, no download
    device_map_file = tmp_path / "map.json"
    code, _, _ = run_main(capsys, "plan", "--model", str(weights / "config.json"), "--devices", "2xcpu:1GiB",
                          "--seq", "32", "--no-compare", "--export", "accelerate", str(device_map_file))
    assert code == 0
    device_map = json.loads(device_map_file.read_text())
    assert set(device_map.values()) == {"cpu"}
    model = transformers.AutoModelForCausalLM.from_pretrained(weights, device_map=device_map)
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert "lm_head" in device_map and "transformer.h.1" in device_map


@pytest.mark.slow  # 2 s: gpt2 planned at 1024 tokens and built for accelerate
def test_simulated_gpus_export_as_gpu_indices(capsys, tmp_path):
    from accelerate.utils import check_device_map

    from core.model.model_spec import resolve_model
    from core.planning.accelerate_baseline import _meta_model

    device_map_file = tmp_path / "map.json"
    code, _, _ = run_main(capsys, "plan", "--model", "gpt2", "--devices", "2xA10:3GiB", "--seq", "1024",
                          "--no-compare", "--export", "accelerate", str(device_map_file))
    assert code == 0
    device_map = json.loads(device_map_file.read_text())
    assert set(device_map.values()) == {0, 1}
    model, _ = _meta_model(resolve_model("gpt2"), 2.0)
    check_device_map(model, device_map)  # raises if a parameter is left out


@pytest.mark.parametrize("argv, message", [
    (["plan", "--model", "gpt-9000", "--devices", "A10"], "unknown model 'gpt-9000'"),
    (["plan", "--model", "gpt-nano", "--devices", "Z80"], "unknown device 'Z80'"),
    (["plan", "--model", "gpt-nano", "--devices", "2xA100-80G"], "unknown device 'A100-80G' (did you mean A100-80GB"),
    (["plan", "--model", "gpt-nano", "--devices", "A10:100GiB"], "exceeds its memory"),
    (["plan", "--model", "gpt-nano", "--devices", "A10:0"], "more than 0"),
    (["plan", "--model", "gpt-nano", "--devices", "A10", "--micro-batches", "0"], "--micro-batches: must be 1 or more"),
    (["plan", "--model", "gpt-nano"], "no devices"),
    (["plan", "--problem", "/nonexistent/problem.json"], "cannot read problem file"),
    (["plan", "--model", "gpt-nano", "--devices", "A10", "--solver", "magic"], "invalid choice: 'magic'"),
    (["plan", "--model", "gpt-nano", "--devices", "A10", "--finetune", "lora", "--lora-targets", "q_proj"],
     "lora-targets: q_proj match no linear module of the model (its projections: c_attn, c_proj, c_fc)"),
    (["plan", "--problem", "p.json", "--finetune", "qlora"], "give no --finetune"),
    (["plan", "--model", "gpt-nano", "--devices", "A10", "--recompute", "maybe"],
     "--recompute: must be on, off or auto, got 'maybe'"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, argv, message):
    code, out, err = run_main(capsys, *argv)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1 and err.startswith("allot: error:")
    assert out == ""


def test_malformed_problem_file_exit_2(capsys, tmp_path):
    data = json.loads(json.dumps(PROBLEM))
    data["layers"][2]["params"] = -5
    path = tmp_path / "neg.json"
    path.write_text(json.dumps(data))
    code, _, err = run_main(capsys, "plan", "--problem", str(path))
    assert code == 2 and "layer 'h.1'.params must be 0 or more" in err


# --- hybrid plans (cost model v2) ---------------------------------------------------

HYBRID_SPLIT = {"weight_bytes_per_param": 2, "grad_bytes_per_param": 2, "optimizer_bytes_per_param": 12}


def test_hybrid_plan_shows_groups_and_the_data_parallel_baselines(capsys):
    code, out, _ = run_main(capsys, "plan", "--model", "gpt-nano", "--devices", "4xA100-80GB",
                            "--data-parallel", "auto", "--zero", "3", "--micro-batches", "16")
    assert code == 0
    # (16 micro-batches: bf16 trains over fp32 weights, so the sync moves fp32 weights and gradients)
    assert "data-parallel auto, zero 3" in out and "group (one device per replica)" in out
    assert "A100-80GB..#4" in out  # four alike GPUs, one replica each: the whole model is fastest
    for name in ("fsdp", "ddp", "zero1", "megatron", "pipeline", "uniform"):
        assert any(line.startswith(name) for line in out.splitlines()), name
    # Under zero 3 the replicas gather their weights; ddp (zero 0) fits and is faster: the report says
    # so and names the option that lets the exact solver find it.
    assert out.splitlines()[-1].startswith("ddp is ") and "plan with --zero 0 to let" in out.splitlines()[-1]


def test_hybrid_plan_json_has_groups(capsys, tmp_path):
    data = json.loads(json.dumps(PROBLEM))
    data["setup"].update(HYBRID_SPLIT, data_parallel=2, zero=3)  # 160 kB of state over 2: fits 100 kB
    path = tmp_path / "hybrid.json"
    path.write_text(json.dumps(data))
    code, out, _ = run_main(capsys, "plan", "--problem", str(path), "--json")
    answer = json.loads(out)
    assert code == 0 and answer["data_parallel"] == 2 and answer["zero"] == 3
    assert [stage["devices"] for stage in answer["stages"]] == [["gpu0", "gpu1"]]
    assert answer["stages"][0]["device"] == "gpu0" and "sync_s" in answer["stages"][0]


def test_accelerate_export_refuses_replicas(capsys, tmp_path):
    code, _, err = run_main(capsys, "plan", "--model", "gpt-nano", "--devices", "2xA100-80GB", "--micro-batches", "2",
                            "--data-parallel", "2", "--export", "accelerate", str(tmp_path / "map.json"))
    assert code == 2 and "runs 2 replicas" in err and not (tmp_path / "map.json").exists()


@pytest.mark.parametrize("argv, message", [
    (["--data-parallel", "3"], "does not divide the 8 micro-batches"),
    (["--data-parallel", "lots"], "--data-parallel must be a whole number or auto"),
    (["--data-parallel", "8"], "only 2 devices"),
    (["--zero", "4"], "--zero: must be 0, 1, 2 or 3"),
])
def test_bad_hybrid_input_exit_2(capsys, argv, message):
    code, out, err = run_main(capsys, "plan", "--model", "gpt-nano", "--devices", "2xA100-80GB", *argv)
    assert code == 2 and message in err and err.startswith("allot: error:") and out == ""


def test_explicit_problem_without_the_split_cannot_shard(capsys, problem_file):
    code, _, err = run_main(capsys, "plan", "--problem", str(problem_file), "--zero", "1")
    assert code == 2 and "needs the split of bytes_per_param" in err


def test_the_report_says_where_each_speed_comes_from(capsys):
    code, out, _ = run_main(capsys, "plan", "--model", "gpt-nano", "--devices", "A100-80GB", "--no-compare",
                            "--efficiency", "0.5")
    assert code == 0
    lines = out.splitlines()
    assert lines[1] == "devices: A100-80GB 80.00 GiB 156 TFLOP/s"  # 312 x 0.5: the one figure
    assert lines[2] == "speeds: GPUs datasheet dense TFLOP/s (bf16) x efficiency 0.5"


def _cpu_profile(path):
    from core.training.engine.profile import DeviceProfile, LayerTiming, Profile, save_profile

    host = DeviceProfile(name="cpu", kind="cpu", torch_device="cpu", shares=1, threads=2, work_factor=3,
                         effective_tflops=0.05, total_s=0.1, layers=(LayerTiming("embed", 1e6, 0.1),))
    save_profile(Profile(model="gpt-nano", gpt={}, setup={}, devices=(host,)), path)
    return path


def test_a_profile_of_the_host_does_not_claim_the_gpus_speeds(capsys, tmp_path):
    """Issue 19 item 4: a CPU profile said 'measured layer by layer' for A100s planned by datasheet."""
    profile = _cpu_profile(tmp_path / "cpu.json")
    code, out, _ = run_main(capsys, "plan", "--model", "gpt-nano", "--devices", "2xA100-80GB", "--profile",
                            str(profile), "--no-compare")
    assert code == 0
    line = next(line for line in out.splitlines() if line.startswith("speeds:"))
    assert "measured layer by layer" not in line
    assert "GPUs datasheet dense TFLOP/s (bf16) x efficiency" in line and "the profile measured none of them" in line
    code, out, _ = run_main(capsys, "plan", "--model", "gpt-nano", "--devices", "A100-80GB,cpu", "--profile",
                            str(profile), "--no-compare")
    line = next(line for line in out.splitlines() if line.startswith("speeds:"))
    assert line.startswith(f"speeds: cpu measured layer by layer (profile {profile}); GPUs datasheet")


def test_each_exact_solver_by_its_own_name_and_exact_as_before(capsys, problem_file):
    """"exact" named two solvers (issue 20): exact-pipeline and exact-hybrid now, exact their alias."""
    answers = {}
    for solver in ("exact", "exact-pipeline"):
        code, out, _ = run_main(capsys, "plan", "--problem", str(problem_file), "--solver", solver, "--json")
        assert code == 0
        answers[solver] = json.loads(out)
    assert (answers["exact"]["solver"], answers["exact-pipeline"]["solver"]) == ("exact", "exact-pipeline")
    for answer in answers.values():
        answer.pop("solve_time_s"), answer.pop("solver")
    assert answers["exact"] == answers["exact-pipeline"]
    code, _, err = run_main(capsys, "plan", "--problem", str(problem_file), "--solver", "exact-hybrid")
    assert code == 2 and "exact-hybrid cannot plan this setup" in err and "--solver exact-pipeline" in err
    code, out, _ = run_main(capsys, "plan", "--problem", str(problem_file), "--solver", "exact-pipeline")
    assert code == 0 and out.count("\nexact ") == 0  # compared against the others, not against itself


def test_auto_schedule_json_carries_the_schedule_and_each_devices_chunks(capsys, tmp_path):
    problem = json.loads(json.dumps(PROBLEM))
    problem["setup"]["schedule"] = "auto"
    path = tmp_path / "auto.json"
    path.write_text(json.dumps(problem))
    code, out, _ = run_main(capsys, "plan", "--problem", str(path), "--json")
    answer = json.loads(out)
    assert code == 0 and answer["schedule"] == "zb1p"  # two alike GPUs, 8 micro-batches: zero bubble wins
    assert answer["chunks_per_device"] == 2 and answer["device_chunks"] == {"gpu0": [0, 2], "gpu1": [1, 3]}
    code, out, _ = run_main(capsys, "plan", "--problem", str(path))
    assert code == 0 and "schedule: zb1p, 2 chunks per device" in out and "faster than 1F1B" in out
    code, out, _ = run_main(capsys, "plan", "--problem", str(tmp_path / "auto.json"), "--json", "--solver", "greedy")
    assert json.loads(out)["schedule"] == "1f1b"  # the baselines price auto as 1F1B


@pytest.mark.slow  # 2 s: the adapters measured on a meta llama-3-8b
def test_qlora_plan_shows_memory_by_part_and_device_map_auto(capsys):
    args = ("plan", "--model", "gpt-nano", "--devices", "2xA10:1GiB", "--seq", "128", "--finetune", "qlora",
            "--lora-rank", "8")
    code, out, _ = run_main(capsys, *args)
    assert code == 0
    assert "qlora: " in out and "adapter params on frozen weights" in out
    for header in ("frozen weights", "adapters+grads+optim", "activations", "quant scratch"):
        assert header in out
    assert "device_map=auto + QLoRA" in out
    code, out, _ = run_main(capsys, *args, "--json")
    answer = json.loads(out)
    assert answer["finetune"]["method"] == "qlora" and answer["finetune"]["lora_rank"] == 8
    parts = answer["stages"][-1]["memory_split_bytes"]  # the last stage holds quantised blocks
    assert {"params", "grads", "optimizer", "activations", "frozen", "scratch"} <= set(parts)
    held = parts["params"] + parts["optimizer"] + parts["buffers"] + parts["frozen"] + parts["scratch"]
    first_backward = parts["activations"] + parts["working"]
    assert answer["stages"][-1]["memory_bytes"] >= held + first_backward > held > 0


def test_full_fine_tuning_too_large_says_by_how_much(capsys):
    code, out, _ = run_main(capsys, "plan", "--model", "gpt-nano", "--devices", "2xA10:2MiB", "--seq", "128",
                            "--finetune", "full", "--no-compare")
    assert code == 1 and "short by" in out


def test_recompute_auto_turns_it_on_where_nothing_fits_without_it(capsys):
    # gpt-micro at 8 x 1024 tokens on one A10: 888 MiB without recompute, 401 MiB with it
    argv = ["plan", "--model", "gpt-micro", "--devices", "A10:600MiB", "--micro-batch", "8", "--seq", "1024",
            "--micro-batches", "2", "--no-compare"]
    code, out, _ = run_main(capsys, *argv, "--recompute", "off", "--json")
    assert code == 1 and json.loads(out)["status"] == "infeasible" and json.loads(out)["recompute"] is False
    code, out, _ = run_main(capsys, *argv, "--json")
    answer = json.loads(out)
    assert code == 0 and answer["recompute"] is True and answer["status"] == "optimal"
    code, out, _ = run_main(capsys, *argv)
    assert code == 0 and "train with recompute" in out
    assert "recompute: on (auto: without it" in out and "short by" in out
