"""pipeline.synthetic_captions: the benchmark's captions and their `#words` twins (seeded draws,
their laws checked by chi-square tests)."""
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy import stats

from pipeline.normalize import caption_hashtags_array
from pipeline.synthetic import tags_per_image_pmf, zipf_cdf
from pipeline.synthetic_captions import MAX_NOISE, caption_batches, noise_words

RANKED = ["dog", "ice_cream", "brown_bear", "cat", "fish_and_chips", "teddy_bear", "hat", "box"]
NOISE = ["the", "a", "of", "with", "my"]


def draw(n=20_000, seed=3, batch_size=4096):
    parts = list(caption_batches(n, RANKED, NOISE, seed=seed, zipf_s=1.1, batch_size=batch_size))
    return pa.concat_arrays([t for t, _ in parts]), pa.concat_arrays([h for _, h in parts])


def test_same_seed_same_captions_and_twins_say_the_same():
    text, tags = draw()
    again_text, again_tags = draw()
    assert text.equals(again_text) and tags.equals(again_tags) and len(text) == 20_000
    assert not text.equals(draw(seed=4)[0])
    # the twin is the caption with each mention as a #word
    plain = pc.replace_substring(pc.replace_substring(pc.utf8_lower(tags), "#", ""), "_", " ")
    assert plain.equals(pc.utf8_lower(text))
    first = text[0].as_py()
    assert first[0].isupper() and first[1:] == first[1:].lower()


def test_mentions_follow_the_tags_per_image_law_and_zipf():
    _, tags = draw()
    mentions = caption_hashtags_array(tags)
    k = pc.list_value_length(mentions).to_numpy()
    observed = np.bincount(k, minlength=len(tags_per_image_pmf()) + 1)[1:]
    assert observed.sum() == len(k)  # 1..MAX_TAGS mentions each
    assert stats.chisquare(observed, tags_per_image_pmf() * len(k)).pvalue > 1e-3
    ranks = pc.index_in(pc.list_flatten(mentions), value_set=pa.array(RANKED)).to_numpy()
    p = np.diff(np.concatenate(([0.0], zipf_cdf(len(RANKED), 1.1))))
    assert stats.chisquare(np.bincount(ranks, minlength=len(RANKED)), p * len(ranks)).pvalue > 1e-3


def test_noise_words_between_mentions():
    text, tags = draw(n=5000)
    words = pc.list_value_length(pc.split_pattern(tags, " ")).to_numpy()
    k = pc.list_value_length(caption_hashtags_array(tags)).to_numpy()
    noise = words - k
    assert noise.min() >= 0 and (noise <= MAX_NOISE * k).all()
    assert abs(noise.sum() / k.sum() - MAX_NOISE / 2) < 0.05  # uniform 0..MAX_NOISE before each mention
    assert noise_words({"two", "the"}) == [w for w in noise_words(set()) if w not in ("two", "the")]
