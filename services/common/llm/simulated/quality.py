"""A simulated debater's quality, set in its model name, that the simulated judge can detect.

- `sim/<name>-strong`: quality 0.9; `sim/<name>-weak`: 0.1; `sim/<name>-average`: 0.5;
- `sim/<name>@q=<number from 0 to 1>` (e.g. `sim/debater@q=0.7`): that quality;
- any other `sim/...` debater has no quality setting: its turns are written as before.

Quality q reworks a written turn sentence by sentence (the first, its opening, is kept): each
later sentence, by a draw seeded by (seed, model, the turn's text), is with probability q
kept and followed by a short reason with a figure and a source ("That is because 3 studies
found ...") and
otherwise replaced by a vague sentence that gives no reason, evidence or engagement. `sim/judge`
scores reasoning, evidence and engagement per sentence (services/judge/simulated_judge.py), so
a stronger debater scores higher in expectation, and noisily: two debaters of close quality
each win some debates, and a rating needs several matches to tell them apart.
"""

from __future__ import annotations

import hashlib
import random
import re

NAMED_QUALITY = {"strong": 0.9, "average": 0.5, "weak": 0.1}
_SUFFIX = re.compile(r"-(strong|average|weak)$")
_AT_Q = re.compile(r"@q=(0(?:\.\d+)?|1(?:\.0+)?)$")
_SENTENCES = re.compile(r"(?<=[.!?])\s+")

_REASONS = (
    "That is because {n} studies found a {pct}% difference, however my opponent counts it.",
    "The data from {n} cities shows why, but the other side ignores it: a {pct}% gain.",
    "A survey of {n} hundred households measured a {pct}% effect, so the opposing claim fails.",
    "According to {n} independent reports, the figures moved by {pct}%, which is why my opponent is wrong.",
    "The research shows it, though critics disagree: {n} trials, therefore {pct}% better outcomes.",
)
_VAGUE = (
    "Most people would agree that this matters a lot.",
    "It is simply the right thing to do, in my view.",
    "Everyone can see how this would turn out in the end.",
    "This is really a question of common sense for all of us.",
    "We should all keep that firmly in mind today.",
    "I feel strongly about this and I think others do too.",
)


def debater_quality(model: str) -> float | None:
    """The quality (0 to 1) a simulated debater's model name sets, or None when it sets none."""
    at = _AT_Q.search(model)
    if at is not None:
        return float(at.group(1))
    named = _SUFFIX.search(model)
    return NAMED_QUALITY[named.group(1)] if named is not None else None


def _rng(*parts: object) -> random.Random:
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def apply_quality(text: str, quality: float, model: str, seed: int) -> str:
    """`text` reworked for `quality` (see the module docstring); deterministic for its arguments."""
    sentences = [s for s in _SENTENCES.split(text.strip()) if s]
    if len(sentences) < 2:
        return text
    rng = _rng(seed, model, text)
    out = [sentences[0]]
    for sentence in sentences[1:]:
        if rng.random() < quality:
            out += [sentence, rng.choice(_REASONS).format(n=rng.randint(3, 12), pct=rng.randint(12, 48))]
        else:
            out.append(rng.choice(_VAGUE))
    return " ".join(out)


def with_quality(model: str, text: str, seed: int) -> str:
    """The built-in debater's turn as a debater of `model`'s quality writes it (unchanged when the
    name sets no quality)."""
    quality = debater_quality(model)
    return text if quality is None else apply_quality(text, quality, model, seed)
