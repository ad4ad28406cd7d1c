"""The bmjax-convert command (bmjax/convert_cli.py), runnable from a checkout that is not pip-installed:

    python tools/convert_hf.py --to_hf WORKDIR --out DIR
"""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # this checkout's bmjax comes first

from bmjax.convert_cli import run_main  # noqa: E402

if __name__ == "__main__":
    run_main()
