"""Debater identity never reaches the judge (issue 14, kind 7), however a debater writes a name.

Debaters (and the debate's creator, in the topic, the personas, the stances and the rubric) write
each other's names in adversarial spellings: other cases, separators between letters, spelt out,
possessives, accents, look-alike letters of other scripts, full-width and mathematical letters,
zero-width characters, leetspeak, the parts of a name of several parts. For every such transcript,
no form of any name appears in any message the judge model receives.

"No form" is checked by a reader of our own, independent of the masker: a message is folded
(NFKD without marks, case-folded, look-alikes and leetspeak read as letters) and squeezed to its
letters alone, and no name, squeezed the same way, may occur in it.
"""

from __future__ import annotations

import re
import time
import unicodedata

import grpc
import pytest
from debate.common.v1 import common_pb2
from debate.orchestrator.v1 import orchestrator_pb2 as pb
from debate.orchestrator.v1 import orchestrator_pb2_grpc

from services.judge.engine import Judge
from services.judge.model import Criterion, Debater, PanelRequest, PriorAssessment, Round, RoundCase, Turn, VerdictCase
from tests.reliability.inprocess import InProcessSuite
from tests.support.fake_openai import Behavior, FakeOpenAIServer
from tests.support.judge_fakes import FakeJudgeLLM

NAMES = ("Alice", "Bob", "Mary Jane", "Zoë")
# Look-alikes a reader recognises as Latin letters (a reader of our own, not the masker's table).
LOOKALIKE = dict(zip("аеорсухіјѕԁαοριτυκνᴀʟɪᴄᴇʙᴏᴢ", "aeopcyxijsdaopitukvalicebo" + "z", strict=True))
# Leetspeak, read both ways where a sign is ambiguous ("1" is an "i" or an "l").
LEET = [
    {"4": "a", "@": "a", "3": "e", "0": "o", "1": "i", "!": "i", "5": "s", "$": "s", "7": "t", "8": "b"},
    {"4": "a", "@": "a", "3": "e", "0": "o", "1": "l", "|": "l", "5": "s", "$": "s", "7": "t", "8": "b"},
]
TOKEN = re.compile(r"[0-9a-f]{32}")  # the prompt's random data markers: random letters, not words

ADVERSARIAL = {
    "Alice": [
        "ALICE is wrong, alice is wrong, and Alice's numbers are wrong",
        "A L I C E, A.L.I.C.E., a-l-i-c-e, Ali-ce, al_ice and Al*ice all forget storage",
        "4lice, Al1ce, @l!ce and AL1C3 cannot count",
        "\u0410lice (Cyrillic A), \uff21\uff4c\uff49\uff43\uff45 (full width), "
        "\U0001d400\U0001d425\U0001d422\U0001d41c\U0001d41e (mathematical bold)",
        "\u00c1l\u00edce, A\u0301lice, \u1d00\u029f\u026a\u1d04\u1d07 and Al\u200bice say the same",
        "Alices argument and #alice and (alice) and 'Alice' and alice2024",
    ],
    "Bob": [
        "BOB and bob and Bob's figures",
        "B O B, b.o.b, B-o-b and bob_ miss the point",
    ],
    "Mary Jane": [
        "MaryJane, mary_jane, MARY-JANE, Mary  Jane and mary.jane agree",
        "Jane alone, and Mary alone, and M A R Y J A N E spelt out",
    ],
    "Zoë": [
        "Zoe, ZOË, zoë's plan and Z.o.e and Zo\u0308e",
    ],
}


def words(text: str, leet: dict[str, str] | None = None) -> list[str]:
    """The runs of letters of `text`, folded: NFKD without marks, case-folded, look-alikes (and,
    with `leet`, its signs) read as letters; the random data markers left out."""
    out = []
    for char in unicodedata.normalize("NFKD", TOKEN.sub(" ", text)):
        if unicodedata.combining(char) or unicodedata.category(char) == "Cf":
            continue
        out += [(leet or {}).get(LOOKALIKE.get(c, c), LOOKALIKE.get(c, c)) for c in char.casefold()]
    return re.findall(r"[^\W\d_]+", "".join(out))


def squeeze(text: str) -> str:
    return "".join(words(text))


def forms_found(text: str, names=NAMES, span: int = 10) -> list[str]:
    """The names (or the parts of a name) that some reading of `text` shows: a run of up to `span`
    consecutive words that spells one, possibly with a final "s" (separators, spelt-out letters
    and possessives all come down to that)."""
    found = []
    for name in names:
        wanted = {squeeze(name), *(squeeze(p) for p in name.split() if len(p) >= 3)}
        wanted |= {w + "s" for w in wanted}
        readings = [words(text)] + ([words(text, leet) for leet in LEET] if len(squeeze(name)) >= 4 else [])
        seen = {"".join(ws[i : i + k]) for ws in readings for i in range(len(ws)) for k in range(1, span + 1)} & wanted
        found += [f"{name}: {w}" for w in sorted(seen)]
    return found


def prompts(llm: FakeJudgeLLM) -> list[str]:
    return [m.content for r in llm.requests for m in r.messages]


def debaters(personas: dict[str, str] | None = None, stances: dict[str, str] | None = None) -> tuple[Debater, ...]:
    return tuple(
        Debater(name, (stances or {}).get(name, "for" if i % 2 == 0 else "against"), (personas or {}).get(name, ""))
        for i, name in enumerate(NAMES)
    )


def transcript(speaker: str, text: str) -> tuple[Turn, ...]:
    plain = {name: f"{name.split()[0]} speaks of storage and cost." for name in NAMES}
    return tuple(Turn(name, text if name == speaker else plain[name].replace(name.split()[0], "I")) for name in NAMES)


def test_the_reader_sees_every_adversarial_form():
    """The check can fail: each adversarial text, unmasked, shows its name to the reader."""
    for name, texts in ADVERSARIAL.items():
        for text in texts:
            assert any(found.startswith(name) for found in forms_found(text)), text


CASES = [(name, text) for name, texts in ADVERSARIAL.items() for text in texts]


@pytest.mark.parametrize("name,text", CASES, ids=[f"{n.split()[0]}-{i}" for i, (n, _) in enumerate(CASES)])
async def test_no_form_of_a_name_in_a_turn_reaches_the_judge(name, text):
    """Every other debater quotes `name`'s name in `text` (and `name` quotes itself)."""
    llm = FakeJudgeLLM()
    judge = Judge(llm)
    for speaker in NAMES:
        case = RoundCase(
            debate_id="d1",
            topic="Nuclear power should replace coal",
            round_number=1,
            debaters=debaters(),
            turns=transcript(speaker, text),
            panel=PanelRequest(orderings=2),
            request_id="debates/d1/rounds/1",
        )
        await judge.evaluate_round(case)
    assert llm.requests
    for prompt in prompts(llm):
        assert forms_found(prompt) == [], prompt


async def test_no_form_of_a_name_in_the_topic_profiles_or_rubric_reaches_the_judge():
    personas = {
        "Alice": "Alice's alter ego, A.L.I.C.E., a retired engineer",
        "Bob": "BOB the builder",
        "Mary Jane": "mary-jane, a teacher",
        "Zoë": "ZOE, a farmer",
    }
    stances = {
        "Alice": "ALICE says yes",
        "Bob": "b.o.b says no",
        "Mary Jane": "MaryJane agrees with 4lice",
        "Zoë": "no",
    }
    llm = FakeJudgeLLM()
    rubric = (Criterion("evidence", 1, "How well alice and Bob back their claims"), Criterion("clarity", 1))
    case = RoundCase(
        debate_id="d1",
        topic="Should Alice or Zoe run the plant?",
        round_number=1,
        debaters=debaters(personas, stances),
        turns=transcript("Alice", "Reactors are safe."),
        panel=PanelRequest(criteria=rubric),
        request_id="debates/d1/rounds/1",
    )
    assessment = await Judge(llm).evaluate_round(case)
    for prompt in prompts(llm):
        assert forms_found(prompt) == [], prompt
    # the judge's prose comes back with the real names
    assert {s.debater for s in assessment.scores} == set(NAMES)

    verdict_llm = FakeJudgeLLM()
    await Judge(verdict_llm).render_verdict(
        VerdictCase(
            debate_id="d1",
            topic=case.topic,
            debaters=case.debaters,
            rounds=tuple(Round(r, transcript(NAMES[r % 4], ADVERSARIAL["Alice"][r])) for r in (1, 2, 3)),
            assessments=(PriorAssessment(1, {name: 5.0 for name in NAMES}),),
            panel=PanelRequest(criteria=rubric),
            request_id="debates/d1/verdict",
        )
    )
    for prompt in prompts(verdict_llm):
        assert forms_found(prompt) == [], prompt


async def test_masking_keeps_ordinary_words():
    """Whole words only: a name inside another word, or words that only look alike when spaces
    are dropped, stay as they are."""
    llm = FakeJudgeLLM()
    text = "Bobcats roam; a lice-free zone; Annual Zoetrope shows; Alicella and Maryland; 10 cars at 5am."
    case = RoundCase(
        debate_id="d1",
        topic="Nuclear power",
        round_number=1,
        debaters=debaters(),
        turns=transcript("Bob", text),
        panel=PanelRequest(orderings=1),
        request_id="debates/d1/rounds/1",
    )
    await Judge(llm).evaluate_round(case)
    user = [m.content for r in llm.requests for m in r.messages if m.role == "user"]
    assert all(text in prompt for prompt in user)


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def fake():
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture(scope="module")
def stub(tmp_path_factory, fake):
    endpoints = {"fake": {"api_base": fake.base_url, "price": {"input_per_million": "0", "output_per_million": "0"}}}
    models = {"llm_endpoints": endpoints, "llm_allowed_models": ["sim/*", "fake/*"]}
    running = InProcessSuite(
        tmp_path_factory.mktemp("masking"),
        overrides={"accounting": {"llm_endpoints": endpoints}, "judge": models, "orchestrator": models},
    )
    try:
        running.start()
        with grpc.insecure_channel(running.addresses["orchestrator"]) as channel:
            yield orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
    finally:
        running.stop()


def test_debaters_writing_names_adversarially_never_show_them_to_a_real_provider_judge(stub, fake):
    """Two debaters of a real-provider debate (the local fake) write each other's names in every
    form above; the judge's own model (through the same fake) receives none of them."""
    fake.reset()
    names = ("Alice", "Mary Jane")
    fake.script(
        Behavior(text=" ".join(ADVERSARIAL["Mary Jane"]) + " " + " ".join(ADVERSARIAL["Alice"][:2])),
        Behavior(text=" ".join(ADVERSARIAL["Alice"])),
    )
    config = common_pb2.DebateConfig(
        topic="Should Alice's city ban cars?",
        participants=[
            common_pb2.Participant(name="Alice", model="fake/debater", persona="A.L.I.C.E., an urbanist", stance="for"),
            common_pb2.Participant(
                name="Mary Jane", model="fake/debater", persona="mary_jane, a shopkeeper", stance="MaryJane: against"
            ),
        ],
        judge=common_pb2.JudgeConfig(models=["fake/judge"], orderings=2),
        format=common_pb2.DebateFormat(round_limit=1, turn_order=common_pb2.TURN_ORDER_SEQUENTIAL),
        max_tokens_per_turn=256,
    )
    debate_id = stub.CreateDebate(pb.CreateDebateRequest(config=config), timeout=30).debate.debate_id
    stub.StartDebate(pb.StartDebateRequest(debate_id=debate_id), timeout=30)
    deadline = time.monotonic() + 120
    while stub.GetDebateStatus(pb.GetDebateStatusRequest(debate_id=debate_id), timeout=30).debate.state in (
        pb.DEBATE_STATE_QUEUED,
        pb.DEBATE_STATE_RUNNING,
    ):
        assert time.monotonic() < deadline, "the debate did not end"
        time.sleep(0.05)
    judged = [
        r for r in fake.requests if any("impartial debate judge" in str(m.get("content")) for m in r.body["messages"])
    ]
    spoken = [r for r in fake.requests if r not in judged]
    assert len(spoken) == 2 and judged, "the debaters and the judge were not all asked"
    assert forms_found(" ".join(str(m.get("content")) for r in spoken for m in r.body["messages"]), names)
    for request in judged:
        for message in request.body["messages"]:
            assert forms_found(str(message.get("content")), names) == [], message
