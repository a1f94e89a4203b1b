"""Where the external test data lives: ../shared beside the repository."""

from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
EXTERNAL = SHARED / "external-test-data"
