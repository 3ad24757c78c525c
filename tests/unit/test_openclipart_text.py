"""pipeline.openclipart.svg_text: an SVG's Dublin Core title and description as the image's text."""
from pathlib import Path

import pytest

from pipeline.openclipart import decode_svg, svg_text

REAL_SVG = Path("/usr/share/openclipart/svg")


def doc(work: str, before: str = "", body: str = "") -> str:
    """An SVG shaped like openclipart's: `work` is the cc:Work's metadata after its creator."""
    return f"""<?xml version="1.0" encoding="UTF-8"?>{before}
<svg xmlns="http://www.w3.org/2000/svg" xmlns:svg="http://www.w3.org/2000/svg"><metadata><rdf:RDF>
<cc:Work rdf:about=""><dc:creator><cc:Agent><dc:title>Ann Author</dc:title></cc:Agent></dc:creator>
{work}<dc:subject><rdf:Bag><rdf:li>kw</rdf:li></rdf:Bag></dc:subject>
<dc:publisher><cc:Agent rdf:about="http://www.openclipart.org"><dc:title>Open Clip Art Library</dc:title>
</cc:Agent></dc:publisher></cc:Work></rdf:RDF></metadata>{body}<rect width="1" height="1"/></svg>"""


def test_title_only_whitespace_collapsed():
    assert svg_text(doc("<dc:title>  A  red\n\tapple </dc:title>")) == "A red apple"
    assert svg_text(doc("<dc:title>Apple</dc:title><dc:description></dc:description>")) == "Apple"
    assert svg_text(doc("<dc:title>Apple</dc:title><dc:description> \n </dc:description>")) == "Apple"


def test_title_then_description_without_a_doubled_period():
    assert svg_text(doc("<dc:title>Apple</dc:title><dc:description>A shiny\n  fruit.</dc:description>")) \
        == "Apple. A shiny fruit."
    for end in (".", "!", "?"):
        assert svg_text(doc(f"<dc:title>Apple{end}</dc:title><dc:description>Red</dc:description>")) \
            == f"Apple{end} Red"
    assert svg_text(doc("<dc:description>Only a description</dc:description>")) == "Only a description"
    # document order of the two elements does not matter: title first
    assert svg_text(doc("<dc:description>Second</dc:description><dc:title>First</dc:title>")) == "First. Second"


def test_description_equal_to_the_title_is_dropped():
    assert svg_text(doc("<dc:title>Red Apple</dc:title><dc:description>red  apple</dc:description>")) \
        == "Red Apple"
    assert svg_text(doc("<dc:title>Red Apple</dc:title><dc:description>Red Apple.</dc:description>")) \
        == "Red Apple. Red Apple."  # not equal: kept


def test_entities_unescaped_once_and_cdata_kept_as_text():
    title = "<dc:title>Fish &amp; chips, caf&#233; &#x41; &eacute; &amp;quot;q&amp;quot;</dc:title>"
    description = "<dc:description><![CDATA[x < y & <b>bold</b>]]> &lt;i&gt;</dc:description>"
    assert svg_text(doc(title + description)) == 'Fish & chips, café A &eacute; &quot;q&quot;. x < y & <b>bold</b> <i>'
    dtd = '<!DOCTYPE svg [<!ENTITY xxe SYSTEM "file:///etc/hostname">]>'
    assert svg_text(doc("<dc:title>&xxe;</dc:title>", before=dtd)) == "&xxe;"  # never resolved


def test_escaped_markup_and_urls_are_kept():
    # office/telephone/phone_handset_gray_einar_01.svg holds a Creative Commons HTML snippet, escaped
    d = ('<dc:description>&lt;a href="http://creativecommons.org/licenses/publicdomain/"&gt;Public '
         'Domain&lt;/a&gt;. See http://x.org/?a=1&amp;b=2</dc:description>')
    assert svg_text(doc("<dc:title>Phone</dc:title>" + d)) == ('Phone. <a href="http://creativecommons.org/'
                                                           'licenses/publicdomain/">Public Domain</a>. '
                                                           'See http://x.org/?a=1&b=2')


def test_rdf_alt_reads_as_its_first_item():
    alt = ('<dc:title><rdf:Alt>\n <rdf:li xml:lang="x-default">Black  cat</rdf:li>\n'
           ' <rdf:li xml:lang="fr">Chat noir</rdf:li></rdf:Alt></dc:title>')
    assert svg_text(doc(alt + "<dc:description><rdf:Alt><rdf:li>On a wall</rdf:li></rdf:Alt></dc:description>")) \
        == "Black cat. On a wall"


def test_only_the_first_title_and_description_of_the_work():
    work = ("<dc:title>Banana</dc:title><dc:description>Yellow</dc:description>"
            "<dc:title>Second title</dc:title><dc:description>Second description</dc:description>")
    assert svg_text(doc(work)) == "Banana. Yellow"


def test_agent_names_svg_title_and_other_namespaces_are_not_text():
    # no work title: the creator's and publisher's dc:title (cc:Agent names) are not the picture's
    assert svg_text(doc("")) == ""
    assert svg_text(doc("", body="<title>SVG title</title><svg:title>Also not</svg:title>")) == ""
    others = "<dcterms:title>x</dcterms:title><dc:titles>y</dc:titles><foo:description>z</foo:description>"
    assert svg_text(doc(others + "<dc:title>Kept</dc:title>", body="<title>SVG title</title>")) == "Kept"


def test_missing_or_empty_gives_empty_text():
    assert svg_text(doc("<dc:title/><dc:description/>")) == ""
    assert svg_text(doc("<dc:title></dc:title><dc:description>  </dc:description>")) == ""
    assert svg_text("<svg/>") == "" and svg_text("not an svg at all") == ""


def test_comments_are_dropped_cdata_is_not_an_element():
    fake = "<!-- <dc:title>Fake</dc:title><dc:description>Fake too</dc:description> -->"
    assert svg_text(doc(fake + "<dc:title>Real</dc:title>")) == "Real"
    assert svg_text(doc("<dc:title>Re<!-- x -->d</dc:title>")) == "Red"
    assert svg_text(doc(fake, before=fake)) == ""
    # a CDATA section's markup is text: its "<dc:title>" is no element
    cdata = "<dc:description><![CDATA[<dc:title>in cdata</dc:title>]]></dc:description>"
    assert svg_text(doc(cdata)) == "<dc:title>in cdata</dc:title>"
    # and a comment opener inside CDATA does not hide what follows
    assert svg_text(doc("<dc:description><![CDATA[a <!-- b]]></dc:description><dc:title>T --></dc:title>")) \
        == "T -->. a <!-- b"


@pytest.mark.skipif(not REAL_SVG.is_dir(), reason="Debian's openclipart-svg is not installed")
@pytest.mark.parametrize("path, expected", [
    # read by eye from the files (grep of their dc:title / dc:description elements)
    ("science/chemistry_flask_matthew__02.svg",
     "Chemistry Flask. A chemistry flask with the &quot;required&quot; complimentary bubbles."),
    ("recreation/religion/discordian_sacred_chao_t_01.svg",  # has SVG <title> elements too
     "Discordian Sacred Chao. Sacred Chao of the Discordian religion (Yin-Yang with Pentagon and Golden "
     "Apple of Eris with KALLISTI inscription)"),
    ("food/fruit/banana_mateya_01.svg", "banana"),  # two works, empty descriptions, agent names
    ("science/provetta_plasma_sangue_a_01.svg", "Provetta plasma sangue"),
])
def test_real_openclipart_files(path, expected):
    assert svg_text(decode_svg((REAL_SVG / path).read_bytes())) == expected
