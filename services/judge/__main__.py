"""`python -m services.judge`: run the judge service until SIGTERM."""

from services.common.server import run_service
from services.judge.server import build_service
from services.judge.settings import JudgeSettings


def main(argv: list[str] | None = None) -> None:
    run_service("judge", JudgeSettings, build_service, argv)


if __name__ == "__main__":
    main()
