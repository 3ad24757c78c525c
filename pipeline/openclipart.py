"""The openclipart corpus as a hashtag manifest: SVG keywords and text, categories, a seeded held-out split.

Debian's openclipart-png / openclipart-svg lay the corpus out as ROOT/png/<category>/.../<name>.png
with an SVG twin at ROOT/svg/<same path>.svg whose Dublin Core metadata (the RDF block) holds the
authors' keywords (dc:subject) and each picture's title and description (dc:title,
dc:description): the image's text, for image-text training (LiT, Zhai et al. 2022, as MAWS uses).
Debian deduplicates identical PNGs with symlinks (1221 of 8121 in openclipart 0.18), often across
categories: every PNG path stays a row, but the held-out split is keyed on the file
a link resolves to, so copies of one picture never straddle pretraining and held-out.
"""
from __future__ import annotations

import hashlib
import html.entities
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterator

# Regexes, not an XML parser: no entity or DTD is ever resolved, and the many SVGs that lack
# namespace declarations still yield their keywords.
_SUBJECT = re.compile(r"<dc:subject\b[^>]*?(?:/>|>(.*?)</dc:subject\s*>)", re.S)
_LI = re.compile(r"<rdf:li\b[^>]*?(?:/>|>(.*?)</rdf:li\s*>)", re.S)
_COMMENT = re.compile(r"<!--.*?-->", re.S)
_CDATA = re.compile(r"<!\[CDATA\[(.*?)\]\]>", re.S)
_TAG = re.compile(r"<[^>]*>")
_REF = re.compile(r"&(?:#([0-9]+)|#[xX]([0-9a-fA-F]+)|(amp|lt|gt|quot|apos));")
_PREDEFINED = {"amp": "&", "lt": "<", "gt": ">", "quot": '"', "apos": "'"}
_SEPARATOR = re.compile(r"[,;]")
_REFERENCE_BEFORE = re.compile(r"&#?[A-Za-z0-9_][\w.-]*\Z")
_ESCAPED_ENTITY_BEFORE = re.compile(r"&amp;([A-Za-z][A-Za-z0-9]*)\Z")
_XML_DECL = re.compile(rb"""^<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")
_WHITESPACE = re.compile(r"\s+")
# Comments and CDATA sections in one left-to-right scan, so neither is read inside the other.
_COMMENT_OR_CDATA = re.compile(r"<!--.*?-->|<!\[CDATA\[(.*?)\]\]>", re.S)
# A cc:Agent (creator, publisher, rights holder) names itself with a dc:title: not the picture's.
_AGENT = re.compile(r"<cc:Agent(?=[\s/>])[^>]*?(?:/>|>.*?</cc:Agent\s*>)", re.S)
_DC_TEXT = {name: re.compile(rf"<dc:{name}(?=[\s/>])[^>]*?(?:/>|>(.*?)</dc:{name}\s*>)", re.S)
            for name in ("title", "description")}
PLACEHOLDER_KEYWORD = "unsorted"
UNSORTED_CATEGORY = "unsorted"  # the corpus' catch-all folder: no usable label for evaluation
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _xml_unescape(s: str) -> str:
    """One pass over the predefined entities and character references; others stay as text."""
    def sub(m: re.Match) -> str:
        if m.group(3):
            return _PREDEFINED[m.group(3)]
        code = int(m.group(1)) if m.group(1) else int(m.group(2), 16)
        ok = 0 < code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF
        return chr(code) if ok else m.group(0)
    return _REF.sub(sub, s)


def _split(raw: str) -> list[str]:
    """Split escaped text on ',' and ';', except a ';' that ends an entity or character
    reference, or an HTML entity some authors escaped twice (`&amp;eacute;`)."""
    parts, start = [], 0
    for m in _SEPARATOR.finditer(raw):
        if m.group() == ";":
            before = raw[max(start, m.start() - 40):m.start()]
            if _REFERENCE_BEFORE.search(before):
                continue
            e = _ESCAPED_ENTITY_BEFORE.search(before)
            if e and e.group(1) + ";" in html.entities.html5:
                continue
        parts.append(raw[start:m.start()])
        start = m.end()
    parts.append(raw[start:])
    return parts


def _raw_text(fragment: str) -> str:
    """Character data of a comment-free fragment, still escaped: tags dropped, CDATA escaped."""
    fragment = _CDATA.sub(lambda m: m.group(1).replace("&", "&amp;").replace("<", "&lt;"), fragment)
    return _TAG.sub(" ", fragment)


def svg_keywords(svg_text: str) -> list[str]:
    """The dc:subject keywords of an SVG, in document order.

    Each rdf:li (or, without any, the subject's plain text) is split on ',' and ';' (never inside
    an entity reference), XML-unescaped once (unknown entities stay as text, unresolved),
    stripped with inner whitespace runs collapsed to one space; empties, the placeholder
    `unsorted` (any case) and exact repeats are dropped. No dc:subject -> [].
    """
    out: list[str] = []
    seen: set[str] = set()
    for subject in _SUBJECT.finditer(svg_text):
        body = _COMMENT.sub("", subject.group(1) or "")
        items = [li.group(1) or "" for li in _LI.finditer(body)] if "<rdf:li" in body else [body]
        for item in items:
            for piece in _split(_raw_text(item)):
                kw = _WHITESPACE.sub(" ", _xml_unescape(piece)).strip()
                if kw and kw.casefold() != PLACEHOLDER_KEYWORD and kw not in seen:
                    seen.add(kw)
                    out.append(kw)
    return out


def svg_text(svg_text: str) -> str:
    """An SVG's text: its first dc:title, then its first dc:description, joined by ". " (by " "
    when the title already ends in '.', '!' or '?'); a description equal to the title (casefold)
    is dropped; either may be missing; neither -> "".

    Read as svg_keywords reads keywords: regexes, no XML parser. Comments are dropped and CDATA
    kept as text; dc:title elements inside a cc:Agent (an author's name) are skipped; an element
    wrapping rdf:li items (an rdf:Alt of languages) reads as its first item. The text is
    XML-unescaped once (unknown entities stay as text), tags inside it dropped, whitespace runs
    collapsed to one space; anything else (URLs, escaped markup) is kept as the author wrote it.
    """
    doc = _COMMENT_OR_CDATA.sub(
        lambda m: "" if m.group(1) is None else m.group(1).replace("&", "&amp;").replace("<", "&lt;"), svg_text)
    doc = _AGENT.sub(" ", doc)
    title, description = (_dc_text(doc, name) for name in ("title", "description"))
    if description.casefold() == title.casefold():
        description = ""
    if not (title and description):
        return title or description
    return f"{title}{' ' if title.endswith(('.', '!', '?')) else '. '}{description}"


def _dc_text(doc: str, name: str) -> str:
    """The text of the first dc:<name> element of a comment- and CDATA-free document, or ""."""
    m = _DC_TEXT[name].search(doc)
    body = (m.group(1) or "") if m else ""
    if "<rdf:li" in body:
        li = _LI.search(body)
        body = (li.group(1) or "") if li else ""
    return _WHITESPACE.sub(" ", _xml_unescape(_TAG.sub(" ", body))).strip()


def decode_svg(data: bytes) -> str:
    """SVG bytes as text: BOM, else the XML declaration's encoding, else UTF-8 (strict).

    Raises UnicodeDecodeError or LookupError (unknown encoding) for text that cannot be read.
    """
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    m = _XML_DECL.match(data[:256])
    return data.decode(m.group(1).decode("ascii") if m else "utf-8")


def category(relpath: str | os.PathLike) -> str:
    """The top-level folder of a path relative to png/ (`animals/cats/x.png` -> `animals`)."""
    parts = PurePosixPath(Path(relpath).as_posix()).parts
    if len(parts) < 2 or parts[0] in ("/", "..", "."):
        raise ValueError(f"{relpath!s}: not a relative path inside a category folder")
    return parts[0]


def is_heldout(image_id: str, share: float, seed: int) -> bool:
    """True for about `share` of ids: the first 53 bits of sha256(f"{seed}:{image_id}") (big-endian)
    as a fraction in [0, 1), compared with `share`. Depends on nothing but its arguments."""
    if not 0.0 <= share < 1.0:
        raise ValueError(f"held-out share must be in [0, 1), got {share}")
    digest = hashlib.sha256(f"{seed}:{image_id}".encode("utf-8")).digest()
    return (int.from_bytes(digest[:8], "big") >> 11) / 2.0**53 < share


@dataclass(frozen=True)
class Corpus:
    """Rows sorted by image_id. Each row has the manifest columns plus `canonical_id`: the
    image_id of the file a PNG symlink resolves to (its own image_id when it is no link)."""
    rows: list[dict]
    png_files: int
    png_symlinks: int
    skipped: dict[str, int] = field(default_factory=dict)
    ignored_files: int = 0  # files in png/ not named *.png


def _canonical_id(png: Path, png_root: Path) -> str:
    target = Path(os.path.realpath(png))
    try:
        return target.relative_to(os.path.realpath(png_root)).with_suffix("").as_posix()
    except ValueError:  # a link out of the corpus: its target path is its identity
        return str(target)


def _walk(png_root: Path) -> Iterator[Path]:
    for d, dirs, files in os.walk(png_root):  # links to directories are not followed
        dirs.sort()
        for f in sorted(files):
            yield Path(d) / f


def scan_corpus(root: str | os.PathLike) -> Corpus:
    """Every PNG under ROOT/png with its twin's keywords and text (svg_text); PNGs that cannot be
    used are counted in `skipped` by reason (missing_svg, unreadable_svg, no_category, broken_png_link,
    unreadable_png, not_a_png). Images without keywords are kept with an empty list, images without
    text with ""."""
    root = Path(os.path.abspath(root))
    png_root, svg_root = root / "png", root / "svg"
    rows, skipped = [], Counter()
    png_files = links = ignored = 0
    for png in _walk(png_root):
        if png.suffix.lower() != ".png":
            ignored += 1
            continue
        png_files += 1
        rel = png.relative_to(png_root)
        links += png.is_symlink()
        reason = _png_problem(png)
        try:
            cat = category(rel)
        except ValueError:
            reason = reason or "no_category"
        svg = (svg_root / rel).with_suffix(".svg")
        if not reason and not os.path.lexists(svg):
            reason = "missing_svg"
        if not reason:
            try:
                svg_source = decode_svg(svg.read_bytes())
            except (OSError, UnicodeDecodeError, LookupError):
                reason = "unreadable_svg"
        if reason:
            skipped[reason] += 1
            continue
        image_id = rel.with_suffix("").as_posix()
        rows.append({"image_id": image_id, "image": str(png), "hashtags": svg_keywords(svg_source),
                     "category": cat, "text": svg_text(svg_source), "canonical_id": _canonical_id(png, png_root)})
    rows.sort(key=lambda r: r["image_id"])
    return Corpus(rows, png_files, links, dict(sorted(skipped.items())), ignored)


def _png_problem(png: Path) -> str | None:
    if not png.exists():
        return "broken_png_link"
    try:
        with open(png, "rb") as f:
            head = f.read(len(PNG_SIGNATURE))
    except OSError:
        return "unreadable_png"
    return None if head == PNG_SIGNATURE else "not_a_png"


@dataclass(frozen=True)
class Split:
    pretrain: list[dict]
    heldout: list[dict]
    excluded_unsorted: int  # held out but in the `unsorted` category: in neither list


def split_rows(rows: list[dict], share: float, seed: int) -> Split:
    """Held-out rows by `is_heldout` of their `canonical_id`; held-out `unsorted` rows are
    dropped (their category is no label), not moved to pretraining. Order is kept."""
    pretrain, heldout, excluded = [], [], 0
    for r in rows:
        if not is_heldout(r["canonical_id"], share, seed):
            pretrain.append(r)
        elif r["category"] == UNSORTED_CATEGORY:
            excluded += 1
        else:
            heldout.append(r)
    return Split(pretrain, heldout, excluded)
