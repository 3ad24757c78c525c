import hashlib
import json
import os
import random
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image
from scipy.stats import binom

from jobs.ingest_openclipart import main
from pipeline.openclipart import category, decode_svg, is_heldout, svg_keywords
from schemas import OPENCLIPART_MANIFEST

REAL_ROOT = Path("/usr/share/openclipart")


def svg(subject: str, extra: str = "", title: str = "<dc:title>t</dc:title>") -> str:
    """An SVG shaped like openclipart's, with `subject` as the dc:subject body after `title`."""
    return f"""<?xml version="1.0" encoding="UTF-8"?>{extra}
<svg xmlns="http://www.w3.org/2000/svg"><metadata><rdf:RDF><cc:Work rdf:about="">
{title}{subject}
<dc:creator><cc:Agent><dc:title>Ann</dc:title></cc:Agent></dc:creator>
</cc:Work></rdf:RDF></metadata><rect width="1" height="1"/></svg>"""


def bag(*items: str) -> str:
    lis = "".join(f"\n  <rdf:li>{i}</rdf:li>" for i in items)
    return f"<dc:subject><rdf:Bag>{lis}\n</rdf:Bag></dc:subject>"


# --- svg_keywords ----------------------------------------------------------------------------

def test_rdf_li_list_in_order():
    assert svg_keywords(svg(bag("chemistry", "flask", " lab "))) == ["chemistry", "flask", "lab"]


def test_items_split_on_comma_and_semicolon():
    text = svg(bag("rome,italy", "a ; b;c", "", " , ", "big   cat"))
    assert svg_keywords(text) == ["rome", "italy", "a", "b", "c", "big cat"]


def test_unsorted_placeholder_and_exact_duplicates_dropped():
    text = svg(bag("Unsorted", "cat", "UNSORTED, dog", "cat", "Cat", "unsorted stuff"))
    assert svg_keywords(text) == ["cat", "dog", "Cat", "unsorted stuff"]
    assert svg_keywords(svg(bag("unsorted"))) == []


def test_entities_unescaped_once():
    text = svg(bag("fish &amp; chips", "&lt;b&gt;", "caf&#233;", "&#x41;B", "&amp;lt;", "&quot;q&apos;"))
    assert svg_keywords(text) == ["fish & chips", "<b>", "café", "AB", "&lt;", "\"q'"]


def test_double_escaped_html_entity_is_not_split_at_its_semicolon():
    # shapes/starwalker_wilc_.svg in openclipart 0.18 has <rdf:li>&amp;eacute;toile</rdf:li>
    assert svg_keywords(svg(bag("night", "&amp;eacute;toile"))) == ["night", "&eacute;toile"]
    assert svg_keywords(svg(bag("a&amp;b;c"))) == ["a&b", "c"]  # not an entity name: split


def test_missing_or_empty_subject():
    assert svg_keywords(svg("")) == []
    assert svg_keywords(svg("<dc:subject/>")) == []
    assert svg_keywords(svg("<dc:subject><rdf:Bag></rdf:Bag></dc:subject>")) == []
    assert svg_keywords("not an svg at all") == []


def test_plain_text_subject():
    assert svg_keywords(svg("<dc:subject>  tree, leaf;  forest </dc:subject>")) == ["tree", "leaf", "forest"]


def test_only_dc_subject_is_read():
    other = "<cc:Agent><rdf:Bag><rdf:li>NOT_A_KEYWORD</rdf:li></rdf:Bag></cc:Agent>"
    text = svg(other + bag("kept") + "<dc:description>x, y</dc:description>")
    assert svg_keywords(text) == ["kept"]


def test_several_subjects_attributes_and_comments():
    subject = ('<dc:subject xml:lang="en"><rdf:Bag><rdf:li xml:lang="en">a</rdf:li><!-- b -->'
               "<rdf:li><![CDATA[x & y]]></rdf:li></rdf:Bag></dc:subject>")
    assert svg_keywords(svg(subject + bag("a", "c"))) == ["a", "x & y", "c"]


def test_external_entities_are_never_resolved():
    dtd = '<!DOCTYPE svg [<!ENTITY xxe SYSTEM "file:///etc/hostname">]>'
    assert svg_keywords(svg(bag("&xxe;", "ok"), extra=dtd)) == ["&xxe;", "ok"]


def test_decode_svg_honours_the_declared_encoding():
    data = '<?xml version="1.0" encoding="ISO-8859-1"?><dc:subject>caf\xe9</dc:subject>'.encode("latin-1")
    assert svg_keywords(decode_svg(data)) == ["café"]
    assert decode_svg("\ufeff<svg/>".encode("utf-8")) == "<svg/>"
    with pytest.raises(UnicodeDecodeError):
        decode_svg(b"<svg>\xff\xfe\xfa</svg>")


# --- category, is_heldout --------------------------------------------------------------------

def test_category_is_the_top_level_folder():
    assert category("animals/chemistry_flask.png") == "animals"
    assert category(Path("science") / "lab" / "flask.png") == "science"
    for bad in ("flask.png", "/abs/flask.png", "../x/flask.png"):
        with pytest.raises(ValueError):
            category(bad)


def test_is_heldout_is_deterministic_and_order_free():
    ids = [f"cat/img_{i}" for i in range(2000)]
    first = {i for i in ids if is_heldout(i, 0.3, 7)}
    shuffled = ids[:]
    random.Random(1).shuffle(shuffled)
    assert {i for i in shuffled if is_heldout(i, 0.3, 7)} == first
    assert {i for i in ids if is_heldout(i, 0.3, 8)} != first  # the seed matters
    assert not any(is_heldout(i, 0.0, 7) for i in ids)


@pytest.mark.parametrize("share", [0.05, 0.2, 0.5, 0.9])
def test_is_heldout_share_within_binomial_interval(share):
    n = 10_000
    held = sum(is_heldout(f"synthetic/{i:05d}", share, 0) for i in range(n))
    lo, hi = binom.interval(0.999, n, share)
    assert lo <= held <= hi, (held, lo, hi)


@pytest.mark.parametrize("share", [-0.1, 1.0, 1.5])
def test_is_heldout_rejects_bad_share(share):
    with pytest.raises(ValueError, match="share"):
        is_heldout("a/b", share, 0)


# --- the job, end to end on a fake corpus ----------------------------------------------------

def _png(path: Path, color) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 3), color).save(path)


def _write(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))


@pytest.fixture
def fake_corpus(tmp_path) -> Path:
    root = tmp_path / "openclipart"
    png, sv = root / "png", root / "svg"
    _png(png / "animals/cat.png", "orange")
    _write(sv / "animals/cat.svg", svg(bag("cat", "pet"), title="<dc:title>Sleepy  cat</dc:title>"
                                       "<dc:description>A cat on a\n mat</dc:description>"))
    _png(png / "animals/wild/lion.png", "yellow")
    _write(sv / "animals/wild/lion.svg", svg(bag("lion, big cat;savanna"), title="<dc:title>Lion!</dc:title>"
                                             "<dc:description>King &amp; queen</dc:description>"))
    _png(png / "food/apple.png", "red")
    _write(sv / "food/apple.svg", svg(bag("apple", "Unsorted"), title="<dc:title>Apple</dc:title>"
                                      "<dc:description>apple</dc:description>"))
    _png(png / "food/bread.png", "brown")  # no SVG twin
    _png(png / "food/broken.png", "black")
    _write(sv / "food/broken.svg", b'<?xml version="1.0" encoding="UTF-8"?><svg>\xff\xfe\xfa</svg>')
    _write(png / "food/fake.png", "not a png")
    _write(sv / "food/fake.svg", svg(bag("fake")))
    _png(png / "unsorted/thing.png", "gray")
    _write(sv / "unsorted/thing.svg", svg(bag("unsorted")))
    _png(png / "unsorted/blob.png", "blue")
    _write(sv / "unsorted/blob.svg", svg("", title="<title>not dc</title>"))
    (png / "people").mkdir()
    os.symlink("../animals/cat.png", png / "people/cat_alias.png")  # Debian's dedup links
    _write(sv / "people/cat_alias.svg", svg(bag("cat", "people"), title="<dc:description>See "
                                            "http://example.org/cat</dc:description>"))
    _write(png / "animals/notes.txt", "ignored")
    os.symlink("../nowhere.png", png / "food/gone.png")  # dangling
    _png(png / "top.png", "white")  # outside any category folder
    _write(sv / "top.svg", svg(bag("top")))
    return root


def _rows(path: Path) -> list[dict]:
    table = pq.read_table(path)
    assert table.schema.equals(OPENCLIPART_MANIFEST, check_metadata=False)
    return table.to_pylist()


def test_ingest_end_to_end(fake_corpus, tmp_path, capsys):
    out = tmp_path / "out"
    # seed 10 at share 0.5 holds out animals/cat, animals/wild/lion and unsorted/thing (checked
    # independently below); people/cat_alias alone would not be held out, but follows its target.
    stats = main(["--root", str(fake_corpus), "--out", str(out), "--holdout", "0.5", "--seed", "10"])

    def frac(image_id):  # the documented hash, computed independently of the code under test
        d = hashlib.sha256(f"10:{image_id}".encode()).digest()
        return (int.from_bytes(d[:8], "big") >> 11) / 2**53
    assert [i for i in ("animals/cat", "animals/wild/lion", "food/apple", "unsorted/thing",
                        "unsorted/blob", "people/cat_alias") if frac(i) < 0.5] == \
        ["animals/cat", "animals/wild/lion", "unsorted/thing"]

    png = fake_corpus / "png"
    assert _rows(out / "manifest.parquet") == [
        {"image_id": "food/apple", "image": str(png / "food/apple.png"), "hashtags": ["apple"],
         "category": "food", "text": "Apple"},
        {"image_id": "unsorted/blob", "image": str(png / "unsorted/blob.png"), "hashtags": [],
         "category": "unsorted", "text": ""},
    ]
    assert _rows(out / "heldout.parquet") == [
        {"image_id": "animals/cat", "image": str(png / "animals/cat.png"), "hashtags": ["cat", "pet"],
         "category": "animals", "text": "Sleepy cat. A cat on a mat"},
        {"image_id": "animals/wild/lion", "image": str(png / "animals/wild/lion.png"),
         "hashtags": ["lion", "big cat", "savanna"], "category": "animals", "text": "Lion! King & queen"},
        {"image_id": "people/cat_alias", "image": str(png / "people/cat_alias.png"),
         "hashtags": ["cat", "people"], "category": "people", "text": "See http://example.org/cat"},
    ]
    on_disk = json.loads((out / "ingest_stats.json").read_text())
    assert on_disk == stats
    assert stats["png_files"] == 11 and stats["png_symlinks"] == 2
    assert stats["non_png_files_ignored"] == 1
    assert stats["rows"] == {"manifest.parquet": 2, "heldout.parquet": 3}
    assert stats["skipped"] == {"missing_svg": 1, "unreadable_svg": 1, "not_a_png": 1,
                                "broken_png_link": 1, "no_category": 1}
    assert stats["heldout_images"] == 4 and stats["heldout_unsorted_excluded"] == 1
    assert stats["images_without_keywords"] == 2  # unsorted/thing, unsorted/blob
    assert stats["images_without_text"] == 1  # unsorted/blob (unsorted/thing's title is "t")
    assert sorted(p.name for p in out.iterdir()) == ["heldout.parquet", "ingest_stats.json",
                                                     "manifest.parquet"]  # no temp files left
    assert "2 pretraining + 3 held-out" in capsys.readouterr().out


def test_no_holdout_keeps_everything_and_rerun_replaces(fake_corpus, tmp_path):
    out = tmp_path / "out"
    main(["--root", str(fake_corpus), "--out", str(out), "--holdout", "0.5", "--seed", "10"])
    stats = main(["--root", str(fake_corpus), "--out", str(out), "--holdout", "0"])
    ids = [r["image_id"] for r in _rows(out / "manifest.parquet")]
    assert ids == ["animals/cat", "animals/wild/lion", "food/apple", "people/cat_alias",
                   "unsorted/blob", "unsorted/thing"]
    assert _rows(out / "heldout.parquet") == []
    assert stats["heldout_images"] == 0 and stats["heldout_unsorted_excluded"] == 0


@pytest.mark.parametrize("missing", ["png", "svg"])
def test_root_without_png_or_svg_is_a_clear_error(tmp_path, capsys, missing):
    root = tmp_path / "corpus"
    for sub in {"png", "svg"} - {missing}:
        (root / sub).mkdir(parents=True)
    with pytest.raises(SystemExit):
        main(["--root", str(root), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert f"no {missing}/ directory" in err and str(root / missing) in err
    assert not (tmp_path / "out").exists()


def test_bad_holdout_is_rejected(fake_corpus, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--root", str(fake_corpus), "--out", str(tmp_path / "out"), "--holdout", "1"])
    assert "--holdout must be in [0, 1)" in capsys.readouterr().err


# --- the real corpus ------------------------------------------------------------------------

@pytest.mark.skipif(not (REAL_ROOT / "png").is_dir(), reason="Debian's openclipart-png is not installed")
def test_real_openclipart_corpus(tmp_path):
    t0 = time.perf_counter()
    stats = main(["--root", str(REAL_ROOT), "--out", str(tmp_path)])
    elapsed = time.perf_counter() - t0
    pngs = sum(1 for _ in (REAL_ROOT / "png").rglob("*.png"))
    manifest, heldout = _rows(tmp_path / "manifest.parquet"), _rows(tmp_path / "heldout.parquet")
    assert len(manifest) == stats["rows"]["manifest.parquet"]
    assert len(heldout) == stats["rows"]["heldout.parquet"]
    total = len(manifest) + len(heldout) + stats["heldout_unsorted_excluded"] + sum(stats["skipped"].values())
    assert total == pngs == stats["png_files"]
    rows = manifest + heldout
    with_keywords = sum(bool(r["hashtags"]) for r in rows) / len(rows)
    assert with_keywords > 0.9
    with_text = sum(bool(r["text"]) for r in manifest) / len(manifest)  # pretraining rows: LiT's pairs
    assert with_text > 0.9
    assert stats["images_without_text"] >= sum(not r["text"] for r in rows)  # + held-out unsorted
    assert {"animals", "food"} <= {r["category"] for r in rows}
    assert "unsorted" not in {r["category"] for r in heldout}
    assert not {r["image_id"] for r in manifest} & {r["image_id"] for r in heldout}
    assert [r["image_id"] for r in manifest] == sorted(r["image_id"] for r in manifest)
    print(f"real corpus: {len(manifest)} + {len(heldout)} rows, {with_keywords:.3f} with keywords, "
          f"{with_text:.3f} of pretraining rows with text, "
          f"skipped {stats['skipped']}, {elapsed:.1f} s")
