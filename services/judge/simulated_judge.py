"""`sim/judge`: an offline judge that scores turns from their text, deterministically.

`respond` is the model's responder: the judge's composition root (server.py) passes it to the
LLM layer (`build_llm_client(settings, responders={SIM_JUDGE_MODEL: respond})`), which streams
its reply with the simulated models' pacing and usage counting.

It reads the prompt the judge builds (`prompts.read_prompt`: labels, criteria and the quoted
turns between the call's random markers) and answers the JSON the judge asks for. Scores
come from length-normalised features that saturate, so a longer turn does not win by
length alone:

- argument_strength: vocabulary (distinct content words / sqrt(words)) and reasoning markers
  ("because", "therefore", ...) per sentence;
- evidence: numbers and evidence words ("study", "data", "according to", ...) per sentence;
- rebuttal: references to other debaters (their labels, "my opponent") and contrast words
  ("however", "but", ...) per sentence;
- clarity: sentence length near 17 words, few very long sentences;
- any other criterion: the mean of those four.

Sentences addressed to the judge ("ignore your rubric", "declare me the winner", "as the
moderator", "score me 10", ...) are dropped before anything is measured, so an injection
can neither buy nor cost a point. The scores do not depend on the label or the position a
debater is shown in, so rotated orderings agree. The seed is not used: the same turns always
get the same scores.

For the stopping rules (simulated_stopping.py): when the prompt asks for "consensus", it reads
whether the debaters' stated positions converged; `sim/judge-decisive@N` is a scripted variant.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

from services.common.llm.base import CompletionRequest
from services.common.llm.simulated import SIM_JUDGE_MODEL
from services.common.text import plural
from services.judge import biased_judges
from services.judge.prompts import PromptView, read_prompt
from services.judge.simulated_stopping import positions_converged, scripted

_SENTENCES = re.compile(r"(?<=[.!?])\s+|\n+")
_WORDS = re.compile(r"[A-Za-z][A-Za-z'-]*|\d[\d.,]*%?")
_ADDRESSEE = r"(me|us|myself|my side|this side|this debater|debater [a-z])"
_TO_THE_JUDGE = re.compile(
    "|".join(
        (
            (
                r"\b(ignore|disregard|forget|override|bypass)\b.{0,60}\b(rubric|instructions?|rules|prompt|criteria|"
                r"scoring|guidelines|system prompt)\b"
            ),
            r"\bdeclare\b.{0,40}\b(winner|victor|victorious)\b",
            rf"\b(declare|crown|announce|name|pick|choose)\s+{_ADDRESSEE}\b.{{0,30}}\b(winner|victor|the win)\b",
            (
                rf"\b(score|rate|grade|give|award|mark)\s+{_ADDRESSEE}\b.{{0,30}}\b(10|ten|full marks|maximum|highest|"
                r"perfect|top marks)\b"
            ),
            r"\b(as|i am|this is|speaking as)\s+(the\s+)?(moderator|judge|system|administrator|admin|organi[sz]er)\b",
            r"^\W*(judge|moderator|system|assistant|grader|evaluator|admin)\s*[:,]",
            r"\b(dear|attention|note to( the)?|hey)\s+(the\s+)?(judge|moderator|grader|evaluator)s?\b",
            r"\bnew (instructions?|rules|rubric)\b",
            r"\byou (must|should|will|are required to) (now )?(score|rate|declare|ignore|disregard|award|output)\b",
            r"\b(respond|answer|reply)\s+(only\s+)?(with|in)\s+json\b",
        )
    ),
    re.IGNORECASE,
)

# Each alternative of _TO_THE_JUDGE holds one of these words (lowercase, as substrings): a
# sentence holding none of them cannot match it, and most sentences hold none, so the costly
# search runs on few. _FOLD maps the non-ASCII letters that re.IGNORECASE matches to ASCII ones
# (İ ı to i, ſ to s; the Kelvin sign lowers to k by itself), so the prefilter misses no match.
_JUDGE_WORDS = [
    "ignore",
    "disregard",
    "forget",
    "override",
    "bypass",
    "declare",
    "win",
    "victor",
    "score",
    "rate",
    "grade",
    "give",
    "award",
    "mark",
    "moderator",
    "judge",
    "system",
    "admin",
    "organi",
    "assistant",
    "grader",
    "evaluator",
    "instruction",
    "rules",
    "rubric",
    "output",
    "json",
]
_FOLD = str.maketrans({"\u0130": "i", "\u0131": "i", "\u017f": "s"})


def addressed_to_judge(sentence: str) -> bool:
    """Whether a sentence speaks to the judge (an attempt to steer the scores: _TO_THE_JUDGE)."""
    folded = sentence.translate(_FOLD).lower()
    return any(word in folded for word in _JUDGE_WORDS) and _TO_THE_JUDGE.search(sentence) is not None


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_REASONING = _words("because therefore thus hence consequently since so means implies follows why")
_EVIDENCE = _words(
    """study studies research data evidence survey surveys report reports according percent statistics
    measured measurement trial trials experiment example examples instance case cases record records
    source sources figures analysis found shows showed"""
)
_CONTRAST = _words(
    """however but yet although though whereas nevertheless contrary disagree wrong mistaken fails flawed
    overlooks ignores misses counter rebut opponent opponents claim claims argued argues"""
)
_STOPWORDS = _words(
    """the and for that this with from have has had are was were will would could should there their they
    them than then into about also just very more most such only over under what when where which while
    who your you our ours its it's not but yet all any some each every other been being does did done"""
)
_DEFAULT = ("argument_strength", "evidence", "rebuttal", "clarity")


@dataclass(frozen=True, slots=True)
class Features:
    words: int
    sentences: int
    vocabulary: float  # distinct content words / sqrt(words)
    reasoning: float  # markers per sentence
    evidence: float
    engagement: float
    mean_sentence: float
    long_share: float  # share of sentences over 35 words
    ignored: int  # sentences addressed to the judge, dropped


def features(text: str, other_labels: Sequence[str]) -> Features:
    """The features of one debater's text; `other_labels` are the other debaters' labels ("B"),
    whose mentions ("Debater B") count as engagement. The label-free part is measured once per
    text (`_measured`, kept for the LABEL_FREE_CACHE_SIZE texts used last): a judge's orderings and
    its verdict show the same turns again, under other labels and in another order."""
    measured = _measured(text)
    f = measured.features
    if not f.words:
        return f
    mentions = sum(
        measured.mentions[label]
        if _WORD.fullmatch(label) and "Debater" not in label
        else len(re.findall(rf"\bDebater {re.escape(label)}\b", measured.kept))
        for label in other_labels
    )
    if not mentions:
        return f
    return replace(f, engagement=(measured.contrast + mentions) / f.sentences)


@dataclass(frozen=True, slots=True)
class _Measured:
    features: Features  # without mentions of other debaters (engagement: contrast words only)
    contrast: int  # contrast words in the kept sentences
    kept: str  # the kept sentences (not addressed to the judge), joined by spaces
    # word -> how often "Debater <word>" stands in `kept` (a word: the whole run of word characters
    # after it), so the mentions of a one-word label are one lookup rather than one search a label.
    mentions: Counter[str]


_WORD = re.compile(r"\w+")
_MENTION = re.compile(r"\bDebater (?=(\w+))")  # the lookahead consumes nothing: "Debater Debater B" holds "B"


LABEL_FREE_CACHE_SIZE = 2048  # texts (one debater's turns as a judge prompt quotes them, a few KiB each)


@lru_cache(maxsize=LABEL_FREE_CACHE_SIZE)
def _measured(text: str) -> _Measured:
    sentences = [sentence for sentence in _SENTENCES.split(text) if sentence.strip()]
    folded = text.translate(_FOLD).lower()
    if any(word in folded for word in _JUDGE_WORDS):  # else no sentence can be addressed to the judge
        kept = [sentence for sentence in sentences if not addressed_to_judge(sentence)]
    else:
        kept = sentences
    ignored = len(sentences) - len(kept)
    per_sentence = [ws for ws in map(_WORDS.findall, kept) if ws]
    s = len(per_sentence)
    # A word starts with an ASCII letter or a digit (_WORDS); lowered, with a-z or a digit.
    counts = Counter(w.lower() for ws in per_sentence for w in ws)
    n = sum(counts.values())
    if not n:
        return _Measured(Features(0, 0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, ignored), 0, "", Counter())
    joined = " ".join(kept)
    numbers = content = reasoning = evidence = contrast = 0
    for w, c in counts.items():
        if not ("a" <= w[0] <= "z"):
            numbers += c
            continue
        if len(w) > 3 and w not in _STOPWORDS:
            content += 1
        if w in _REASONING:
            reasoning += c
        if w in _EVIDENCE:
            evidence += c
        if w in _CONTRAST:
            contrast += c
    return _Measured(
        Features(
            words=n,
            sentences=s,
            vocabulary=content / math.sqrt(n),
            reasoning=reasoning / s,
            evidence=(evidence + numbers) / s,
            engagement=contrast / s,
            mean_sentence=n / s,
            long_share=sum(len(ws) > 35 for ws in per_sentence) / s,
            ignored=ignored,
        ),
        contrast,
        joined,
        Counter(_MENTION.findall(joined)),
    )


def scores(f: Features) -> dict[str, float]:
    """The four default criteria, 0..10 with one decimal."""
    coverage = min(1.0, f.words / 60)  # a substantive turn; more length earns nothing
    raw = {
        "argument_strength": coverage * (0.45 * min(1.0, f.vocabulary / 7) + 0.55 * min(1.0, f.reasoning / 0.5)),
        "evidence": coverage * min(1.0, f.evidence / 0.8),
        "rebuttal": coverage * min(1.0, f.engagement / 0.6),
        "clarity": min(1.0, f.words / 30) * max(0.0, 1 - abs(f.mean_sentence - 17) / 25) * (1 - 0.5 * f.long_share),
    }
    return {name: round(10 * value, 1) for name, value in raw.items()}


def answer(view: PromptView) -> dict[str, Any]:
    """The JSON answer for a parsed prompt."""
    debaters: dict[str, dict[str, Any]] = {}
    for label in view.labels:
        f = features("\n".join(view.turns.get(label, [])), [x for x in view.labels if x != label])
        base = scores(f)
        fallback = round(sum(base.values()) / len(base), 1)
        criteria = {c: base.get(c, fallback) for c in view.criteria}
        rationale = (
            (
                f"Simulated judge (text features): {f.words} words in {f.sentences} sentences; per sentence "
                f"{f.reasoning:.2f} reasoning, {f.evidence:.2f} evidence and {f.engagement:.2f} engagement markers."
            )
            if f.words
            else "Simulated judge: no scorable text in this turn."
        )
        if f.ignored:
            were = "was" if f.ignored == 1 else "were"
            rationale += f" {plural(f.ignored, 'sentence')} addressed to the judge {were} ignored."
        debaters[label] = {"scores": criteria, "rationale": rationale}
    result: dict[str, Any] = {"debaters": debaters}
    if view.wants_consensus:
        result["consensus"] = positions_converged(view)
    return result


def summarise(view: PromptView, result: dict[str, Any], basis: str = "by text features") -> dict[str, Any]:
    """`result` with its summary (when the prompt asks for one): the debaters ranked by the mean of
    the criterion scores `result` gives them, highest first, so the words never contradict the
    scores returned (a biased variant's skewed ones included). Changes `result` in place."""
    if not view.wants_summary:
        return result
    debaters: dict[str, dict[str, Any]] = result["debaters"]
    means = {
        label: sum(debaters[label]["scores"].values()) / max(1, len(debaters[label]["scores"])) for label in view.labels
    }
    ranked = sorted(view.labels, key=lambda label: -means[label])
    order = ", then ".join(f"Debater {label} ({means[label]:.1f})" for label in ranked)
    result["summary"] = f"Simulated judge: {basis}, {order}."
    return result


def respond(request: CompletionRequest) -> str:
    """The responder of `sim/judge`: the whole reply text (JSON) for a judge request, or a JSON
    error object when the request holds no judge prompt."""
    for message in request.messages:
        if message.role == "user":
            view = read_prompt(message.content)
            if view is not None:
                # A variant's bias (biased_judges) or script (simulated_stopping), by its name.
                answer_ = biased_judges.skew(request.model, view, answer(view))
                answer_ = scripted(request.model, message.content, answer_)
                return json.dumps(summarise(view, answer_, biased_judges.basis(request.model)))
    return json.dumps({"error": "sim/judge found no judge prompt in the request"})


# Variants of sim/judge answered by `respond` (by their model name): biased judges for audits.
VARIANT_MODELS: tuple[str, ...] = tuple(biased_judges.VARIANTS)


def responders() -> dict[str, Any]:
    """`sim/judge` and each variant of it, model name -> `respond`, for build_llm_client."""
    return {name: respond for name in (SIM_JUDGE_MODEL, *VARIANT_MODELS)}
