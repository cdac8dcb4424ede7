"""`python -m services.accounting`: run the accounting service until SIGTERM."""

from services.accounting.server import build_service
from services.accounting.settings import AccountingSettings
from services.common.server import run_service


def main(argv: list[str] | None = None) -> None:
    run_service("accounting", AccountingSettings, build_service, argv)


if __name__ == "__main__":
    main()
