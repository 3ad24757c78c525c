"""jobs/dedup.py on synthetic drawings: planted copies found, nothing else, bad images counted."""
import io
import json
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

import schemas
from jobs import dedup as dedup_job
from jobs.lib.config import parse_config
from tests.helpers.images import drawing


def _write(im: Image.Image, path, fmt="PNG", **kw) -> str:
    im.save(path, fmt, **kw)
    return str(path)


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    root = tmp_path_factory.mktemp("dedup")
    folder = root / "eval_dir" / "sub"
    folder.mkdir(parents=True)
    originals = {f"sub/e{i}.png": drawing(100 + i, size=(240, 180)) for i in range(6)}
    for name, im in originals.items():
        _write(im, root / "eval_dir" / name)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    extra = root / "extra.jsonl"
    _write(drawing(200), root / "x0.png")
    extra.write_text(json.dumps({"image_id": "x0", "image": str(root / "x0.png")}) + "\n"
                     + json.dumps({"image_id": "x1", "image": str(root / "gone.png")}) + "\n")

    pre, expected = [], set()
    for i in range(4):
        im = originals[f"sub/e{i}.png"]
        w, h = im.size
        copies = {"resize": im.resize((w // 2, h // 2)), "crop": im.crop((10, 0, w - 6, h - 12)),
                  "flip": im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)}
        for how, c in copies.items():
            pre.append((f"p/{how}{i}", _write(c, root / f"{how}{i}.png")))
            expected.add((f"p/{how}{i}", "eval_dir", f"sub/e{i}.png"))
        pre.append((f"p/jpeg{i}", _write(im, root / f"jpeg{i}.jpg", "JPEG", quality=70)))
        expected.add((f"p/jpeg{i}", "eval_dir", f"sub/e{i}.png"))
    im = drawing(200).resize((120, 90))
    pre.append(("p/x0small", _write(im, root / "x0small.png")))
    expected.add(("p/x0small", "extra", "x0"))
    for i in range(12):
        pre.append((f"p/other{i}", _write(drawing(300 + i), root / f"other{i}.png")))
    pre.append(("p/missing", str(root / "nowhere.png")))
    (root / "page.jpg").write_text("<html>404</html>")
    pre.append(("p/html", str(root / "page.jpg")))
    table = pa.table({"image_id": [p[0] for p in pre], "image": [p[1] for p in pre],
                      "hashtags": [["tag"]] * len(pre), "extra_col": list(range(len(pre)))})
    pq.write_table(table, root / "manifest.parquet")
    return root, table, expected


# a randomly initialised ResNet-18 (nothing is downloaded): weak, but its embeddings of re-encoded,
# resized copies, and cropped ones at the pHash crop grid, stay within 0.02 of the original here
METHOD_FLAGS = {"phash": ["--search-k", "4096", "--neighbours", "7", "--inspect", "4"],  # every variant read: exact lists
                "embedding": ["--method", "embedding", "--model", "random:resnet18", "--img-size", "64",
                              "--threshold", "0.02", "--crop-steps", "3"],
                # R-MAC of the same trunk at 96 px (3x3 feature map), not centred: distances are small
                "rmac": ["--method", "rmac", "--model", "random:resnet18", "--img-size", "96", "--threshold", "0.01",
                         "--crop-steps", "3"]}


@pytest.mark.parametrize("method", sorted(METHOD_FLAGS))
def test_dedup_finds_planted_copies_and_counts_bad_images(spark, case, method):
    root, table, expected = case
    out = root / f"out_{method}"
    argv = ["--manifest", str(root / "manifest.parquet"), "--eval", str(root / "eval_dir"),
            "--eval", str(root / "extra.jsonl"), "--out", str(out), *METHOD_FLAGS[method]]
    cfg = parse_config(dedup_job.DedupConfig, dedup_job.merge_repeated(argv, "--eval"), "test")
    assert cfg.eval == (str(root / "eval_dir"), str(root / "extra.jsonl"))
    stats = dedup_job.run(spark, cfg)
    assert stats["method"]["name"] == method

    dups = pq.read_table(out / "duplicates.parquet")
    schemas.check_schema(dups.schema, schemas.DUPLICATES, "duplicates.parquet")
    rows = dups.to_pylist()
    assert {(r["pretrain_id"], r["eval_set"], r["eval_id"]) for r in rows} == expected
    assert all(r["distance"] <= cfg.threshold for r in rows)
    assert all(r["correlation"] >= cfg.min_correlation for r in rows)
    pc = stats["pair_check"]
    assert pc["pairs_within_threshold"] - pc["rejected"] == len(rows) and pc["unreadable_on_recheck"] == 0
    by_id = {r["pretrain_id"]: r for r in rows}
    assert all(by_id[f"p/flip{i}"]["flipped"] for i in range(4))
    assert not any(by_id[f"p/{h}{i}"]["flipped"] for h in ("resize", "jpeg") for i in range(4))

    kept = pq.read_table(out / "manifest.parquet")
    assert kept.schema.names == table.schema.names
    removed = {p for p, _, _ in expected}
    assert sorted(kept.column("image_id").to_pylist()) == sorted(set(table.column("image_id").to_pylist()) - removed)
    assert stats["rows_out"] == table.num_rows - len(removed)

    assert stats["pretrain"]["unreadable"] == {"missing_file": 1, "undecodable": 1}
    assert stats["eval"]["eval_dir"]["images"] == 7
    assert stats["eval"]["eval_dir"]["unreadable"] == {"undecodable": 1}
    assert stats["eval"]["extra"]["unreadable"] == {"missing_file": 1}
    assert stats["matches"]["pretrain_images_removed"] == len(removed)
    assert stats["matches"]["flipped_pairs"] == 4
    n_ok = table.num_rows - 2
    assert stats["pretrain"]["described"] == n_ok
    assert stats["index"]["images"] == 6 + 1 and stats["index"]["type"] == "flat"
    # every readable pretraining image reports its nearest evaluation images, at least one, up to --probe
    assert n_ok <= stats["neighbour_pairs"] <= n_ok * cfg.probe

    assert json.loads((out / "stats.json").read_text())["index"] == stats["index"]
    report = (out / "report.md").read_text()
    assert f"pretraining images removed: {len(removed)}" in report and "contact_sheet.png" in report
    sheet = Image.open(io.BytesIO((out / "contact_sheet.png").read_bytes()))
    assert sheet.size[0] > 600 and sheet.size[1] > 100
    if method == "phash":
        check_neighbour_lists_and_sheets(root, table, out, cfg, stats)


def test_bad_configs_are_refused(case, capsys):
    """Each bad value exits with argparse's status 2 and a message naming the option and value."""
    root, _, _ = case
    base = ["--manifest", str(root / "manifest.parquet"), "--eval", str(root / "eval_dir"), "--out", str(root / "o")]
    emb = ["--method", "embedding", "--model", "random:regnety_002"]
    cases = [
        (["--method", "embedding"], r"--method embedding needs --model"),
        (["--threshold", "40"], r"--threshold must be a whole number of bits .* got 40"),
        (["--index", "ivf"], r"--index ivf .*unknown index 'ivf'"),
        (["--probe", "100"], r"--probe 100 must be <= --search-k 64"),
        (["--neighbours", "0"], r"--neighbours must be >= 1, got 0"),
        (["--whiten"], r"--whiten is for --method rmac"),
        (["--max-crop", "0.6"], r"--max-crop 0\.6 --crop-steps 3: .*max_crop in \[0, 0\.5\)"),
        (["--threshold", "2.5"], r"--threshold must be a whole number of bits .* got 2\.5"),
        (["--model", "random:regnety_002"], r"--model is for --method embedding or rmac"),
        (emb + ["--threshold", "1.5"], r"--threshold is a cosine distance .* got 1\.5"),
        (emb + ["--whiten"], r"--whiten / --whiten-dim are for --method rmac"),
        (["--method", "rmac", "--model", "random:resnet18", "--rmac-levels", "9"], r"--rmac-levels must be in \[1, 6\], got 9"),
        (["--method", "rmac"], r"--method rmac needs --model"),
        (["--method", "sift"], r"unknown --method 'sift'"),
        (["--min-correlation", "1.5"], r"--min-correlation must be in \[-1, 1\], got 1\.5"),
    ]
    for extra, message in cases:
        with pytest.raises(SystemExit) as e:
            parse_config(dedup_job.DedupConfig, base + extra, "test")
        err = capsys.readouterr().err
        assert e.value.code == 2 and re.search(r"error: " + message, err), (extra, err)
    parse_config(dedup_job.DedupConfig, base, "test")  # the base itself is fine


def test_merge_repeated():
    assert dedup_job.merge_repeated(["--eval", "a", "--out", "o", "--eval=b"], "--eval") == ["--out", "o", "--eval", "a,b"]



def check_neighbour_lists_and_sheets(root, table, out, cfg, stats):
    """With every evaluation variant read per query (--search-k above their count), each
    evaluation image's list in neighbours.parquet is exactly its k nearest pretraining images by
    the minimum Hamming distance over its variants, computed here image by image."""
    from pipeline.image_reader import read_image
    from pipeline.images import ImageRejected
    from dedup.phash import crop_grid, decode_jpeg_roundtrip, hamming, low_information, phash_pair, variant_hashes

    k = cfg.neighbours

    def readable(path):
        try:
            rgb = decode_jpeg_roundtrip(read_image(path))
        except ImageRejected:
            return None
        return None if low_information(phash_pair(rgb)[0]) else rgb

    crops = crop_grid(cfg.max_crop, cfg.crop_steps)
    pre = {}
    for r in table.to_pylist():
        rgb = readable(r["image"])
        if rgb is not None:
            pre[r["image_id"]] = phash_pair(rgb)[0]
    want = {}
    for p in sorted((root / "eval_dir").rglob("*.png")):  # the other --eval source's images are not checked
        rgb = readable(str(p))
        if rgb is None:
            continue
        hashes = [h for _, _, h in variant_hashes(rgb, crops, True)]
        dist = sorted((min(hamming(h, g) for g in hashes), pid) for pid, h in pre.items())
        want[p.relative_to(root / "eval_dir").as_posix()] = dist[:k]
    nb = pq.read_table(out / "neighbours.parquet")
    schemas.check_schema(nb.schema, schemas.NEIGHBOURS, "neighbours.parquet")
    got = {}
    for r in nb.to_pylist():
        if r["eval_set"] == "eval_dir":
            got.setdefault(r["eval_id"], []).append((r["rank"], r["distance"], r["pretrain_id"], r["matched"]))
    assert set(got) == set(want)
    dups = {(r["pretrain_id"], r["eval_id"]) for r in pq.read_table(out / "duplicates.parquet").to_pylist()
            if r["eval_set"] == "eval_dir"}
    for e, rows in got.items():
        assert [r[0] for r in rows] == list(range(1, k + 1))
        assert [(int(d), p) for _, d, p, _ in sorted(rows)] == want[e], e
        assert all(m == ((p, e) in dups) for _, _, p, m in rows)
    assert stats["neighbours"] == {"rows": (len(want) + 1) * k, "eval_images": len(want) + 1}  # + extra.jsonl's x0

    sheets = sorted((out / "inspect").glob("*.png"))
    assert len(sheets) == 4
    report = (out / "report.md").read_text()
    for s in sheets:
        assert f"inspect/{s.name}" in report
        im = Image.open(s)
        assert im.size[0] > 6 * 100 and im.size[1] > 2 * 100  # the evaluation image + 7 neighbours: 2 rows of 6 cells
