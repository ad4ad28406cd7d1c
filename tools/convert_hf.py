"""Convert between a Hugging Face model directory and a bmjax "pretrained" directory.

    python tools/convert_hf.py --from_hf HF_DIR --out BMJAX_DIR [--to_orbax]
    python tools/convert_hf.py --to_hf BMJAX_DIR --out HF_DIR

A bmjax pretrained directory holds:
  config.json + model.safetensors  the model in Hugging Face format, written by
                                   bmjax.models.save_pretrained (bmjax.models.from_pretrained reads it)
  bmjax_model.json                 the bmjax model config keys (model.*), for a training config
  checkpoint/                      with --to_orbax: the model parameters as an orbax checkpoint
                                   (StandardCheckpointer, a plain nested dict of arrays)

--from_hf loads HF_DIR into bmjax (GPT2LMHeadModel, BertModel, BertForPreTraining,
BertForMaskedLM, BertForSequenceClassification; safetensors only), and writes the above.
--to_hf builds the model from bmjax_model.json and takes its parameters from checkpoint/
when it exists, else from model.safetensors, then writes config.json + model.safetensors
that transformers' from_pretrained loads.
A bad directory or an unsupported model prints one line `error: ...` and exits with 2.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys

import bmjax  # noqa: F401  (sets PJRT_NPROC before jax starts)
import jax
import orbax.checkpoint as ocp
from flax import nnx

from bmjax.errors import ConfigError
from bmjax.models import build_model, hf

MODEL_KEYS_FILE = "bmjax_model.json"
CHECKPOINT_DIR = "checkpoint"


def _param_dict(model: nnx.Module) -> dict:
    return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def from_hf(hf_dir: pathlib.Path, out: pathlib.Path, to_orbax: bool) -> None:
    model = hf.from_pretrained(hf_dir)
    hf.save_pretrained(model, out)
    (out / MODEL_KEYS_FILE).write_text(json.dumps(hf.config_from_hf(hf_dir), indent=2) + "\n")
    if to_orbax:
        with ocp.StandardCheckpointer() as ckptr:
            ckptr.save((out / CHECKPOINT_DIR).resolve(), _param_dict(model), force=True)


def to_hf(bmjax_dir: pathlib.Path, out: pathlib.Path) -> None:
    keys_file = bmjax_dir / MODEL_KEYS_FILE
    if not keys_file.is_file():
        raise ConfigError(str(bmjax_dir), f"no {MODEL_KEYS_FILE}: not a bmjax pretrained directory "
                                          "(write one with --from_hf)")
    if not (bmjax_dir / CHECKPOINT_DIR).is_dir():
        model = hf.from_pretrained(bmjax_dir)
    else:
        model = build_model(json.loads(keys_file.read_text()), rngs=nnx.Rngs(0))
        state = nnx.state(model, nnx.Param)
        target = jax.tree.map(ocp.utils.to_shape_dtype_struct, nnx.to_pure_dict(state))
        with ocp.StandardCheckpointer() as ckptr:
            restored = ckptr.restore((bmjax_dir / CHECKPOINT_DIR).resolve(), target)
        nnx.replace_by_pure_dict(state, restored)
        nnx.update(model, state)
    hf.save_pretrained(model, out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    direction = parser.add_mutually_exclusive_group(required=True)
    direction.add_argument("--from_hf", type=pathlib.Path, help="Hugging Face directory to read")
    direction.add_argument("--to_hf", type=pathlib.Path, help="bmjax pretrained directory to read")
    parser.add_argument("--out", type=pathlib.Path, required=True, help="directory to write")
    parser.add_argument("--to_orbax", action="store_true",
                        help="with --from_hf: also write the parameters as an orbax checkpoint")
    args = parser.parse_args(argv)
    if args.to_orbax and args.to_hf:
        parser.error("--to_orbax goes with --from_hf")
    if args.from_hf:
        from_hf(args.from_hf, args.out, args.to_orbax)
    else:
        to_hf(args.to_hf, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
