"""`python -m services.accounting`: run the accounting service until SIGTERM."""

import sys

from services.accounting.server import build_service
from services.accounting.settings import AccountingSettings
from services.common.logs import configure_logging
from services.common.server import run
from services.common.settings import load_settings


def main(argv: list[str] | None = None) -> None:
    settings = load_settings(AccountingSettings, sys.argv[1:] if argv is None else argv)
    configure_logging("accounting", settings.log_level)

    async def serve() -> None:
        service = await build_service(settings)
        await service.serve_until_signal()

    run(serve)


if __name__ == "__main__":
    main()
