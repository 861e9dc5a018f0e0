"""``magma-bench train`` as a real subprocess: validation errors, final metrics JSON,
and resuming from --checkpoint-dir. Uses the fast quadratic workload."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import termios
import time

import pytest
import yaml

from tests.worker_fixtures import MAGMA_BENCH, REPO, Recorder, json_objects, run_cli
from worker.config import TrialConfig
from worker.contract import Base

BASES = Base.values()

pytestmark = pytest.mark.skipif(not MAGMA_BENCH.exists(), reason="magma-bench is not installed")


def test_bad_base_exits_2_and_lists_the_allowed_values():
    result = run_cli("--workload", "quadratic", "--base", "foo", "--quiet")
    assert result.returncode == 2, result.stderr
    assert "--base" in result.stderr
    for base in BASES:
        assert f"'{base}'" in result.stderr
    assert json_objects(result.stdout) == []


def test_inconsistent_fields_are_reported_as_config():
    """Bug: a cross-field error has an empty ``loc``, and ``"--" + ""`` is never falsy, so
    the CLI prints ``error: --: Value error, batch_size (6) ...`` instead of naming
    ``config`` as ``name or 'config'`` intends."""
    result = run_cli("--workload", "quadratic", "--batch-size", "6", "--grad-accum", "4")
    assert result.returncode == 2
    assert "batch_size (6)" in result.stderr and "grad_accum (4)" in result.stderr
    assert "error: --:" not in result.stderr, result.stderr
    assert "error: config:" in result.stderr


def test_quadratic_run_prints_final_metrics():
    result = run_cli(
        "--workload", "quadratic", "--variant", "magma", "--lr", "0.1",
        "--steps", "40", "--eval-interval", "20", "--quiet",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    *reports, final = json_objects(result.stdout)
    assert [r["step"] for r in reports] == [20, 40]
    assert final == reports[-1]
    assert final["status"] == "complete" and final["step"] == 40
    assert final["objective"] == final["val_loss"] < reports[0]["val_loss"]
    assert {"survival/block0", "alignment/block2", "lr", "tokens_per_s"} <= set(final)
    assert "\n  " in result.stdout  # the final object is pretty-printed


def test_instance_and_objective_window_reach_the_trial():
    """--instance shared gives seeds 0 and 1 one problem: full-batch (9 rows) dense descent
    then follows one trajectory, where per_seed's differ; --objective-window 2 makes the
    objective the mean of the last two val_losses."""

    def run(seed: str, instance: str) -> list[dict]:
        result = run_cli(
            "--workload", "quadratic", "--variant", "dense", "--lr", "0.05", "--seed", seed,
            "--instance", instance, "--objective-window", "2", "--batch-size", "9",
            "--steps", "30", "--eval-interval", "10", "--quiet",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        *reports, _ = json_objects(result.stdout)
        return reports

    shared = [run(seed, "shared")[0] for seed in ("0", "1")]
    per_seed = [run(seed, "per_seed")[0] for seed in ("0", "1")]
    # equal but for the order the seed's permutation sums the 9 rows in
    assert shared[0]["val_loss"] == pytest.approx(shared[1]["val_loss"], rel=1e-5)
    assert per_seed[0]["val_loss"] != pytest.approx(per_seed[1]["val_loss"], rel=1e-2)
    reports = run("0", "shared")
    losses = [r["val_loss"] for r in reports]
    assert reports[0]["objective"] == pytest.approx(losses[0])
    assert reports[2]["objective"] == pytest.approx((losses[1] + losses[2]) / 2)
    bad = run_cli("--workload", "quadratic", "--instance", "one", "--quiet")
    assert bad.returncode == 2 and "--instance" in bad.stderr


def test_algorithm_1_choices_reach_the_trial_and_bad_ones_name_the_option():
    """--score-init (a word or a number), --momentum and --decay-on-skip are TrialConfig's
    fields: set, the magma run's trajectory changes; refused, the option is named."""

    def final(*options: str) -> dict:
        result = run_cli(
            "--workload", "quadratic", "--variant", "magma", "--lr", "0.05",
            "--weight-decay", "0.1", "--steps", "20", "--eval-interval", "20", "--quiet",
            *options,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return json_objects(result.stdout)[-1]

    default = final()["val_loss"]
    assert final("--score-init", "first", "--momentum", "updated")["val_loss"] == default
    chosen = final("--score-init", "0.5", "--momentum", "previous", "--decay-on-skip")
    assert chosen["val_loss"] != default
    refused = {
        "--score-init": ["--score-init", "2"],
        "--momentum": ["--variant", "skipupdate", "--momentum", "previous"],
        "--decay-on-skip": ["--base", "rmsprop", "--weight-decay", "0.1", "--decay-on-skip"],
    }
    for option, args in refused.items():
        bad = run_cli("--workload", "quadratic", "--quiet", *args)
        assert bad.returncode == 2 and f"error: {option}:" in bad.stderr, bad.stderr


def test_progress_in_a_pipe_is_one_line_per_evaluation_not_per_step():
    """Off a terminal a bar's redraws would each be a line of the log: 200 steps must give
    4 progress lines (one per evaluation), not 200."""
    result = run_cli(
        "--workload", "quadratic", "--variant", "magma", "--lr", "0.1",
        "--steps", "200", "--eval-interval", "50",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    progress = result.stderr.splitlines()
    assert len(progress) == 4, result.stderr  # no header or footer on stderr
    assert "\r" not in result.stderr
    *reports, final = json_objects(result.stdout)
    assert [r["step"] for r in reports] == [50, 100, 150, 200]
    for line, report in zip(progress, reports, strict=True):
        assert line.startswith(f"step {report['step']}/200  train_loss "), line
        assert f"val_loss {report['val_loss']:.4g}" in line
    assert progress[-1].endswith("  complete") and "complete" not in progress[0]
    # stdout: one JSON line per evaluation, then the final metrics, indented (its footer)
    assert len(result.stdout.splitlines()) == len(reports) + len(final) + 2


def test_a_terminal_gets_a_progress_bar():
    """On a terminal the bar stays, redrawn in place, and no plain progress lines."""
    leader, follower = pty.openpty()
    # a terminal has a size (a fresh pty is 0 x 0, where tqdm draws nothing): 24 x 100
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    process = subprocess.Popen(
        [str(MAGMA_BENCH), "train", "--workload", "quadratic", "--steps", "200",
         "--eval-interval", "50"],
        stdout=subprocess.PIPE,
        stderr=follower,
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    os.close(follower)
    output = b""
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline:
            if select.select([leader], [], [], 1)[0]:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
            elif process.poll() is not None:
                break
        stdout = process.communicate(timeout=60)[0].decode()
    finally:
        os.close(leader)
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output.decode(errors="replace")
    terminal = output.decode(errors="replace")
    assert "200/200" in terminal and "\r" in terminal  # tqdm's bar, redrawn in place
    assert "train_loss" not in terminal
    assert [r["step"] for r in json_objects(stdout)[:-1]] == [50, 100, 150, 200]


def test_diverged_run_prints_null_for_non_finite_values():
    result = run_cli(
        "--workload", "quadratic", "--base", "sgd", "--variant", "dense", "--lr", "1.0",
        "--steps", "50", "--quiet",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    final = json_objects(result.stdout)[-1]
    assert final["status"] == "diverged" and final["step"] < 50
    assert "NaN" not in result.stdout and "Infinity" not in result.stdout


def test_checkpoint_dir_resumes(tmp_path):
    """A constant LR (no warmup, no decay) makes 20 steps + 20 resumed steps equal to 40
    uninterrupted ones, so the resumed run must match a straight run bitwise (JSON floats
    round-trip exactly)."""
    config = tmp_path / "trial.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "workload": "quadratic",
                "variant": "magma",
                "lr": 0.05,
                "warmup_fraction": 0.0,
                "min_lr_ratio": 1.0,
                "eval_interval": 10,
                "threads": 1,
            }
        )
    )
    checkpoints = tmp_path / "checkpoints"
    common = ("--config-file", str(config), "--quiet")

    first = run_cli(*common, "--steps", "20", "--checkpoint-dir", str(checkpoints))
    assert first.returncode == 0, first.stderr
    assert (checkpoints / "trial.pt").is_file()
    *first_reports, first_final = json_objects(first.stdout)
    assert [r["step"] for r in first_reports] == [10, 20]

    second = run_cli(*common, "--steps", "40", "--checkpoint-dir", str(checkpoints))
    assert second.returncode == 0, second.stderr
    *reports, final = json_objects(second.stdout)
    assert [r["step"] for r in reports] == [30, 40]  # resumed: no report at 10 or 20
    assert final["status"] == "complete" and final["step"] == 40

    # the same trial run straight through, in this process (same thread count)
    straight = Recorder()
    straight_final = straight.run(TrialConfig(**yaml.safe_load(config.read_text()), steps=40))
    assert [r["step"] for r in straight.reports] == [10, 20, 30, 40]
    assert straight.reports[1]["val_loss"] == first_final["val_loss"]
    for key in ("val_loss", "train_loss", "objective", "lr", "survival/block0"):
        assert final[key] == straight_final[key], key
