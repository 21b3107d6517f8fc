"""Request texts are checked as the model will get them: the length limit counts the text after
normalisation (Unicode NFC, single spaces), and an oversized raw text is refused unread."""

import pytest

from serving.server.errors import InvalidRequest, Limits
from serving.server.predictor import _check_texts

LIMITS = Limits(max_texts=4, max_text_chars=2000)


def test_the_length_limit_counts_the_normalised_text():
    # U+FB2C (a Hebrew presentation form) becomes three code points under NFC
    expanding = "\ufb2c" * 1000
    with pytest.raises(InvalidRequest, match=r"texts\[0\] has 3000 characters > max_text_chars"):
        _check_texts([expanding], LIMITS)
    assert len(_check_texts(["\ufb2c" * 600], LIMITS)[0]) == 1800  # within the limit once NFC'd
    # whitespace folding goes the other way: 3,000 raw characters that fold to 1,000 are fine
    folded = _check_texts(["a" + " " * 2998 + "b"], LIMITS)[0]
    assert folded == "a b"


def test_a_huge_raw_text_is_refused_before_it_is_normalised():
    with pytest.raises(InvalidRequest, match=r"texts\[1\] has 6001 characters > max_text_chars"):
        _check_texts(["ok", "x" * 6001], LIMITS)


def test_plain_limits_still_hold():
    with pytest.raises(InvalidRequest, match=r"texts\[0\] has 2001 characters > max_text_chars"):
        _check_texts(["x" * 2001], LIMITS)
    with pytest.raises(InvalidRequest, match="too many texts: 5 > max_texts 4"):
        _check_texts(["a"] * 5, LIMITS)
    with pytest.raises(InvalidRequest, match=r"texts\[0\] is empty or only whitespace"):
        _check_texts(["  "], LIMITS)
