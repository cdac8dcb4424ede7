"""The JSON a judge model must answer, its schema, and strict validation of an answer.

An answer, for debaters shown as "Debater A", "Debater B", ... and the rubric's criteria:

    {"debaters": {"A": {"scores": {"argument_strength": 7, "evidence": 5.5, ...},
                        "rationale": "one or two sentences"},
                  "B": {...}},
     "summary": "..."}                       # verdicts only

Every label and every criterion must be present, scores are JSON numbers from 0 to 10,
and nothing else is accepted: no extra keys, no strings for numbers, no duplicate keys.
Scores are never filled in or clamped: an answer is valid or it is refused.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic_core import ErrorDetails

SCORE_MIN = 0.0
SCORE_MAX = 10.0
MAX_RATIONALE_CHARS = 2000  # what the schema accepts; stored rationales are cut shorter
MAX_PROBLEMS = 12

Score = Annotated[float, Field(ge=SCORE_MIN, le=SCORE_MAX, allow_inf_nan=False, description="0 to 10")]
Prose = Annotated[str, Field(min_length=1, max_length=MAX_RATIONALE_CHARS)]

_STRICT = ConfigDict(extra="forbid", strict=True)
_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)


class JudgeOutputError(ValueError):
    """A judge answer that is not valid; `problems` are short, model-readable descriptions."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class AnswerShape:
    labels: tuple[str, ...]  # "A", "B", ...
    criteria: tuple[str, ...]
    with_summary: bool
    with_consensus: bool = False  # a boolean "consensus" (the consensus stopping rule)


@dataclass(frozen=True, slots=True)
class Answer:
    scores: dict[str, dict[str, float]]  # label -> criterion -> score
    rationales: dict[str, str]
    summary: str
    consensus: bool | None = None  # None when the shape does not ask for it


def label_for(position: int) -> str:
    return chr(ord("A") + position)


@lru_cache(maxsize=512)
def answer_model(shape: AnswerShape) -> type[BaseModel]:
    """A pydantic model for one shape. Fields get safe Python names; the JSON keys are aliases,
    so a criterion called "model_config" or "json" cannot collide with BaseModel."""
    # dict[str, Any]: a splatted dict of precise types would also have to fit create_model's
    # own keyword parameters (__module__, __base__, ...) for mypy.
    score_fields: dict[str, Any] = {f"c{i}": (Score, Field(alias=name)) for i, name in enumerate(shape.criteria)}
    scores = create_model("Scores", __config__=_STRICT, **score_fields)
    entry = create_model("DebaterEntry", __config__=_STRICT, scores=(scores, ...), rationale=(Prose, ...))
    debater_fields: dict[str, Any] = {f"d{i}": (entry, Field(alias=label)) for i, label in enumerate(shape.labels)}
    debaters = create_model("Debaters", __config__=_STRICT, **debater_fields)
    fields: dict[str, Any] = {"debaters": (debaters, ...)}
    if shape.with_summary:
        fields["summary"] = (Prose, ...)
    if shape.with_consensus:
        fields["consensus"] = (bool, ...)
    return create_model("JudgeAnswer", __config__=_STRICT, **fields)


@lru_cache(maxsize=512)
def answer_schema(shape: AnswerShape) -> str:
    """The JSON Schema of an answer, compact, as it goes into the prompt."""
    schema = answer_model(shape).model_json_schema(by_alias=True)
    return json.dumps(_without_titles(schema), separators=(",", ":"))


def _without_titles(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_titles(v) for k, v in node.items() if not (k == "title" and isinstance(v, str))}
    if isinstance(node, list):
        return [_without_titles(v) for v in node]
    return node


def parse_answer(text: str, shape: AnswerShape) -> Answer:
    """The validated answer in `text`, or JudgeOutputError saying what is wrong."""
    data = _load_json_object(text)
    try:
        model: Any = answer_model(shape).model_validate(data)  # fields made at run time
    except ValidationError as error:
        problems = [_describe(e) for e in error.errors(include_url=False, include_input=False)]
        if len(problems) > MAX_PROBLEMS:
            problems = problems[:MAX_PROBLEMS] + [f"... and {len(problems) - MAX_PROBLEMS} more problems"]
        raise JudgeOutputError(problems) from None
    scores: dict[str, dict[str, float]] = {}
    rationales: dict[str, str] = {}
    for i, label in enumerate(shape.labels):
        entry = getattr(model.debaters, f"d{i}")
        scores[label] = {name: float(getattr(entry.scores, f"c{j}")) for j, name in enumerate(shape.criteria)}
        rationales[label] = entry.rationale.strip()
    consensus = bool(model.consensus) if shape.with_consensus else None
    return Answer(scores, rationales, model.summary.strip() if shape.with_summary else "", consensus)


def _describe(error: ErrorDetails) -> str:
    where = ".".join(str(part) for part in error["loc"]) or "the answer"
    return f"{where}: {error['msg']}"


def _load_json_object(text: str) -> Any:
    """The JSON object in a reply: the whole reply, a fenced block, or the outermost braces.
    Only where the object is found is lenient; what it says is checked strictly."""
    candidates = [text.strip()]
    candidates += [m.group(1).strip() for m in _FENCE.finditer(text)]
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        candidates.append(text[start : end + 1])
    problem = "the answer is not a JSON object"
    for candidate in candidates:
        if not candidate:
            continue
        try:
            return json.loads(candidate, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
        except _Duplicate as duplicate:
            problem = f"duplicate key {duplicate.args[0]!r}"
        except json.JSONDecodeError as error:
            problem = f"not valid JSON ({error.msg} at line {error.lineno} column {error.colno})"
    if not text.strip():
        problem = "the answer is empty"
    raise JudgeOutputError([problem])


class _Duplicate(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _Duplicate(key)
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise json.JSONDecodeError(f"{name} is not a JSON number", name, 0)
