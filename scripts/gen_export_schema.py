"""Write the JSON Schema of the JSON export (services/orchestrator/export) to docs/schemas.

python scripts/gen_export_schema.py           # rewrite docs/schemas/debate-export.v1.json
python scripts/gen_export_schema.py --check   # exit 1 when the published file drifted
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from services.orchestrator.export import json_schema_text  # noqa: E402

SCHEMA_FILE = ROOT / "docs" / "schemas" / "debate-export.v1.json"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the published schema drifted")
    args = parser.parse_args()
    text = json_schema_text()
    if args.check:
        if not SCHEMA_FILE.exists() or SCHEMA_FILE.read_text(encoding="utf-8") != text:
            print(f"{SCHEMA_FILE.relative_to(ROOT)} drifted: run python scripts/gen_export_schema.py", file=sys.stderr)
            return 1
        return 0
    SCHEMA_FILE.parent.mkdir(parents=True, exist_ok=True)
    SCHEMA_FILE.write_text(text, encoding="utf-8")
    print(f"wrote {SCHEMA_FILE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
