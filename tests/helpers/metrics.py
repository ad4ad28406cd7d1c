"""A run's metrics.jsonl rows, also while it is still writing them."""
import json
import pathlib


def read_rows(workdir) -> list[dict]:
    """Every complete row; none if there is no file yet (the last line may be half-written while the run lives)."""
    path = pathlib.Path(workdir) / "metrics.jsonl"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows
