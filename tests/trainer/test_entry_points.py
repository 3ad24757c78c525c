"""The trainer and transfer entry points as a newcomer meets them: `--help` lists every key with
its type, default and a line of help (exit 0); no arguments, a missing, unknown or badly typed key
is a usage message naming the key (exit 2), never a traceback."""
import dataclasses
import re
import subprocess
import sys

import pytest

from tests.helpers.launch import project_env


def entry_points():
    from trainer.mae import MaeConfig
    from trainer.mae import main as mae
    from trainer.pretrain import PretrainConfig
    from trainer.pretrain import main as pretrain
    from trainer.swav import SwavConfig
    from trainer.swav import main as swav
    from trainer.lit import LitConfig
    from trainer.lit import main as lit
    from transfer.few_shot import FewShotConfig
    from transfer.few_shot import main as few_shot
    from transfer.finetune import FinetuneConfig
    from transfer.finetune import main as finetune
    from transfer.linear_probe import LinearProbeConfig
    from transfer.linear_probe import main as linear_probe
    from transfer.zero_shot import ZeroShotConfig
    from transfer.zero_shot import main as zero_shot

    return {"trainer.pretrain": (pretrain, PretrainConfig, ["shards", "run_dir", "total_samples"]),
            "trainer.mae": (mae, MaeConfig, ["shards", "run_dir", "total_samples"]),
            "trainer.swav": (swav, SwavConfig, ["shards", "run_dir", "total_samples"]),
            "trainer.lit": (lit, LitConfig, ["shards", "run_dir", "total_samples", "image_tower"]),
            "transfer.finetune": (finetune, FinetuneConfig, ["model", "data", "out"]),
            "transfer.linear_probe": (linear_probe, LinearProbeConfig, ["model", "data", "out"]),
            "transfer.few_shot": (few_shot, FewShotConfig, ["model", "data", "out"]),
            "transfer.zero_shot": (zero_shot, ZeroShotConfig, ["model", "data", "out"])}


def exits(main, argv, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main(argv)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def key_line(text: str, key: str) -> list[str]:
    """The columns of the help line of `key`: name, type, default, help."""
    line = next(ln for ln in text.splitlines() if re.match(rf"^  {key} ", ln))
    return re.split(r"\s{2,}", line.strip(), maxsplit=3)


@pytest.mark.parametrize("name", ["trainer.pretrain", "trainer.mae", "trainer.swav", "trainer.lit", "transfer.finetune",
                                  "transfer.linear_probe",
                                  "transfer.few_shot", "transfer.zero_shot"])
def test_help_lists_every_key_and_usage_errors_name_the_key(name, capsys):
    main, cls, required = entry_points()[name]
    for flag in ("--help", "-h"):
        code, out, _ = exits(main, [flag], capsys)
        assert code == 0 and out.startswith(f"usage: python -m {name} ")
    for f in dataclasses.fields(cls):
        cols = key_line(out, f.name)
        assert len(cols) == 4 and cols[3], f"{name}: key {f.name} has no help line: {cols}"
    assert [key_line(out, k)[2] for k in required] == ["required"] * len(required)

    code, _, err = exits(main, [], capsys)
    assert code == 2 and f"missing required keys: {', '.join(required)}" in err and "usage:" in err
    code, _, err = exits(main, [f"{required[0]}=x", "no_such_key=1"], capsys)
    assert code == 2 and "unknown config keys ['no_such_key']" in err
    given = [f"{k}={'64' if k == 'total_samples' else 'x.json'}" for k in required]
    code, _, err = exits(main, [*given, "seed=three"], capsys)
    assert code == 2 and "config key 'seed': expected an integer, got 'three'" in err
    code, _, err = exits(main, ["seed"], capsys)
    assert code == 2 and "expected key=value, got 'seed'" in err


def test_pretrain_and_finetune_help_show_types_and_defaults(capsys):
    points = entry_points()
    _, out, _ = exits(points["trainer.pretrain"][0], ["--help"], capsys)
    assert key_line(out, "shards")[:3] == ["shards", "str", "required"]
    assert key_line(out, "model")[:3] == ["model", "str", "regnety_002"]
    assert key_line(out, "batch_size")[:3] == ["batch_size", "int", "256"]
    assert key_line(out, "warmup_frac")[:3] == ["warmup_frac", "float", "0.05"]
    assert key_line(out, "base_lr")[:3] == ["base_lr", "float | null", "null"]
    assert key_line(out, "channels_last")[:3] == ["channels_last", "bool", "false"]
    _, out, _ = exits(points["transfer.finetune"][0], ["--help"], capsys)
    assert key_line(out, "batch_size")[:3] == ["batch_size", "int", "512"]
    assert key_line(out, "base_lr")[:3] == ["base_lr", "float", "0.1"]
    assert key_line(out, "sync_bn")[:3] == ["sync_bn", "bool", "true"]
    assert key_line(out, "ckpt_every")[:3] == ["ckpt_every", "int", "100"]
    assert key_line(out, "steps")[:3] == ["steps", "int | null", "null"]
    _, out, _ = exits(points["transfer.few_shot"][0], ["--help"], capsys)
    assert key_line(out, "ks")[:3] == ["ks", "list of int", "[1, 5, 10, 25]"]


def test_from_the_shell(tmp_path):
    r = subprocess.run([sys.executable, "-m", "trainer.pretrain", "--help"], cwd=tmp_path, env=project_env(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "total_samples" in r.stdout and "Traceback" not in r.stderr
    # the docstring's commands read as written: continuation backslashes are kept
    assert "trainer/configs/regnety_16gf.yaml \\\n" in r.stdout
    r = subprocess.run([sys.executable, "-m", "transfer.finetune"], cwd=tmp_path, env=project_env(), capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 2 and "missing required keys: model, data, out" in r.stderr
    assert "Traceback" not in r.stderr


TOOLS = {  # the other `python -m` tools on the same loader: module -> (config class name, required keys)
    "pipeline.show_vocab": ("ShowVocabConfig", ["vocab"]),
    "pipeline.synthetic": ("SyntheticConfig", ["images", "out"]),
    "pipeline.wordnet": ("SetupConfig", []),
    "trainer.show_run": ("ShowRunConfig", ["run_dir"]),
    "transfer.show": ("ShowConfig", []),
    "transfer.heldout_task": ("HeldoutTaskConfig", ["heldout", "out"]),
    "transfer.zero_shot_table": ("ZeroShotTableConfig", ["data", "lit", "out"]),
}


@pytest.mark.parametrize("name", sorted(TOOLS))
def test_tools_share_the_key_value_help_and_usage_errors(name, capsys):
    import importlib

    module = importlib.import_module(name)
    cls_name, required = TOOLS[name]
    code, out, _ = exits(module.main, ["--help"], capsys)
    assert code == 0 and out.startswith(f"usage: python -m {name} ")
    for f in dataclasses.fields(getattr(module, cls_name)):
        cols = key_line(out, f.name)
        assert len(cols) == 4 and cols[3], f"{name}: key {f.name} has no help line: {cols}"
    assert [key_line(out, k)[2] for k in required] == ["required"] * len(required)
    code, _, err = exits(module.main, ["no_such_key=1"], capsys)
    assert code == 2 and "unknown config keys ['no_such_key']" in err and "usage:" in err
    if required:
        code, _, err = exits(module.main, [], capsys)
        assert code == 2 and f"missing required keys: {', '.join(required)}" in err


def test_transfer_show_needs_one_input(capsys):
    from transfer.show import main

    code, _, err = exits(main, [], capsys)
    assert code == 2 and "give table=transfer.json, or collect=DIR" in err


def test_show_run_reads_the_run_directory(tmp_path, capsys):
    from trainer.show_run import main

    (tmp_path / "metrics.jsonl").write_text("".join(
        f'{{"step": {s}, "samples": {64 * s}, "loss": {4.0 - s / 10}, "img_per_s": 100.0}}\n' for s in range(1, 11)))
    main([f"run_dir={tmp_path}"])
    out = capsys.readouterr().out
    assert f"run {tmp_path}: 10 steps, 640 samples" in out and "loss 3.900 (first 1 logs) -> 3.000" in out
