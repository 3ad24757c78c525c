"""transfer.json: collected from the per-protocol results in exactly the documented format."""
import json

import pytest

from transfer.show import collect, main


def write(d, name, obj):
    (d / f"{name}.json").write_text(json.dumps(obj))


def results(d, arch_random="regnety_002"):
    write(d, "linear_random_init", {"top1": 0.25, "arch": arch_random})
    write(d, "linear_pretrained", {"top1": 0.5, "arch": "regnety_002"})
    write(d, "few_shot_random_init", {"k": {"1": {"mean_top1": 0.1}, "5": {"mean_top1": 0.2}}})
    write(d, "few_shot_pretrained", {"k": {"1": {"mean_top1": 0.3}, "5": {"mean_top1": 0.4}}})
    write(d, "zero_shot", {"top1": 0.125})


def test_collect_format_and_table(tmp_path, capsys):
    results(tmp_path)
    write(tmp_path, "finetune_pretrained", {"top1": 0.75, "steps": 30, "img_size": 64})
    out = tmp_path / "transfer.json"
    main([f"collect={tmp_path}", f"out={out}"])
    assert json.loads(out.read_text()) == {
        "linear": {"random_init": 0.25, "pretrained": 0.5},
        "few_shot": {"1": {"random_init": 0.1, "pretrained": 0.3}, "5": {"random_init": 0.2, "pretrained": 0.4}},
        "zero_shot": 0.125, "finetune": {"pretrained": 0.75, "steps": 30, "img_size": 64}}
    table = capsys.readouterr().out
    assert "| linear probe | 25.0% | 50.0% | +25.0 |" in table and "| 12.5% |" in table


def test_collect_refuses_different_architectures(tmp_path):
    results(tmp_path, arch_random="resnet50")
    with pytest.raises(ValueError, match="differ in architecture"):
        collect(tmp_path)
    (tmp_path / "zero_shot.json").unlink()
    with pytest.raises(ValueError, match="missing zero_shot.json"):
        results(tmp_path)
        (tmp_path / "zero_shot.json").unlink()
        collect(tmp_path)
