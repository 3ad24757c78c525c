"""Dataset card (jobs/dataset_card.py, pipeline/dataset_card.py) on hand-made Parquet inputs; no Spark."""
from __future__ import annotations

import json
import struct

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import schemas
from jobs.dataset_card import main
from pipeline import dataset_card as card

# Toy corpus: one label per image, Zipf-like before resampling (40/20/10/5/2 images), flatter after.
LABELS = [(0, "dog", ["dog", "dogs"], 40), (1, "cat", ["cat"], 20), (2, "bird", ["bird"], 10),
          (3, "fish", ["fish"], 5), (4, "frog", ["frog"], 2)]
T, ALPHA = 15, 0.6  # tail: bird, fish, frog (17 images); head: dog, cat (60 images)
# samples per label and distinct images drawn per label
AFTER = {0: (30, 25), 1: (30, 20), 2: (20, 10), 3: (12, 5), 4: (8, 2)}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _raw_tags(name: str, i: int) -> list[str]:
    if name == "dog":  # 'Dog', '#dog' and 'DOG' normalize to 'dog'; 10 images also say 'dogs'
        return ["Dog"] if i < 20 else ["#dog"] if i < 30 else ["dogs", "DOG"]
    tags = [name.capitalize()]
    if i < 3:
        tags.append("zzz")  # a raw hashtag with no label
    return tags


def _hashtags(name: str, i: int) -> list[str]:
    """What the vocab job writes for an image of _raw_tags: its distinct normalized hashtags, sorted."""
    if name == "dog":
        return ["dog"] if i < 30 else ["dog", "dogs"]
    return sorted([name, "zzz"]) if i < 3 else [name]


def _write_parts(directory, table: pa.Table) -> None:
    """Like Spark: a directory of part files."""
    directory.mkdir(parents=True)
    half = table.num_rows // 2
    pq.write_table(table.slice(0, half), directory / "part-00000.parquet")
    pq.write_table(table.slice(half), directory / "part-00001.parquet")


def _write_stats(directory, stats: dict) -> None:
    (directory / "stats.json").write_text(json.dumps(stats))


@pytest.fixture
def toy(tmp_path):
    images = [(f"{name}{i}", name, label, f) for label, name, _, f in LABELS for i in range(f)]
    ids = [i for i, *_ in images]
    tags = [_raw_tags(name, int(i[len(name):])) for i, name, _, _ in images]
    tags[0] = tags[0] + ["Blah Blah"]
    # a duplicate row (must not count twice), a row without hashtags, one whose tag normalizes to ''
    ids += ["dog0", "x1", "x2"]
    tags += [["Dog"], [], ["###"]]
    d = tmp_path / "data"
    d.mkdir()
    pq.write_table(pa.table({"image_id": ids, "image": [f"/img/{i}.png" for i in ids], "hashtags": tags}),
                   d / "manifest.parquet")
    (d / "ingest_stats.json").write_text(json.dumps({"images_without_keywords": 9, "skipped": {"corrupt": 4},
                                                     "config": {"seed": 123456}}))
    vocab = d / "vocab"
    _write_parts(vocab / "vocab.parquet", pa.table({
        "label": pa.array([r[0] for r in LABELS], pa.int32()), "name": [r[1] for r in LABELS],
        "key": [f"{r[1]}.n.01" for r in LABELS], "synsets": [[f"{r[1]}.n.01"] for r in LABELS],
        "hashtags": [r[2] for r in LABELS], "images": pa.array([r[3] for r in LABELS], pa.int64())}))
    _write_parts(vocab / "hashtag_map.parquet", pa.table({
        "hashtag": [h for r in LABELS for h in r[2]],
        "label": pa.array([r[0] for r in LABELS for _ in r[2]], pa.int32())}))
    # the kept rows: dog0 once (with its blah_blah), x1 dropped (no hashtags), x2 normalized to nothing
    kept = [(i, _hashtags(name, int(i[len(name):]))) for i, name, _, _ in images] + [("x2", [])]
    kept[0] = ("dog0", ["blah_blah", "dog"])
    _write_parts(vocab / "image_hashtags.parquet", pa.table({"image_id": [k for k, _ in kept],
                                                             "hashtags": [h for _, h in kept]}))
    _write_stats(vocab, {"rows_read": 80, "rows_kept": 77, "rows_dropped": {"no_hashtags": 2, "duplicate_image_id": 1},
                         "distinct_hashtags": 8, "hashtags_dropped": {"below_min_count": 13, "no_synsets": 11},
                         "hashtags_kept": 6})
    f = {label: n for label, _, _, n in LABELS}
    labeled = d / "labeled"
    _write_parts(labeled / "labeled.parquet", schemas.with_class_count(pa.table({
        "image_id": [i for i, *_ in images], "image": [f"/img/{i}.png" for i, *_ in images],
        "labels": pa.array([[label] for _, _, label, _ in images], pa.list_(pa.int32())),
        "importance": [f[label] ** -0.5 for _, _, label, _ in images],
        "tail": [f[label] < T for _, _, label, _ in images]}), len(LABELS), str(vocab)))
    _write_stats(labeled, {"rows_read": 80, "rows_kept": 77, "rows_dropped": {"no_label": 3},
                           "config": {"tail_threshold": T}})
    rows = []  # label L: AFTER[L][0] samples cycling over its first AFTER[L][1] images
    for label, name, _, _ in LABELS:
        n, uniq = AFTER[label]
        rows += [(f"{name}{k % uniq}", label) for k in range(n)]
    samples = d / "samples"
    _write_parts(samples / "samples.parquet", schemas.with_class_count(pa.table({
        "position": pa.array(range(len(rows)), pa.int64()), "image_id": [r[0] for r in rows],
        "image": [f"/img/{r[0]}.png" for r in rows], "labels": pa.array([[r[1]] for r in rows], pa.list_(pa.int32())),
        "tail": [f[r[1]] < T for r in rows]}), len(LABELS), str(vocab)))
    _write_stats(samples, {"samples": len(rows), "config": {"alpha": ALPHA, "strategy": "importance"}})
    args = ["--manifest", str(d / "manifest.parquet"), "--vocab", str(vocab), "--labeled", str(labeled),
            "--samples", str(samples), "--threads", "1"]
    return tmp_path, args


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_report_writes_card_with_the_numbers_put_in(toy):
    tmp_path, args = toy
    out = tmp_path / "card"
    result = main(args + ["--out", str(out)])  # alpha and t come from the stages' stats.json

    for name in card.FIGURES.values():
        w, h = _png_size(out / name)
        assert w >= 600 and h >= 400 and (out / name).stat().st_size > 10_000
    assert sorted(p.name for p in out.iterdir()) == sorted([*card.FIGURES.values(), "dataset_card.md"])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".card")]  # temp dir renamed away
    md = (out / "dataset_card.md").read_text()

    # raw hashtags: dog (40, the duplicate row not counted twice), dogs 10, cat 20, bird 10, fish 5,
    # frog 2, zzz 11 (first three images of cat, bird, fish; both frogs), blah_blah 1 -> 8 distinct
    assert "8 distinct normalized hashtags merge into 5 canonical labels" in md
    assert "3 labels are used by fewer than t = 15 images" in md
    assert "| 0 | dog | 40 | dog (40), dogs (10) | dog.n.01 |" in md
    assert "| 4 | frog | 2 | frog (2) | frog.n.01 |" in md
    for row in ["| ingest | images_without_keywords | 9 |", "| ingest | skipped.corrupt | 4 |",
                "| vocab rows | no_hashtags | 2 |", "| vocab rows | duplicate_image_id | 1 |",
                "| vocab hashtags | below_min_count | 13 |", "| vocab hashtags | no_synsets | 11 |",
                "| label rows | no_label | 3 |", "| label rows | kept | 77 |"]:
        assert row in md, row
    assert "123456" not in md  # ingest config is not a count
    assert "| head | 60 |" in md and "| tail | 17 |" in md  # labeled images per split

    # splits by hand: head = dog + cat samples, unique = distinct images drawn
    head, tail = 30 + 30, 20 + 12 + 8
    head_u, tail_u = 25 + 20, 10 + 5 + 2
    total = head + tail
    assert (f"| head | {head} | {head / total:.2%} | {ALPHA:.2%} | {60 / 77:.2%} | {head_u} | "
            f"{head / head_u:.3f} |") in md
    assert (f"| tail | {tail} | {tail / total:.2%} | {1 - ALPHA:.2%} | {17 / 77:.2%} | {tail_u} | "
            f"{tail / tail_u:.3f} |") in md

    # top label dog: 40 of 77 label occurrences before, 30 of 100 after
    before, after = 40 / 77, 30 / 100
    assert f"{before:.2%} of label occurrences before resampling, {after:.2%} after" in md
    assert f"before/after = **{before / after:.2f}** (flatter)" in md
    assert result["shift"]["top_share_ratio"] == pytest.approx(before / after)
    # tail labels bird, fish, frog: 17 of 77 images before, 40 of 100 samples after
    assert f"Tail labels (fewer than t = 15 images): {17 / 77:.2%} of label occurrences before, 40.00% after" in md
    for name in card.FIGURES.values():
        assert f"]({name})" in md  # relative links


def test_report_flags_override_and_warn(toy):
    tmp_path, args = toy
    out = tmp_path / "card"
    main(args + ["--out", str(out), "--alpha", "0.5", "--tail-threshold", "3"])
    md = (out / "dataset_card.md").read_text()
    assert "Warning: --alpha 0.5 differs from the 0.6" in md
    assert "Warning: --tail-threshold 3 differs from the 15" in md
    assert "1 labels are used by fewer than t = 3 images" in md  # only frog (2)
    assert f"| head | 60 | 60.00% | 50.00% |" in md
    main(args + ["--out", str(out)])  # a rerun replaces the previous card
    assert "Warning" not in (out / "dataset_card.md").read_text()


def test_missing_inputs_are_named(toy, capsys):
    tmp_path, args = toy
    bad = list(args)
    bad[bad.index("--samples") + 1] = str(tmp_path / "nope")
    with pytest.raises(SystemExit):
        main(bad + ["--out", str(tmp_path / "card")])
    assert f"--samples {tmp_path / 'nope'}: no such directory" in capsys.readouterr().err
    (tmp_path / "data" / "labeled" / "stats.json").unlink()
    with pytest.raises(SystemExit):
        main(args + ["--out", str(tmp_path / "card")])
    assert f"missing {tmp_path / 'data' / 'labeled' / 'stats.json'}" in capsys.readouterr().err
    assert not (tmp_path / "card").exists()


def test_counts_come_from_the_vocab_table_not_the_manifest(toy):
    """The manifest is only counted: hashtags are the vocab job's (image_hashtags.parquet), so a
    manifest with other tags (captions here) cannot make the card disagree with the vocabulary."""
    tmp_path, args = toy
    m = tmp_path / "captions.jsonl"
    rows = [{"image_id": f"c{i}", "image": f"/c{i}.png", "caption": f"a #Dog with a #cat{'s' * (i % 2)} #Dog"}
            for i in range(6)]
    m.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    a = list(args)
    a[a.index("--manifest") + 1] = str(m)
    main(a + ["--out", str(tmp_path / "card")])
    md = (tmp_path / "card" / "dataset_card.md").read_text()
    assert "8 distinct normalized hashtags merge into 5 canonical labels" in md
    assert "| 0 | dog | 40 | dog (40), dogs (10) | dog.n.01 |" in md
    assert f"| manifest | {m.resolve()} | 6 |" in md


def test_class_count_that_disagrees_with_the_vocabulary_is_refused(toy):
    tmp_path, args = toy
    samples = tmp_path / "data" / "samples" / "samples.parquet"
    for part in samples.iterdir():  # the samples say 6 classes, the vocabulary has 5 labels
        t = pq.read_table(part)
        pq.write_table(schemas.with_class_count(t.replace_schema_metadata(None), 6, "other/vocab"), part)
    with pytest.raises(ValueError, match=rf"{samples} records 6 classes \(from the vocabulary other/vocab\) but "
                                         rf"the vocabulary {tmp_path / 'data' / 'vocab' / 'vocab.parquet'} has 5"):
        main(args + ["--out", str(tmp_path / "card")])
    for part in samples.iterdir():  # no class count at all
        pq.write_table(pq.read_table(part).replace_schema_metadata(None), part)
    with pytest.raises(ValueError, match="records no class count"):
        main(args + ["--out", str(tmp_path / "card")])
    assert not (tmp_path / "card").exists()


# --- pure helpers against hand computations ---------------------------------------------------

def test_rank_frequency_and_scaling():
    assert card.rank_frequency({"a": 3, "b": 0, "c": 7}).tolist() == [7, 3]
    assert card.rank_frequency(np.array([1, 5, 2])).tolist() == [5, 2, 1]
    with pytest.raises(ValueError):
        card.rank_frequency([1, -1])
    assert card.scaled_to_total([1, 3], 8).tolist() == [2.0, 6.0]
    with pytest.raises(ValueError):
        card.scaled_to_total([0, 0], 8)


def test_log_spaced_ranks():
    assert card.log_spaced_ranks(10).tolist() == list(range(10))
    idx = card.log_spaced_ranks(1_000_000, max_points=100)
    assert idx[0] == 0 and idx[-1] == 999_999 and len(idx) <= 100
    assert np.all(np.diff(idx) > 0)


def test_label_shift_by_hand():
    s = card.label_shift({0: 6, 1: 3, 2: 1}, {0: 2, 1: 2, 2: 1}, top=2)
    assert s["top_label"] == 0
    assert s["top_share_before"] == pytest.approx(0.6) and s["top_share_after"] == pytest.approx(0.4)
    assert s["top_share_ratio"] == pytest.approx(1.5)
    assert s["top_k_share_before"] == pytest.approx(0.9) and s["top_k_share_after"] == pytest.approx(0.8)
    assert s["spread_before"] == pytest.approx(2.0) and s["spread_after"] == pytest.approx(1.0)
    assert s["never_sampled"] == 0 and s["tail_share_before"] is None
    s = card.label_shift({0: 6, 1: 3, 2: 1}, {0: 2, 1: 2, 2: 1}, tail_threshold=4)  # tail labels: 1, 2
    assert s["tail_share_before"] == pytest.approx(0.4) and s["tail_share_after"] == pytest.approx(0.6)
    assert card.label_shift({0: 6, 1: 3, 2: 1}, {0: 4})["never_sampled"] == 2
    with pytest.raises(ValueError, match="absent from the labeled table"):
        card.label_shift({0: 1}, {0: 1, 9: 1})


def test_split_summary_by_hand():
    s = card.split_summary({"tail": 3, "head": 7}, {"head": 5, "tail": 3}, 0.7, {"head": 1, "tail": 3})
    assert list(s) == ["head", "tail"]
    assert s["head"] == {"samples": 7, "share": 0.7, "expected_share": 0.7, "natural_share": 0.25,
                         "unique_images": 5, "duplication_factor": 1.4}
    assert s["tail"]["duplication_factor"] == 1.0 and s["tail"]["expected_share"] == pytest.approx(0.3)
    s = card.split_summary({"head": 4, "tail": 0}, {"head": 4}, None)
    assert s["head"]["expected_share"] is None and s["tail"]["duplication_factor"] is None


def test_flatten_and_stage_counts():
    assert card.flatten_counts({"config": {"x": 1}, "a": 1, "b": {"c": 2, "d": True, "e": "s"}}) == {"a": 1, "b.c": 2}
    stages = card.stage_counts({"rows_read": 5, "rows_dropped": {"no_hashtags": 1}, "rows_kept": 4},
                               {"rows_dropped": {"no_label": 2}}, None)
    assert stages == {"vocab rows": {"read": 5, "no_hashtags": 1, "kept": 4}, "label rows": {"no_label": 2}}


def test_resolve_parameters():
    samples, labeled = {"config": {"alpha": 0.7, "strategy": "importance"}}, {"config": {"tail_threshold": 100}}
    assert card.resolve_parameters(None, None, samples, labeled) == (0.7, 100, ())
    alpha, t, notes = card.resolve_parameters(0.5, 100, samples, labeled)
    assert (alpha, t) == (0.5, 100) and len(notes) == 1 and "0.5" in notes[0]
    uniform = {"config": {"alpha": 0.7, "strategy": "uniform"}}
    assert card.resolve_parameters(None, None, uniform, labeled) == (None, 100, ())
    with pytest.raises(ValueError, match="--tail-threshold"):
        card.resolve_parameters(None, None, samples, {})


def test_metaclip_index_card_by_hand(toy):
    """A MetaCLIP-balanced index with T = 10: dog (40 images) and cat (20) keep 10 each, bird, fish
    and frog (under T) all theirs, each image once; stats.json's per-epoch draws shown as a table."""
    tmp_path, args = toy
    samples = tmp_path / "data" / "samples"
    kept = [(f"{name}{i}", label) for label, name, _, f in LABELS for i in range(min(f, 10))]  # 37 images
    for part in (samples / "samples.parquet").iterdir():
        part.unlink()
    (samples / "samples.parquet").rmdir()
    _write_parts(samples / "samples.parquet", schemas.with_class_count(pa.table({
        "position": pa.array(range(len(kept)), pa.int64()), "image_id": [k for k, _ in kept],
        "image": [f"/img/{k}.png" for k, _ in kept], "labels": pa.array([[lb] for _, lb in kept], pa.list_(pa.int32())),
        "tail": [lb >= 2 for _, lb in kept]}), len(LABELS), str(tmp_path / "data" / "vocab")))
    epochs = [{"seed": 0, "samples": 37, "expected_samples": 37.0, "label_samples": [10, 10, 10, 5, 2]},
              {"seed": 99, "samples": 36, "expected_samples": 37.0, "label_samples": [8, 11, 10, 5, 2]}]
    _write_stats(samples, {"samples": 37, "config": {"alpha": 0.7, "strategy": "metaclip", "cap": 10},
                           "metaclip": {"cap": 10, "label_images": [40, 20, 10, 5, 2], "epochs": epochs}})
    main(args + ["--out", str(tmp_path / "card")])
    md = (tmp_path / "card" / "dataset_card.md").read_text()
    assert "MetaCLIP balancing, cap T = 10" in md and "3 labels have f >= T" in md  # dog, cat, bird
    assert "this strategy draws hashtags" not in md and "Warning" not in md  # alpha is not the card's business
    assert "| 0 | 0 | 37 | 37.000 | 10.000 |" in md
    assert f"| 1 | 99 | 36 | 37.000 | {29 / 3:.3f} |" in md
    # dog: 40 of 77 occurrences before, 10 of 37 after; head (dog, cat) 20 samples, each image once
    assert f"{40 / 77:.2%} of label occurrences before resampling, {10 / 37:.2%} after" in md
    assert f"| head | 20 | {20 / 37:.2%} | n/a | {60 / 77:.2%} | 20 | 1.000 |" in md
    assert f"| tail | 17 | {17 / 37:.2%} | n/a | {17 / 77:.2%} | 17 | 1.000 |" in md
