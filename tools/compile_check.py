"""The bmjax-compile-check command (bmjax/compile_check_cli.py), runnable from a checkout that is not pip-installed:

    python tools/compile_check.py --config configs/gpt/gpt2.py:size=350m --devices 64 --config.mesh.fsdp=8
"""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # this checkout's bmjax comes first

from bmjax.compile_check_cli import run_main  # noqa: E402

if __name__ == "__main__":
    run_main()
