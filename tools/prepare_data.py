"""Tokenise text, JSONL or a TFDS dataset into ArrayRecord token shards: see bmjax/data/prepare_cli.py.

    python tools/prepare_data.py --input data/tinyshakespeare.txt --tokenizer byte --out runs/shards/shakespeare
"""
from bmjax.data.prepare_cli import run_main

if __name__ == "__main__":
    run_main()
