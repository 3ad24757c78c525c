"""The held-out openclipart downstream task: a seeded, leak-free split and the ImageFolder tree."""
import json
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from transfer.heldout_task import build_task, split_task


def rows(seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for c, n in (("a", 40), ("b", 12), ("c", 3), ("d", 25)):
        for i in range(n):
            out.append((f"{c}/{i}", c, f"g-{c}-{i}"))
    # copies of one picture: twice in class a, once in a and once in d
    out += [("a/copy1", "a", "g-a-0"), ("d/copy", "d", "g-a-1")]
    rng.shuffle(out)
    return [tuple(r) for r in out]


def test_split_is_deterministic_stratified_and_leak_free():
    r = rows()
    assign, dropped = split_task(r, 0.3, 10, seed=0)
    assert dropped == {"c": 3}
    assert split_task(list(reversed(r)), 0.3, 10, seed=0)[0] == assign  # input order does not matter
    assert split_task(r, 0.3, 10, seed=1)[0] != assign
    side_of_group = {}
    for item, c, g in r:
        if c == "c":
            assert item not in assign
            continue
        assert side_of_group.setdefault(g, assign[item]) == assign[item], f"group {g} on both sides"
    val_groups = {c: len({g for i, cc, g in r if cc == c and assign[i] == "val"}) for c in "abd"}
    train_groups = {c: len({g for i, cc, g in r if cc == c and assign[i] == "train"}) for c in "abd"}
    # round(0.3 * distinct groups): a 40 -> 12, b 12 -> 4, d 26 (g-a-1 is shared with a) -> 8
    assert val_groups == {"a": 12, "b": 4, "d": 8}
    assert train_groups == {"a": 28, "b": 8, "d": 18}


def test_split_rejects_bad_arguments():
    with pytest.raises(ValueError, match="val_frac"):
        split_task(rows(), 1.0, 10, 0)
    with pytest.raises(ValueError, match="duplicate item id"):
        split_task([("x", "a", "1"), ("x", "a", "2")], 0.5, 2, 0)


def test_build_task_writes_rgb_jpegs_and_counts_rejects(tmp_path):
    src = tmp_path / "png"
    src.mkdir()
    records = []
    for c, n in (("cats", 6), ("dogs", 5), ("tiny", 2), ("unsorted", 4)):
        for i in range(n):
            p = src / f"{c}_{i}.png"
            a = np.zeros((20, 30, 4), np.uint8)
            a[..., 0] = 200 if c == "cats" else 10
            a[:10, :, 3] = 255  # top half opaque, bottom half transparent -> white
            Image.fromarray(a, "RGBA").save(p)
            records.append({"image_id": f"{c}/x/{i}", "image": str(p), "hashtags": ["t"], "category": c})
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    records.append({"image_id": "cats/broken", "image": str(src / "broken.png"), "hashtags": [], "category": "cats"})
    (src / "link.png").symlink_to(src / "dogs_0.png")  # a Debian-style copy of dogs_0
    records.append({"image_id": "dogs/link", "image": str(src / "link.png"), "hashtags": [], "category": "dogs"})
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "heldout.parquet")
    stats = build_task(tmp_path / "heldout.parquet", tmp_path / "task", val_frac=0.3, min_per_class=4, seed=0,
                       max_side=16)
    assert stats["classes"] == ["cats", "dogs"] and stats["dropped_classes"] == {"tiny": 2}
    assert stats["unreadable"] == {"undecodable": 1} or stats["unreadable"] == {"truncated": 1}
    out = tmp_path / "task"
    files = {s: sorted(p.name for p in (out / s).rglob("*.jpg")) for s in ("train", "val")}
    assert len(files["train"]) + len(files["val"]) == 6 + 6  # 7 cats - 1 broken, 5 dogs + the link
    assert stats["images"]["cats"]["train"] + stats["images"]["cats"]["val"] == 6
    link_side = "train" if "dogs__link.jpg" in files["train"] else "val"
    assert "dogs__x__0.jpg" in files[link_side]  # copies of one picture share a side
    with Image.open(next((out / "train" / "cats").iterdir())) as im:
        assert im.format == "JPEG" and im.mode == "RGB" and min(im.size) == 16
        px = np.asarray(im)
    assert px[1, 5, 0] > 150 and px[-2, 5].min() > 230  # red on top, transparency composited on white
    assert json.loads((out / "task.json").read_text())["train"] == stats["train"]
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir() if p.name != "heldout.parquet")


def test_a_failed_build_keeps_the_previous_task_and_leaves_no_temporary(tmp_path):
    src = tmp_path / "png"
    src.mkdir()
    records = []
    for i in range(4):
        (src / f"{i}.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")  # every image unreadable
        records.append({"image_id": f"cats/{i}", "image": str(src / f"{i}.png"), "hashtags": [], "category": "cats"})
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "heldout.parquet")
    (tmp_path / "task").mkdir()
    (tmp_path / "task" / "task.json").write_text("{}")
    with pytest.raises(ValueError, match="no class has 2 readable images"):
        build_task(tmp_path / "heldout.parquet", tmp_path / "task", min_per_class=2)
    assert (tmp_path / "task" / "task.json").read_text() == "{}"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
