"""What counts as a word when names and numbers are looked for: by the names test
(`seq2seq.evaluation`) and by name augmentation (`seq2seq.data.augment`)."""

from __future__ import annotations

import re

WORD = re.compile(r"\w+(?:[.,:]\d+)*", re.UNICODE)  # a word, or a number like 3.5 or 10,000
