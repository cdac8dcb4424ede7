"""Built-in simulated models: offline, deterministic for a seed, paced like a real model.

Four modules, each with one reason to change:

- provider.py: `SimulatedLLM`, the `LLMClient` for every `sim/...` model: responders passed in
  by a service's composition root, else the built-in debater; pacing, `max_tokens`, and usage
  counted with the shared tokenizer;
- reading.py: `parse_context`, what the debater's messages say (topic, persona, stance, round,
  the turn to answer), in the convention the orchestrator's context builder writes;
- phrasebook.py: the word lists and sentence templates (data only);
- writer.py: `parse_motion` and `write_debate_turn`, the debater's turn from the context.

Everything the built-in debater writes starts with "[simulated]" (`SIM_LABEL`), and every
Completion says `simulated=True`.
"""

from services.common.llm.simulated.provider import (
    RESPONDER_MODELS,
    SIM_JUDGE_MODEL,
    SIM_PREFIX,
    Responder,
    SimulatedLLM,
    is_simulated,
)
from services.common.llm.simulated.reading import DebateContext, parse_context
from services.common.llm.simulated.writer import SIM_LABEL, Motion, parse_motion, write_debate_turn

__all__ = [
    "RESPONDER_MODELS",
    "SIM_JUDGE_MODEL",
    "SIM_LABEL",
    "SIM_PREFIX",
    "DebateContext",
    "Motion",
    "Responder",
    "SimulatedLLM",
    "is_simulated",
    "parse_context",
    "parse_motion",
    "write_debate_turn",
]
