"""The benchmark entry point runs end to end and writes a complete, sane result.

Timings are not asserted: they depend on the machine and its load. The run is tiny (tens of
training steps); its numbers mean nothing, only their presence and sign do.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import cli_env

BENCH = Path(__file__).resolve().parent.parent / "bench" / "run.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_run", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.expensive
def test_short_run_writes_a_complete_sane_result(tmp_path: Path):
    # One test for the one (minute-long) run: under pytest-xdist, tests sharing a fixture can
    # land in different workers and would each pay for it.
    out = tmp_path
    command = [
        sys.executable,
        str(BENCH),
        "--short",
        "--steps",
        "8",
        "--learning-starts",
        "16",
        "--threads",
        "1",
        "--population",
        "2",
        "--out",
        str(out),
        "--set",
        "gamma=0.99",
        "--population-set",
        "tau=0.005",
        "--compile",
        "false",
    ]  # fmt: skip  (compiling: test_compiled.py, not here)
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, env=cli_env())
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((out / "result.json").read_text()), (out / "result.md").read_text()
    check_every_measurement_is_a_positive_number(result)
    check_the_machine_is_named(result)
    check_the_markdown_has_a_row_per_contender(result)
    check_the_population_is_timed_against_separate_processes(result)
    check_the_overrides_are_recorded(result)


def check_every_measurement_is_a_positive_number(result: tuple[dict, str]) -> None:
    data, _ = result
    rows = [data["ours"]["ddpg-adam"], data["ours"]["ddpg-vadam"], data["sb3"]]
    for row in rows:
        for key in ("steps_per_s", "update_per_s", "timed_seconds", "peak_rss_mib"):
            assert row[key] > 0, key
        assert row["timed_steps"] == 8
        assert row["interval_steps_per_s"]["min"] > 0
        assert row["cuda_max_allocated_mib"] is None  # CPU run
    assert data["env_alone"]["steps_per_s"] > 0
    for key in ("flops_per_update", "matmul_gflops", "updates_per_s"):
        assert data["bound"][key] > 0, key
    assert set(data["ratios"]) == {
        "ddpg-adam/sb3", "ddpg-adam/bound", "ddpg-vadam/sb3", "ddpg-vadam/bound"
    }  # fmt: skip
    assert all(ratio > 0 for ratio in data["ratios"].values())


def check_the_machine_is_named(result: tuple[dict, str]) -> None:
    machine = result[0]["machine"]
    assert machine["cpu"] and machine["cores"] >= 1
    assert machine["device"] == "cpu" and machine["torch_threads"] == 1
    assert machine["torch"]


def check_the_markdown_has_a_row_per_contender(result: tuple[dict, str]) -> None:
    table = result[1]
    for row in ("| ours ddpg-adam |", "| ours ddpg-vadam |", "| SB3 DDPG |", "| compute bound |"):
        assert row in table
    for block in table.split("\n\n"):
        rows = [line for line in block.splitlines() if line.startswith("|")]
        assert {line.count("|") for line in rows} <= {rows[0].count("|")} if rows else True
    assert "| 2 x ddpg-vadam | one population, 1 process |" in table
    assert "| 2 x ddpg-vadam | 2 processes |" in table


def check_the_population_is_timed_against_separate_processes(result: tuple[dict, str]) -> None:
    data, _ = result
    for preset in ("ddpg-adam", "ddpg-vadam"):
        entry = data["population"][f"{preset}:2"]
        assert entry["population"]["agents"] == 2
        assert entry["population"]["timed_steps"] == 8
        assert entry["population"]["aggregate_steps_per_s"] > 0
        assert len(entry["processes"]["steps_per_s_each"]) == 2
        assert entry["processes"]["threads_each"] >= 1


def test_update_flops_match_the_hand_count():
    bench = load_bench()
    # Per network forward pass at batch 100: 2 * 100 * sum(in * out) over its three layers.
    actor = 200 * (17 * 400 + 400 * 300 + 300 * 6)
    critic = 200 * (23 * 400 + 400 * 300 + 300 * 1)
    # Targets (A + C), critic fwd+bwd (3C), actor fwd+bwd through the critic (3A + 3C).
    assert bench.flops(bench.update_matmuls()) == 4 * actor + 7 * critic
    assert bench.flops(bench.update_matmuls(minimal=True)) < 4 * actor + 7 * critic


def check_the_overrides_are_recorded(result: tuple[dict, str]) -> None:
    settings = result[0]["settings"]
    assert settings["overrides"] == ["gamma=0.99"]
    assert settings["population_overrides"] == ["tau=0.005"]
    assert "--set gamma=0.99" in result[1] and "populations with --set tau=0.005" in result[1]
    assert "ours eager (compile=false)" in result[1]


def test_ours_runs_the_presets_compile_choice_for_their_own_length():
    """The presets say ``compile: auto``: a 3M-step run compiles on a CPU, so the bench's
    short run of ours must too (and not resolve ``auto`` for its own few thousand steps)."""
    bench = load_bench()
    settings = bench.Settings()
    assert settings.compile == "preset"
    for preset in bench.PRESETS:
        config = bench.ours_config(preset, settings)
        assert config.total_steps < 20_000 and config.compile is True
        forced = bench.ours_config(preset, bench.Settings(compile="false"))
        assert forced.compile is False
    on_cuda = bench.ours_config("ddpg-adam", bench.Settings(device="cuda"))
    assert on_cuda.compile is False  # there the preset's cuda_graph is the fast path


def test_rounds_report_the_median_run_with_every_rounds_rate():
    bench = load_bench()
    runs = [
        {"steps_per_s": rate, "run": name} for rate, name in [(120, "a"), (100, "b"), (140, "c")]
    ]
    median = bench.median_run(runs)
    assert median["run"] == "a" and median["rounds_steps_per_s"] == [120, 100, 140]
    assert bench.median_run(runs[:2])["run"] == "b"  # the lower of the middle two
    assert bench.median_run(runs[:1]) == runs[0]  # one round: the run as it is
    (note,) = bench._rounds_lines([("ours ddpg-adam", median), ("SB3 DDPG", median)])[1:]
    assert "median of 3 rounds" in note and "ours ddpg-adam 120, 100, 140" in note
    assert bench._rounds_lines([("SB3 DDPG", runs[0])]) == []


def test_population_matmuls_prints_a_rate_per_number_of_agents():
    script = BENCH.parent / "population_matmuls.py"
    command = [sys.executable, str(script), "--agents", "1", "3", "--calls", "1", "--repeats", "1"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=cli_env())
    assert done.returncode == 0, done.stderr
    rows = [line.split() for line in done.stdout.splitlines()[2:]]
    assert [row[0] for row in rows] == ["1", "3"]
    assert all(float(row[1]) > 0 and float(row[2]) > 0 for row in rows)


def test_rounds_take_each_micro_benchmarks_own_median():
    bench = load_bench()

    def micro(env: float, gflops: float, adam: float) -> dict:
        bound = {"matmul_gflops": gflops, "updates_per_s": gflops * 2, "matmuls_per_update": 33}
        return {"env_steps_per_s": env, "bound": bound, "update_per_s": {"ddpg-adam": adam}}

    runs = [micro(9000, 40.0, 150), micro(8000, 50.0, 170), micro(7000, 45.0, 110)]
    median = bench.median_micro(runs)
    assert median["env_steps_per_s"] == 8000 and median["update_per_s"]["ddpg-adam"] == 150
    assert median["bound"] == {
        "matmul_gflops": 45.0,
        "updates_per_s": 90.0,
        "matmuls_per_update": 33,
    }
    assert median["rounds"] == 3
    assert bench.median_micro(runs[:1]) == runs[0]


def test_presets_choose_the_parts_and_travel_to_each_part_process():
    bench = load_bench()
    assert bench.parts_order(["ddpg-vadam", "ddpg-param-noise", "ddpg-noisynet"]) == (
        "micro", "ours:ddpg-vadam", "sb3", "ours:ddpg-param-noise", "ours:ddpg-noisynet"
    )  # fmt: skip
    settings = bench.Settings(presets=["ddpg-vadam", "ddpg-param-noise"])
    # A part process rebuilds its settings from JSON (``--part-settings``).
    rebuilt = bench.Settings(**json.loads(json.dumps(dataclasses.asdict(settings))))
    assert rebuilt.presets == ["ddpg-vadam", "ddpg-param-noise"]
    assert bench.ours_config("ddpg-param-noise", rebuilt).actor.layer_norm
