"""bmjax-convert: a training run's newest checkpoint as a Hugging Face model directory.

    bmjax-convert --to_hf WORKDIR --out DIR
    bmjax-convert --to_hf runs/shakespeare --out hf_model
    python -m bmjax.cli.convert ...       (the same)

Reads WORKDIR/config.json and the parameters of the newest checkpoint in WORKDIR/checkpoints (by name,
without the optimizer state), and writes DIR/config.json + DIR/model.safetensors (float32), which
transformers' from_pretrained loads with the same outputs as the bmjax model:
  GPT (layernorm, gelu, learned positions, biases; the GPT-2 shape)   GPT2LMHeadModel
  BERT with model.heads = pretraining | mlm | classification | none   BertForPreTraining | BertForMaskedLM |
                                                                      BertForSequenceClassification | BertModel
The other way needs no conversion: bmjax.models.from_pretrained(DIR) loads a Hugging Face directory, and
`--config.train.init_from=DIR` starts a run from one. A bad workdir, a model with no Hugging Face equivalent
or an --out directory that is not empty prints one line, `error: ...`, and exits with status 2.
"""
from __future__ import annotations

import pathlib
import sys

from absl import flags

from bmjax.cli import common
from bmjax.errors import ConfigError


def define_flags(argv: list[str]) -> flags.FlagValues:
    fv = flags.FlagValues()
    flags.DEFINE_string("to_hf", None, "A bmjax-train workdir (config.json, checkpoints/).", flag_values=fv)
    flags.DEFINE_string("out", None, "The Hugging Face directory to write (new or empty).", flag_values=fv)
    return fv


def to_hf(workdir, out) -> pathlib.Path:
    """Write the newest checkpoint of `workdir` as a Hugging Face directory `out`; returns the step folder read."""
    from bmjax import workdir as workdir_lib
    from bmjax.models import save_pretrained

    out = pathlib.Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError("--out", f"{out} exists and is not an empty directory")
    config = workdir_lib.read_config(workdir, "--to_hf")
    step_dir = workdir_lib.newest_checkpoint(workdir, "--to_hf")
    model = workdir_lib.load_model(workdir, config, "--to_hf")
    save_pretrained(model, out)
    return step_dir


def run(fv: flags.FlagValues):
    for name in ("to_hf", "out"):
        if not fv[name].value:
            raise ConfigError(f"--{name}", "required")
    step_dir = to_hf(fv.to_hf, fv.out)
    print(f"wrote {fv.out} from {step_dir}", flush=True)


def main(argv: list[str] | None = None) -> int:
    return common.run(define_flags, run, argv, usage=__doc__)


if __name__ == "__main__":
    sys.exit(main())
