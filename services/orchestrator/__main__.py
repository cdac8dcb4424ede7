"""`python -m services.orchestrator`: run the orchestrator service until SIGTERM."""

import sys

from services.common.logs import configure_logging
from services.common.server import run
from services.common.settings import load_settings
from services.orchestrator.server import build_service
from services.orchestrator.settings import OrchestratorSettings


def main(argv: list[str] | None = None) -> None:
    settings = load_settings(OrchestratorSettings, sys.argv[1:] if argv is None else argv)
    configure_logging("orchestrator", settings.log_level)

    async def serve() -> None:
        service = await build_service(settings)
        await service.serve_until_signal()

    run(serve)


if __name__ == "__main__":
    main()
