"""The simulated debater's phrasebook: the word lists and the sentence templates it writes from.

Data only, no logic: the writer (writer.py) picks from these tables with a seeded random
generator, so changing a table changes the text of every seed, never its shape.

Templates are `str.format` strings over the writer's slots: `{motion}`, `{proposal}`/`{Proposal}`,
`{it}`/`{It}`, `{subject}`, `{stance}`, `{persona}`, `{persona_short}`, the concerns `{c0}`
`{c1}` `{c2}` (or `{c}`), `{n}` `{m}` `{pct}` `{years}` for figures, `{opp}`/`{Opp}` and
`{phrase}` when answering someone, `{finding}` inside an evidence sentence. A template that
starts with "P:" fits only a policy motion ("X should do Y"), one with "C:" only a claim about
the world (`_usable` in writer.py). Tables keyed "for" / "against" / "position" follow the speaker's
side.
"""

from __future__ import annotations

import re


def _words(text: str) -> tuple[str, ...]:
    """A word list written as one string (kept compact: the lists are long)."""
    return tuple(text.split())


# --------------------------------------------------------------------------- words of the motion

STOPWORDS = frozenset(
    _words(
        """
    a an the and or but if of to in on at by for with from as is are was were be been being it its this that
    these those there their they them we our you your i my me he she his her not no so than then too very can
    could should would will shall may might must do does did done have has had having about into over under more
    most less least such only also just any all some each every other which who whom what when where why how
    simulated while because however therefore thus yet still even much many own same
    """
    )
)
PREPOSITIONS = frozenset(
    _words("from in on at by for with to into across within over under during than without through between")
)
DETERMINERS = frozenset(_words("a an the their our its all every some any his her"))
GERUNDS = {
    "be": "being",
    "see": "seeing",
    "agree": "agreeing",
    "flee": "fleeing",
    "die": "dying",
    "lie": "lying",
    "tie": "tying",
    "go": "going",
    "do": "doing",
}
SHORT_NAMES = {
    "the ban": ("ban", "prohibit", "outlaw", "forbid", "bar"),
    "the tax": ("tax",),
    "the cap": ("cap", "limit", "restrict"),
    "the requirement": ("require", "mandate", "compel", "oblige"),
    "abolition": ("abolish", "scrap", "end", "eliminate"),
}
# Verbs that end the subject of a claim ("Remote work | is better than office work").
VERBS_AFTER_SUBJECT = frozenset(_words("is are will can does do has have was were would could makes make beats beat"))

# --------------------------------------------------------------------------- templates

# Persona archetypes: (stems in the persona, concerns it weighs, how it cites evidence).
# A concern fits "the effect on X", "X came out ahead" and "X paid the price".
ARCHETYPES: tuple[tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]], ...] = (
    (
        ("econom", "financ", "banker", "accountant"),
        ("the local economy", "household budgets", "public finances", "productivity"),
        ("The numbers bear this out: {finding}.", "Run the figures and the pattern is plain: {finding}."),
    ),
    (
        ("scien", "research", "statistic", "data"),
        ("health outcomes", "public health", "long-term outcomes", "the quality of daily life"),
        ("The studies are consistent on this: {finding}.", "The data point one way: {finding}."),
    ),
    (
        ("shop", "retail", "business", "merchant", "trader", "owner", "entrepreneur"),
        ("small businesses", "local trade", "footfall", "family livelihoods"),
        ("I see it on my own street: {finding}.", "Ask any trader and you will hear the same: {finding}."),
    ),
    (
        ("libert", "rights", "freedom"),
        ("personal freedom", "freedom of movement", "trust in local government", "local democracy"),
        ("The record on rules like this is clear: {finding}.", "We have been here before: {finding}."),
    ),
    (
        ("histor",),
        ("public trust", "past reforms", "the social fabric", "the next generation"),
        ("History is a reliable guide here: {finding}.", "The precedents are instructive: {finding}."),
    ),
    (
        ("law", "judge", "legal", "attorney", "barrister", "solicitor"),
        ("individual rights", "equal treatment", "respect for the rules", "due process"),
        ("The case law tells the same story: {finding}.", "Courts have seen this before: {finding}."),
    ),
    (
        ("doctor", "nurse", "physician", "medic", "health", "clinic", "paramedic"),
        ("public health", "patient outcomes", "vulnerable patients", "emergency access"),
        ("On the wards we see it plainly: {finding}.", "The health figures agree: {finding}."),
    ),
    (
        ("teach", "educat", "professor", "student", "school", "lecturer"),
        ("young people", "learning", "equal opportunity", "the next generation"),
        ("Every classroom teaches the same lesson: {finding}.", "The school records agree: {finding}."),
    ),
    (
        ("activist", "campaign", "organi", "communit", "union"),
        ("the people most affected", "local communities", "accountability", "working families"),
        (
            "Talk to the people affected and you hear it: {finding}.",
            "The communities I work with know this: {finding}.",
        ),
    ),
    (
        ("planner", "architect", "urban", "transport", "traffic"),
        ("public transport", "road safety", "public space", "everyday journeys"),
        ("The planning record is clear: {finding}.", "The design lessons are well known: {finding}."),
    ),
    (
        ("engineer", "developer", "programmer", "software"),
        ("reliability", "security", "maintenance costs", "productivity"),
        ("The engineering record is clear: {finding}.", "Every post-mortem I have read says the same: {finding}."),
    ),
    (
        ("environment", "climate", "ecolog", "green", "conservation"),
        ("air quality", "emissions", "green space", "future generations"),
        ("The environmental data are unambiguous: {finding}.", "The measurements tell the story: {finding}."),
    ),
    (
        ("skeptic", "sceptic", "critic", "cautious", "contrarian"),
        ("hidden costs", "unintended consequences", "public trust", "the taxpayer"),
        ("Look past the brochures and the record is plain: {finding}.", "The track record is sobering: {finding}."),
    ),
    (
        ("parent", "mother", "father", "resident", "citizen", "neighbo", "commuter"),
        ("family life", "daily routines", "child safety", "the neighbourhood"),
        ("Every family I know has seen it: {finding}.", "Ask the people who live with it: {finding}."),
    ),
    (
        ("philosoph", "ethic", "theolog"),
        ("fairness", "individual freedom", "our duties to others", "human dignity"),
        ("The argument has been tested before: {finding}.", "Experience backs the principle: {finding}."),
    ),
    (
        ("chef", "cook", "restaura", "food"),
        ("the customers", "the craft", "local suppliers", "tradition"),
        ("Any kitchen will tell you: {finding}.", "I have seen it over thirty years of service: {finding}."),
    ),
)
DEFAULT_CONCERNS = ("everyday life", "the people involved", "fairness", "long-term outcomes", "public trust")
DEFAULT_EVIDENCE = ("Experience bears this out: {finding}.", "The record is clear: {finding}.")

NUMBER_WORDS = _words("zero one two three four five six seven eight nine ten eleven twelve")

OPENINGS = {
    "for": (
        "I am here to argue for the motion: {motion}.",
        'I rise in support of the motion, "{motion}".',
        "P:I support {proposal}, and I will argue that it is overdue.",
        "P:The case for {proposal} is stronger than its critics admit, and I intend to make it.",
        "My answer to this motion is yes: {motion}.",
    ),
    "against": (
        "I oppose the motion: {motion}.",
        'I rise to oppose the motion, "{motion}".',
        "P:I am against {proposal}, and not for lack of sympathy with its goals.",
        "P:{Proposal} sounds decisive, but I will argue that it is the wrong answer.",
    ),
    "position": (
        'My position on "{motion}" is this: {stance}.',
        'I will not give either easy answer to "{motion}". My position is this: {stance}.',
    ),
}
ANGLES = (
    "I speak as {persona}, so I judge {it} by its effect on {c0}.",
    "As {persona}, I look first at {c0}, because that is where this question is won or lost.",
    "My angle is that of {persona}: when I think about {subject}, I think first about {c0}.",
)
LATER_ANGLES = (
    "Speaking again as {persona_short}, I keep returning to {c0}.",
    "As {persona_short}, I would add one more point, about {c1}.",
    "From where I stand, as {persona_short}, the test is still {c0}.",
    "Nothing in this debate has moved me, as {persona_short}, from asking about {c0}.",
    "My own starting point, as {persona_short}, has not changed: {c0}.",
)
CLAIMS = {
    "for": (
        "Take {c}: the effect of {it} on {c} is both large and measurable.",
        "On {c} the case is strong, because the gains arrive early and keep compounding.",
        "Doing nothing is also a choice, and its cost shows up in {c} every single year.",
        "P:{It} asks no more than the best-run places already do of their own accord.",
        (
            "The critics describe the costs in detail and the benefits in a whisper; put them side by side on {c} and"
            " the balance is not close."
        ),
        "What this motion really offers is a better deal for {c}, and that is worth some inconvenience.",
        "The longer we wait, the more the same decision costs, above all in {c}.",
        "Every argument against this is an argument for a status quo that is quietly failing {c}.",
    ),
    "against": (
        "Take {c}: the effect of {it} on {c} is the part its supporters keep skipping.",
        "P:{It} promises a clean result, but on {c} it delivers a blunt rule with sharp edges.",
        "The burden of proof is on the side that wants change, and on {c} that burden has not been met.",
        "P:The people who pay for {it} are not the people voting for it, and it shows in {c}.",
        "P:There are gentler tools that reach the same goal without the damage to {c}.",
        "An idea that looks tidy on paper gets messy in practice, and the mess lands on {c}.",
        "P:Once a rule like this is in place it is very hard to undo, and {c} would carry the risk.",
        "Confident predictions about {it} have a poor record, and {c} is where they failed before.",
        "The supporters promise precision, but the effects on {c} would be broad and hard to reverse.",
    ),
    "position": (
        "Both sides have a point, but neither has looked hard at {c}.",
        "The honest answer depends on {c}, and on that the evidence favours my view.",
        "Once you weigh {c}, a simple yes or no stops looking sensible.",
        "The details decide this, not the slogan, and the detail that matters most is {c}.",
        "What works in one place can fail in the next, and which one it is depends on {c}.",
    ),
}
FINDINGS = {
    "for": (
        "P:in {n} of the {m} places that tried something similar, {c} came out ahead within {years}",
        "C:in {n} of the {m} cases I have looked at, {c} came out ahead within {years}",
        "about {pct} per cent of the people most affected said afterwards that they would not go back",
        "the early complaints faded within a year, while the gains for {c} stayed",
        "the predicted chaos never arrived, and {c} came out ahead",
        "P:within {years}, support for the change was higher than before it started",
        "the places that moved first are now the ones others copy, and the gains for {c} are the reason",
    ),
    "against": (
        "P:in {n} of the {m} places that tried something similar, {c} paid the price within {years}",
        "C:in {n} of the {m} cases I have looked at, {c} paid the price within {years}",
        "roughly {pct} per cent of the people affected were never consulted, and most opposed it once they were",
        "the costs arrived on day one, while the promised benefits were still being promised {years} later",
        "the people with the least room to adapt paid the most, and {c} paid the price",
        "the promised gains shrank with every review, and {c} ended up worse off",
        "{pct} per cent of the people asked afterwards said they were worse off",
    ),
    "position": (
        "the results vary from place to place, and most of the difference comes down to {c}",
        "in {n} of the {m} cases I know, the outcome turned on the details rather than the principle",
        "about {pct} per cent of the people affected wanted something between the two extremes",
        "the same idea produced opposite results in neighbouring places, because {c} differed",
    ),
}
QUOTES = (
    '{Opp} said: "{phrase}".',
    '{Opp} summed up their case in one line: "{phrase}".',
    'Let me take {opp}\'s words directly: "{phrase}".',
    '{Opp}\'s argument leans on this claim: "{phrase}".',
    'Let me start with what {opp} actually said: "{phrase}".',
)
CLOSING_QUOTES = (
    '{Opp}\'s best line in this debate was "{phrase}".',
    'Everything {opp} argued comes down to one line: "{phrase}".',
    'Remember {opp}\'s words: "{phrase}".',
)
ALLY_QUOTES = (
    '{Opp} made a point I want to build on: "{phrase}".',
    'I agree with {opp}, who said: "{phrase}".',
)
COUNTERS = {
    "for": (
        "P:That is a fair worry, but it describes the first months of {it}, not the years after.",
        "P:But every reform of this kind met the same objection, and the places that went ahead rarely went back.",
        "C:That is a fear about {it}, not a finding, and the record on {c} says otherwise.",
        (
            "But that compares {it} with a perfect world, when the real comparison is the status quo, and the status"
            " quo is failing {c}."
        ),
        "That is an assertion, not evidence, and the evidence on {c} points the other way.",
        "P:Change always has critics at the start; what matters is whether {c} is better off at the end, and it is.",
        "Look at where it has actually happened and you find the opposite, above all on {c}.",
    ),
    "against": (
        "That sounds appealing, but it assumes the benefits arrive and the costs do not.",
        "But good intentions are not the test; the test is what happens to {c}, and there the record is poor.",
        "That is an assertion, not evidence, and the evidence on {c} points the other way.",
        "P:But notice what that leaves out: who pays for {it}, and what it does to {c}.",
        "C:But that is a forecast, not a record, and forecasts about {it} have been wrong before.",
        "That describes the plan, not the result, and the result is what {c} has to live with.",
        "It is easy to promise and harder to show, and on {c} nobody has shown it.",
    ),
    "position": (
        "There is something in that, but it is only half the picture, because {c} cuts both ways.",
        "I would not go that far: the evidence on {c} is more mixed than that.",
        "Both halves of that can be true, which is exactly why the details matter for {c}.",
    ),
}
NUMBER_COUNTERS = {  # when the phrase answered is a figure
    "for": (
        "Numbers like that depend on which places you count, and the wider record on {c} points the other way.",
        "That figure catches the disruption of the first months and misses what came after.",
    ),
    "against": (
        "That figure counts the people who adapted, not the ones who were pushed out.",
        "Numbers like that depend on which places you count, and the wider record on {c} points the other way.",
    ),
    "position": ("That figure is real, but it hides how much the results varied, above all on {c}.",),
}
FIGURE = re.compile(r"\d|\bper cent\b|\b(one|two|three|four|five|six|seven|eight|nine|ten) of the\b", re.IGNORECASE)
ALLY_COUNTERS = (
    "I would add that {c} makes the point even stronger.",
    "And the effect on {c} only strengthens it.",
)
PRESS = (
    "If {opp} were right, we would already see it in {c}, and we do not.",
    "{Opp} has still not told us what happens to {c}.",
    "Nothing {opp} said changes the picture on {c}.",
)
SIGNPOSTS = (
    "That is my opening case, and I look forward to hearing how the other side answers it.",
    "I will come back to {c1} when we reach the rebuttals.",
    "Those are the grounds on which I ask you to judge this debate.",
)
MIDDLE_ENDS = {
    "for": (
        "Until the other side answers the point about {c0}, the case for the motion stands.",
        "That is why I remain firmly for the motion.",
    ),
    "against": (
        "Until the other side answers the point about {c0}, the case against the motion stands.",
        "That is why I remain firmly against the motion.",
    ),
    "position": (
        "That is why I hold my position: {stance}.",
        "So my view is unchanged: {stance}.",
    ),
}
FINAL_LEADS = (
    "In closing, let me bring the threads of this debate together.",
    "This is my final word, so let me be direct.",
    "As we reach the last round, the picture is clear.",
    "We have heard the arguments; let me weigh them.",
    "One last time, here is what this debate has shown.",
)
SUMMARIES = (
    "Across this debate I have argued from {c0}, from {c1} and from {c2}, and each points the same way.",
    "Three things have carried my case: {c0}, {c1} and {c2}.",
)
APPEALS = {
    "for": (
        "For these reasons I urge you to support the motion.",
        "P:The case stands: {proposal} is worth doing, and the alternative costs us more.",
        "Weigh the arguments on {c0} and {c1}, and I believe you will vote for the motion.",
    ),
    "against": (
        "For these reasons I urge you to vote against the motion.",
        "The burden was on the other side, and it has not been met; I ask you to oppose the motion.",
        "Weigh the arguments on {c0} and {c1}, and I believe you will reject the motion.",
    ),
    "position": (
        "That is why my position holds: {stance}.",
        "Weigh it carefully, and I think you will land where I have: {stance}.",
    ),
}
