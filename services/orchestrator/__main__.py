"""`python -m services.orchestrator`: run the orchestrator service until SIGTERM."""

from services.common.server import run_service
from services.orchestrator.server import build_service
from services.orchestrator.settings import OrchestratorSettings


def main(argv: list[str] | None = None) -> None:
    run_service("orchestrator", OrchestratorSettings, build_service, argv)


if __name__ == "__main__":
    main()
