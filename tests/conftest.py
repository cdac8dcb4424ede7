import os

# Tokenizer files and prices come from installed packages only (see ARCHITECTURE.md).
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

# The stores' backends (SQLite, and one PostgreSQL server for the whole session).
pytest_plugins = ("tests.support.backends", "tests.support.ledgers", "tests.support.orchestrator_stores")
