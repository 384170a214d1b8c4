"""`gfn-fast`: user mistakes give one line and exit status 2 before anything trains; bugs
keep their traceback; resume, output directories, compare, notices and help behave."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gfn_fast.train import envs
from gfn_fast.train.cli import build_parser, main
from gfn_fast.train.trainer import ENV_DEFAULTS, Trainer

ROOT = Path(__file__).resolve().parents[2]
FAST = ["--steps", "2", "--batch-size", "8", "--eval-every", "1", "--hidden", "8", "--no-progress"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A complete 4-step run directory (checkpoint.pt, metrics.json, metrics.csv)."""
    out = tmp_path_factory.mktemp("finished")
    args = ["train", "--steps", "4", "--batch-size", "8", "--eval-every", "2", "--hidden", "8"]
    assert main([*args, "--no-progress", "--out", str(out)]) == 0
    return out


@pytest.fixture
def no_training(monkeypatch):
    """Fails the test if any run starts training."""

    def refuse(*_args, **_kwargs):
        raise AssertionError("a run started training")

    monkeypatch.setattr(Trainer, "train_step", refuse)


def _one_error_line(capsys, *fragments):
    error = capsys.readouterr().err
    assert error.startswith("gfn-fast: error: ") and error.count("\n") == 1, error
    for fragment in fragments:
        assert fragment in error, (fragment, error)
    return error


CUDA_MISSING = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")

# (arguments after "train", fragments the error line must contain)
TRAIN_MISTAKES = [
    pytest.param(["--lr", "-1"], ["--lr: expected a finite number > 0", "-1"], id="lr-negative"),
    pytest.param(["--lr", "nan"], ["--lr: expected a finite real number"], id="lr-nan"),
    pytest.param(
        ["--lr-log-z", "0"], ["--lr-log-z: expected a finite number > 0"], id="lr-log-z-zero"
    ),
    pytest.param(
        ["--lr-decay-power", "-1"],
        ["--lr-decay-power: expected a finite number >= 0"],
        id="lr-decay-negative",
    ),
    pytest.param(["--steps", "0"], ["--steps: expected >= 1"], id="steps-zero"),
    pytest.param(
        ["--steps", "ten"], ["--steps: invalid int value: 'ten'"], id="steps-not-a-number"
    ),
    pytest.param(["--batch-size", "0"], ["--batch-size: expected >= 1"], id="batch-size-zero"),
    pytest.param(["--hidden", "0"], ["--hidden: expected >= 1"], id="hidden-zero"),
    pytest.param(["--layers", "0"], ["--layers: expected >= 1"], id="layers-zero"),
    pytest.param(["--eval-every", "0"], ["--eval-every: expected >= 1"], id="eval-every-zero"),
    pytest.param(["--threads", "0"], ["--threads: expected >= 1"], id="threads-zero"),
    pytest.param(
        ["--env", "gmm", "--js-samples", "0"], ["--js-samples: expected >= 1"], id="js-samples-zero"
    ),
    pytest.param(["--mc-samples", "1"], ["--mc-samples: expected >= 2"], id="mc-samples-one"),
    pytest.param(
        ["--seed", "-1"], ["--seed: expected an integer in [0, 2**32)"], id="seed-negative"
    ),
    pytest.param(
        ["--objective", "renyi", "--alpha", "inf"], ["--alpha: expected a finite"], id="alpha-inf"
    ),
    pytest.param(
        ["--objective", "renyi", "--normalization", "paper", "--alpha", "-1"],
        ["--normalization paper needs alpha > 0"],
        id="paper-normalisation-alpha-negative",
    ),
    pytest.param(["--epsilon", "2"], ["--epsilon: expected in [0, 1]"], id="epsilon-above-one"),
    pytest.param(
        ["--temperature", "0"],
        ["--temperature: expected a finite number > 0"],
        id="temperature-zero",
    ),
    pytest.param(
        ["--objective", "tb", "--cv", "loo", "--epsilon", "0.1"],
        ['--cv: "loo" for tb is unbiased only on-policy', "use --cv none"],
        id="tb-loo-off-policy",
    ),
    pytest.param(
        ["--env", "gmm", "--epsilon", "0.1"], ["discrete envs only"], id="off-policy-continuous"
    ),
    pytest.param(
        ["--deep-set"], ["--deep-set: needs membership features"], id="deep-set-on-hypergrid"
    ),
    pytest.param(
        ["--env", "sequences", "--learn-pb"],
        ["--learn-pb: Sequences is a tree"],
        id="learn-pb-on-a-tree",
    ),
    pytest.param(
        ["--env", "banana", "--learn-pb"],
        ["--learn-pb: Banana is a tree"],
        id="learn-pb-continuous",
    ),
    pytest.param(["--env", "chess"], ["--env: invalid choice: 'chess'"], id="unknown-env"),
    pytest.param(
        ["--env", "sets", "--preset", "huge"], ["--preset: expected one of"], id="unknown-preset"
    ),
    pytest.param(
        ["--objective", "kl"], ["--objective: invalid choice: 'kl'"], id="unknown-objective"
    ),
    pytest.param(
        ["--learning-rate", "1"], ["unrecognized arguments: --learning-rate"], id="unknown-option"
    ),
    pytest.param(["--nproc", "0"], ["--nproc: expected >= 1"], id="nproc-zero"),
    pytest.param(
        ["--nproc", "3", "--batch-size", "2"],
        ["--batch-size: expected >= nproc"],
        id="nproc-above-batch",
    ),
    pytest.param(
        ["--compile", "--compile-backend", "nope"],
        ["--compile-backend: expected one of"],
        id="unknown-compile-backend",
    ),
    pytest.param(
        ["--device", "gpu"], ['--device: expected "cpu", "cuda"', "'gpu'"], id="unknown-device"
    ),
    pytest.param(["--device", "meta"], ['--device: expected "cpu", "cuda"'], id="device-meta"),
    pytest.param(
        ["--device", "cuda"],
        ["--device: 'cuda' needs a GPU"],
        marks=CUDA_MISSING,
        id="cuda-without-cuda",
    ),
    pytest.param(
        ["--device", "cuda:1"],
        ["--device: 'cuda:1' needs a GPU"],
        marks=CUDA_MISSING,
        id="cuda-index-without-cuda",
    ),
    pytest.param(
        ["--resume", "absent/checkpoint.pt"],
        ["absent/checkpoint.pt", "no such file"],
        id="resume-missing",
    ),
]


@pytest.mark.parametrize(("args", "fragments"), TRAIN_MISTAKES)
def test_train_mistakes_give_one_error_line_and_status_2(args, fragments, capsys, no_training):
    assert main(["train", *args, "--no-progress"]) == 2
    _one_error_line(capsys, *fragments)


def test_output_and_resume_path_mistakes(tmp_path, finished_run, capsys, no_training):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert main(["train", "--out", str(a_file), *FAST]) == 2
    _one_error_line(capsys, "--out", "is a file, expected a directory")
    assert main(["train", "--out", str(a_file / "below"), *FAST]) == 2
    _one_error_line(capsys, "--out", "cannot write there")
    assert main(["train", "--out", str(finished_run), *FAST]) == 2
    _one_error_line(capsys, "directory is not empty", "--overwrite", "--resume")
    assert main(["train", "--resume", str(finished_run), *FAST[-1:]]) == 2
    _one_error_line(capsys, "is a directory", "did you mean", "checkpoint.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes((finished_run / "checkpoint.pt").read_bytes()[:500])
    assert main(["train", "--resume", str(truncated), "--no-progress"]) == 2
    _one_error_line(capsys, "truncated.pt", "not a readable checkpoint")


def test_compare_mistakes_are_found_before_anything_trains(tmp_path, capsys, no_training):
    common = ["compare", "--out", str(tmp_path / "cmp"), *FAST]
    assert main([*common, "--objectives", "tb,renyi,kl"]) == 2
    _one_error_line(capsys, "--objectives: unknown 'kl'")
    assert main([*common, "--objectives", "tb,tb"]) == 2
    _one_error_line(capsys, "'tb' given more than once")
    assert main([*common, "--objectives", ""]) == 2
    _one_error_line(capsys, "--objectives: unknown ''")
    assert main([*common, "--seeds", "0"]) == 2
    _one_error_line(capsys, "--seeds: expected an integer >= 1")
    (tmp_path / "file").write_text("x")
    assert main(["compare", "--out", str(tmp_path / "file"), *FAST]) == 2
    _one_error_line(capsys, "--out", "is a file, expected a directory")


def test_a_setting_refused_only_for_a_later_run_is_found_before_the_first_trains(
    tmp_path, capsys, no_training
):
    # "paper" normalisation with alpha < 0 is refused only for the renyi run, after tb's.
    args = ["--objectives", "tb,renyi", "--normalization", "paper", "--alpha", "-0.5"]
    assert main(["compare", "--out", str(tmp_path / "c"), *FAST, *args]) == 2
    _one_error_line(capsys, "--normalization paper needs alpha > 0")


def test_a_bug_during_training_keeps_its_traceback(monkeypatch, tmp_path):
    def broken(self):
        raise ValueError("internal bug")  # a ValueError, yet not the user's mistake

    monkeypatch.setattr(Trainer, "train_step", broken)
    with pytest.raises(ValueError, match="internal bug"):
        main(["train", *FAST])


def test_the_installed_command_prints_one_line_without_a_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "gfn_fast", "train", "--resume", str(tmp_path / "nope.pt")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and result.stdout == ""
    assert (
        result.stderr.startswith("gfn-fast: error: checkpoint") and result.stderr.count("\n") == 1
    )


# -- behaviour --------------------------------------------------------------------------------
def test_resume_extends_a_run_with_more_steps(finished_run, tmp_path, capsys, monkeypatch):
    out = tmp_path / "extended"
    args = ["train", "--resume", str(finished_run / "checkpoint.pt"), "--steps", "6"]
    assert main([*args, "--out", str(out), "--no-progress"]) == 0
    extended = json.loads((out / "metrics.json").read_text())
    first = json.loads((finished_run / "metrics.json").read_text())
    assert [r["step"] for r in extended["curve"]] == [0, 2, 4, 6]
    assert _without_seconds(extended["curve"][:3]) == _without_seconds(first["curve"])
    assert extended["config"]["steps"] == 6 and extended["trajectories"] == 6 * 8
    # From step 4 on, the learning rate decays over the new length: lr (1 - step / 6).
    resumed = Trainer.resume(finished_run / "checkpoint.pt", tmp_path / "api", steps=6)
    rates = []
    monkeypatch.setattr(resumed.optimizer, "step", lambda: rates.append(_rates(resumed)))
    resumed.run(progress=False)
    lr, lr_log_z = resumed.config.lr, resumed.config.lr_log_z
    assert rates == [pytest.approx([lr * (1 - k / 6), lr_log_z * (1 - k / 6)]) for k in (4, 5)]
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["step"] == 6


def test_resume_refuses_flags_that_change_the_run_and_accepts_equal_ones(finished_run, capsys):
    checkpoint = str(finished_run / "checkpoint.pt")
    assert main(["train", "--resume", checkpoint, "--lr", "0.5", "--objective", "renyi"]) == 2
    _one_error_line(
        capsys,
        "--lr 0.5",
        "--objective renyi",
        "keeps its checkpoint's settings",
        "--no-record-activations, --[no-]distinct-states, --out",
    )
    assert main(["train", "--resume", checkpoint, "--steps", "3"]) == 2
    _one_error_line(capsys, "--steps: expected at least the 4 steps")
    # Equal to the checkpoint's values: nothing changes, so nothing is refused.
    assert main(["train", "--resume", checkpoint, "--hidden", "8", "--env", "hypergrid"]) == 0
    assert "already complete" in capsys.readouterr().err


def test_resuming_a_complete_run_says_so_and_changes_nothing(finished_run, capsys):
    before = (finished_run / "checkpoint.pt").read_bytes()
    assert main(["train", "--resume", str(finished_run / "checkpoint.pt")]) == 0
    captured = capsys.readouterr()
    assert "gfn-fast: notice: the run of" in captured.err and "already complete" in captured.err
    assert "--steps" in captured.err
    final = json.loads((finished_run / "metrics.json").read_text())
    assert json.loads(captured.out) == {
        k: v for k, v in final.items() if k not in ("config", "curve")
    }
    assert (finished_run / "checkpoint.pt").read_bytes() == before


def test_a_non_empty_out_needs_overwrite(finished_run, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["train", "--out", str(out), *FAST]) == 2
    assert main(["train", "--out", str(out), "--overwrite", *FAST]) == 0
    assert (out / "notes.txt").read_text() == "mine"  # only the run's own files are written
    assert json.loads((out / "metrics.json").read_text())["step"] == 2


def test_compare_shows_one_labelled_bar_per_run_and_a_line_when_each_ends(tmp_path, capsys):
    args = ["compare", "--env", "sets", "--preset", "small", "--seeds", "2"]
    args += ["--objectives", "tb,renyi", "--out", str(tmp_path / "cmp")]
    assert main([*args, *FAST[:-1]]) == 0  # with progress
    err = capsys.readouterr().err
    for k, (objective, seed) in enumerate([("tb", 0), ("tb", 1), ("renyi", 0), ("renyi", 1)], 1):
        label = f"[{k}/4] {objective} seed {seed}"
        assert f"{label}:" in err and "exact_l1" in err  # the bar's label, and its end line
    table = (tmp_path / "cmp" / "table.md").read_text()
    assert "| tb |" in table and "| renyi |" in table and "±" in table
    assert (tmp_path / "cmp" / "curves.png").stat().st_size > 0
    for objective, control_variate in [("tb", "none"), ("renyi", "loo")]:  # the defaults
        metrics = json.loads((tmp_path / "cmp" / objective / "seed1" / "metrics.json").read_text())
        assert metrics["config"]["control_variate"] == control_variate
        assert metrics["config"]["objective"] == objective and metrics["config"]["seed"] == 1


def test_distinct_states_flags_set_the_run_and_the_default_follows_the_network(tmp_path):
    cases = [
        ([], False),  # FAST's hidden 8 at batch 8: too little work to pay
        (["--distinct-states"], True),
        (["--hidden", "1024"], True),  # 1024**2 * 8 >= 2**20
        (["--hidden", "1024", "--no-distinct-states"], False),
    ]
    for index, (flags, expected) in enumerate(cases):
        out = tmp_path / str(index)
        assert main(["train", *FAST, *flags, "--out", str(out)]) == 0
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["config"]["distinct_states"] is expected, flags


def test_compare_says_that_tb_ignores_cv(tmp_path, capsys):
    args = ["compare", "--env", "sets", "--preset", "small", "--seeds", "1", *FAST]
    assert main([*args, "--objectives", "tb", "--cv", "loo", "--out", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    assert "notice: --cv loo applies to the divergence objectives; tb trains with" in err
    metrics = json.loads((tmp_path / "a" / "tb" / "seed0" / "metrics.json").read_text())
    assert metrics["config"]["control_variate"] == "none"
    assert main([*args, "--objectives", "tb", "--out", str(tmp_path / "b")]) == 0
    assert "--cv" not in capsys.readouterr().err  # nothing to say without --cv


def test_compare_without_matplotlib_writes_the_table_and_skips_the_plot(
    tmp_path, capsys, monkeypatch
):
    for name in ("matplotlib", "matplotlib.pyplot"):
        monkeypatch.setitem(sys.modules, name, None)  # import fails as if not installed
    args = ["compare", "--env", "sets", "--preset", "small", "--seeds", "1"]
    assert main([*args, "--objectives", "tb", "--out", str(tmp_path / "cmp"), *FAST]) == 0
    err = capsys.readouterr().err
    assert err.startswith("gfn-fast: notice: matplotlib is not installed")
    assert (tmp_path / "cmp" / "table.md").exists() and (tmp_path / "cmp" / "curves.json").exists()
    assert not (tmp_path / "cmp" / "curves.png").exists()


def test_sets_at_the_paper_size_reports_the_monte_carlo_l1_with_a_notice(tmp_path, capsys):
    args = [
        "--env",
        "sets",
        "--preset",
        "paper",
        "--mc-samples",
        "64",
        "--mc-backward-samples",
        "4",
    ]
    assert main(["train", *args, *FAST, "--out", str(tmp_path / "run")]) == 0
    captured = capsys.readouterr()
    assert "gfn-fast: notice: sets (preset paper) has too many states to enumerate" in captured.err
    final = json.loads(captured.out)
    assert "exact_l1" not in final and 0 <= final["mc_l1"] <= 2 and final["mc_l1_se"] > 0
    compare = ["compare", *args, "--seeds", "2", "--objectives", "tb,renyi"]
    assert main([*compare, *FAST, "--out", str(tmp_path / "cmp")]) == 0
    assert "too many states to enumerate" in capsys.readouterr().err
    table = (tmp_path / "cmp" / "table.md").read_text()
    assert "final mc_l1" in table and "(s.e. " in table
    assert (tmp_path / "cmp" / "curves.png").stat().st_size > 0


def test_train_help_documents_every_option_its_default_and_the_presets(capsys):
    assert main(["train", "--help"]) == 0
    text = capsys.readouterr().out
    parser = build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    for action in train._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, action.option_strings
    assert "(default: 0.5)" in text  # --alpha
    assert f"hypergrid {ENV_DEFAULTS['hypergrid']['steps']}" in text  # per-env steps
    for name, (_, presets, default) in envs.REGISTRY.items():
        for preset, settings in presets.items():
            line = f"  {name} {preset}: " + ", ".join(f"{k}={v}" for k, v in settings.items())
            assert line in text
        first = min(text.index(f"  {name} {preset}:") for preset in presets)
        assert text.index(f"  {name} {default}:") == first  # the default comes first


def test_info_prints_the_backend(capsys):
    assert main(["info"]) == 0
    assert "backend:" in capsys.readouterr().out


def _rates(trainer):
    return [group["lr"] for group in trainer.optimizer.param_groups]


def _without_seconds(curve):
    return [{k: v for k, v in record.items() if k != "seconds"} for record in curve]
