"""Settings of the orchestrator service (environment variables or flags, read once)."""

from pydantic import Field

from services.common.llm.settings import LLMSettings
from services.common.settings import DatabaseSettings, ServiceSettings
from services.common.text import MAX_PERSONA_LENGTH, MAX_STANCE_LENGTH, MAX_TOPIC_LENGTH


# DATABASE_URL (DatabaseSettings): the debates and their event log in PostgreSQL (empty: orchestrator.sqlite3 in
# DATA_DIR).
class OrchestratorSettings(LLMSettings, DatabaseSettings, ServiceSettings):
    port: int = Field(50051, ge=0, le=65535)
    judge_service_addr: str = Field("127.0.0.1:50052", description="host:port of the judge service")
    accounting_service_addr: str = Field("127.0.0.1:50053", description="host:port of the accounting service")

    # Scheduler
    max_running_debates: int = Field(200, ge=1, description="debates generating at once")
    max_queued_debates: int = Field(1000, ge=0, description="debates waiting for a running slot")

    # Replicas on one PostgreSQL (DATABASE_URL): a replica owns the debates it runs through leases
    replica_id: str = Field(
        "", max_length=200, description="this replica's name in debate leases (empty: host and a random suffix)"
    )
    lease_seconds: float = Field(
        5.0, gt=0, le=300, description="a debate's lease lasts this long unless renewed; then another replica takes it"
    )

    # Limits of a debate config
    max_participants: int = Field(8, ge=2, le=64)
    max_rounds: int = Field(20, ge=1, le=1000)
    max_topic_chars: int = Field(MAX_TOPIC_LENGTH, ge=1)
    max_persona_chars: int = Field(MAX_PERSONA_LENGTH, ge=1)
    max_stance_chars: int = Field(MAX_STANCE_LENGTH, ge=1)
    max_tokens_per_turn_limit: int = Field(4096, ge=1, description="upper bound of max_tokens_per_turn")
    default_max_tokens_per_turn: int = Field(512, ge=1)
    default_window_size: int = Field(5, ge=1)
    default_context_tokens: int = Field(4096, ge=64)
    max_context_tokens: int = Field(200_000, ge=64)
    default_judge_model: str = Field("sim/judge")

    # Live events
    coalesce_ms: float = Field(25.0, gt=0, le=200, description="token deltas are batched and stored this often")
    heartbeat_seconds: float = Field(10.0, gt=0, description="a heartbeat after this much silence on a stream")
    subscriber_max_lag: int = Field(4096, ge=16, description="events a subscriber may fall behind before it is cut off")
    memory_tail_events: int = Field(4096, ge=64, description="recent events of a debate kept in memory for subscribers")
    max_streams_per_debate: int = Field(100_000, ge=1, description="concurrent event streams of one debate")
    # The per-caller cap is the common one (every service's auth interceptor enforces it); the
    # orchestrator, whose streams are the ones watchers hold, sets a default.
    max_streams_per_caller: int = Field(
        10_000, ge=0, description="server-streaming calls one tenant may hold open at once (0: no limit)"
    )

    # Engine
    max_turn_attempts: int = Field(3, ge=1, description="attempts of a debater turn whose model call fails")
    rpc_timeout_seconds: float = Field(60.0, gt=0, description="deadline of a call to the judge or accounting")
    judge_attempts: int = Field(3, ge=1)

    # Judge calibration and audits (i18j; services/orchestrator/judge_report.py)
    calibration_min_votes: int = Field(
        3, ge=1, description="human votes a completed debate needs to count for a judge's calibration"
    )
    audit_max_length_bias: float = Field(
        0.5, ge=0, le=1, description="a judge whose |Spearman rho| of score vs turn length reaches this is flagged"
    )
    audit_max_position_bias: float = Field(
        0.5, ge=0, le=1, description="a judge whose |Spearman rho| of score vs shown position reaches this is flagged"
    )
    audit_max_ordering_disagreement: float = Field(
        0.25, ge=0, le=1, description="a judge whose rotated orderings disagree more than this (mean) is flagged"
    )
    audit_significance: float = Field(
        0.05, gt=0, le=1, description="a bias correlation flags a judge only with a p-value below this"
    )
