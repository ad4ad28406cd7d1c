"""What a test compares of a directory when it checks that nothing was changed: every file's bytes."""
import pathlib


def snapshot(directory) -> dict:
    """{relative path: bytes} of every file under `directory`."""
    directory = pathlib.Path(directory)
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}
