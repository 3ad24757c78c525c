"""Linear probe, few-shot and zero-shot end to end on a tiny real ImageFolder and shard set, with a
real (randomly initialised) regnety_002 export and a real vocabulary table."""
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from pipeline.wds import Sample, shard_name, write_shard
from pipeline.wordnet import get_synsets
from pipeline.zero_shot_map import aggregate, class_synsets, map_classes
from tests.helpers.images import make_folder

HASHTAGS = ["cat", "dog", "truck", "flower"]
BASE = ["img_size=32", "batch_size=8"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, wn):
    from trainer.export import export_model
    from trainer.models import create_model

    base = tmp_path_factory.mktemp("transfer")
    data = make_folder(base / "data")
    torch.manual_seed(0)
    model = create_model("regnety_002", len(HASHTAGS), "linear", 32)
    vocab = base / "vocab"
    vocab.mkdir()
    pq.write_table(pa.Table.from_pylist([{"label": i, "name": h, "synsets": list(get_synsets(h, wn))}
                                         for i, h in enumerate(HASHTAGS)]), vocab / "vocab.parquet")
    export_model(model, base / "export", {"model": "regnety_002", "head": "linear", "num_classes": len(HASHTAGS),
                                          "labels": HASHTAGS, "img_size": 32, "input_size": [3, 32, 32],
                                          "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                                          "config": {"vocab": str(vocab), "loss": "softmax"}})
    return base, data


def test_linear_probe_random_and_exported_trunk_and_cache(setup):
    from transfer.linear_probe import main

    base, data = setup
    out = base / "lin" / "random.json"
    r = main(["model=random:regnety_002", f"data={data}", f"out={out}", *BASE])
    assert r["classes"] == ["cat", "dog", "truck"] and r["train_images"] == 24 and r["val_images"] == 12
    assert r["top1"] >= 0.9 and r["top5"] == 1.0  # the colours separate the classes even for a random trunk
    assert json.loads(out.read_text())["top1"] == r["top1"] and out.with_suffix(".md").read_text().startswith("##")
    cache = sorted((base / "lin" / "features").iterdir())
    assert len(cache) == 2  # train and val
    mtimes = [p.stat().st_mtime_ns for p in cache]
    assert main(["model=random:regnety_002", f"data={data}", f"out={out}", *BASE])["top1"] == r["top1"]
    assert [p.stat().st_mtime_ns for p in sorted((base / "lin" / "features").iterdir())] == mtimes  # cache hit
    other_seed = main(["model=random:regnety_002", f"data={data}", f"out={out}", "seed=1", *BASE])
    assert other_seed["model_key"] != r["model_key"] and len(list((base / "lin" / "features").iterdir())) == 4
    exp = main([f"model={base / 'export'}", f"data={data}", f"out={base / 'lin' / 'export.json'}", *BASE])
    assert exp["model_key"].startswith("export:") and 0 <= exp["top1"] <= 1


def test_shards_with_cls_give_the_same_features_as_the_folder(setup, tmp_path):
    from transfer.downstream import load_split
    from trainer.export import load_model
    from transfer.features import extract

    _, data = setup
    classes = ["cat", "dog", "truck"]
    for split in ("train", "val"):
        (tmp_path / split).mkdir()
        rows = [(f"{c}{p.stem}", p.read_bytes(), i) for i, c in enumerate(classes)
                for p in sorted((data / split / c).iterdir())]
        for n, part in enumerate((rows[: len(rows) // 2], rows[len(rows) // 2:])):
            write_shard(tmp_path / split / shard_name(n), [Sample(key, body, cls=label) for key, body, label in part])
    (tmp_path / "classes.txt").write_text("\n".join(classes) + "\n")
    model = load_model("random:regnety_002", 32, 0)
    for split in ("train", "val"):
        folder, shards = load_split(data, split), load_split(tmp_path, split)
        assert shards.classes == tuple(classes) and sorted(shards.labels) == sorted(folder.labels)
        xf, yf = extract(model, folder, 32)
        xs, ys = extract(model, shards, 32)
        # both list images class by class in file order
        torch.testing.assert_close(xs, xf)
        assert torch.equal(ys, yf)


def test_few_shot_caps_and_reports(setup):
    from transfer.few_shot import main

    base, data = setup
    r = main(["model=random:regnety_002", f"data={data}", f"out={base / 'fs' / 'random.json'}", "ks=[1,5,10]",
              "seeds=2", *BASE])
    assert set(r["k"]) == {"1", "5", "10"}
    assert r["k"]["10"]["classes_capped"] == 3 and r["k"]["10"]["train_images"] == 24  # 8 per class < 10
    assert r["k"]["5"]["classes_capped"] == 0 and r["k"]["5"]["train_images"] == 15
    assert r["k"]["1"]["lams"] == [1e-3, 1e-3]  # nothing to hold out with one image per class
    for k in r["k"].values():
        assert 0 <= k["min_top1"] <= k["mean_top1"] <= k["max_top1"] <= 1 and len(k["top1"]) == 2


def test_zero_shot_matches_a_direct_forward_pass(setup, wn):
    from transfer.downstream import ImageSet, load_split
    from trainer.export import load_exported
    from transfer.zero_shot import main

    base, data = setup
    out = base / "zs" / "zero_shot.json"
    r = main([f"model={base / 'export'}", f"data={data}", f"out={out}", "aggregation=split_max", *BASE])
    assert r["mapping"]["cat"]["hashtags"] == ["cat"] and r["mapping"]["truck"]["hashtags"] == ["truck"]
    tsv = (base / "zs" / "zero_shot.mapping.tsv").read_text().splitlines()
    assert tsv[0].startswith("class\t") and len(tsv) == 4
    # independently: the whole exported model on the val images, then the mapping by hand
    model, meta = load_exported(base / "export")
    model.eval()
    val = load_split(data, "val")
    x = torch.stack([ImageSet(val, 32)[i][0] for i in range(len(val))]).float()
    mean, std = torch.tensor(meta["mean"]).view(1, 3, 1, 1) * 255, torch.tensor(meta["std"]).view(1, 3, 1, 1) * 255
    with torch.no_grad():
        probs = torch.softmax(model((x - mean) / std), 1).numpy()
    tag_syn = [list(get_synsets(h, wn)) for h in HASHTAGS]
    names = ["cat", "dog", "truck"]
    scores = aggregate(probs, map_classes(names, class_synsets(names, wn), tag_syn, wn), "split_max")
    assert r["top1"] == pytest.approx(float((scores.argmax(1) == np.array(val.labels)).mean()))
    with pytest.raises(ValueError, match="random init"):
        main(["model=random:regnety_002", f"data={data}", f"out={out}", *BASE])


def test_bad_inputs_are_named(setup, tmp_path):
    from transfer.downstream import load_split
    from transfer.linear_probe import main

    _, data = setup
    with pytest.raises(ValueError, match="no val/ directory"):
        load_split(tmp_path, "val")
    with pytest.raises(ValueError, match="not an export directory"):
        main([f"model={tmp_path}", f"data={data}", f"out={tmp_path / 'x.json'}", *BASE])
    (tmp_path / "d" / "train" / "a").mkdir(parents=True)
    (tmp_path / "d" / "val" / "b").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"class folders \['b'\] are not in train"):
        load_split(tmp_path / "d", "val")
