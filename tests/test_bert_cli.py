"""BERT configs through the CLI: bad tokenizer files, labels and columns are one line naming the culprit (exit 2);
the configs themselves resolve and validate."""
import pytest

from bmjax import validate
from helpers import commands
from helpers.configs import load_config


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    base = tmp_path_factory.mktemp("bert_cli")
    (base / "good.csv").write_text("text,label\n" + "".join(f"row {i},{i % 2}\n" for i in range(20)))
    (base / "bad_label.csv").write_text("text,label\nfine,1\nfine,0\nwhat,positive\n")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(400)]
    (base / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return base


def finetune(path):
    return ["--config", f"configs/bert/finetune.py:data={path},labels=2,model=tiny,runlocal"]


CASES = {
    "tokenizer file missing": (lambda f: ["--config", "configs/bert/tiny.py:runlocal",
                                          f"--config.data.tokenizer={f / 'missing' / 'vocab.txt'}"],
                               "data.tokenizer", "no such tokenizer file"),
    "tokenizer larger than model.vocab_size": (lambda f: ["--config", "configs/bert/tiny.py:runlocal",
                                                          f"--config.data.tokenizer={f / 'vocab.txt'}"],
                                               "model.vocab_size", "vocab.txt"),
    "unknown label": (lambda f: finetune(f / "bad_label.csv") + ["--config.data.eval_path=" + str(f / "good.csv")],
                      "data.path", "bad_label.csv:4: label 'positive' is not one of data.labels"),
    "text pair column missing": (lambda f: finetune(f / "good.csv") + ["--config.data.text_pair_column=hypothesis"],
                                 "data.text_pair_column", "column 'hypothesis' is not in"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_bert_input_is_one_line_naming_it(files, tmp_path, case):
    make_args, culprit, words = CASES[case]
    result = commands.train(*make_args(files), "--workdir", str(tmp_path / "run"))
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {culprit}: ") and words in lines[0], lines


def test_bert_configs_resolve_and_validate(files, tmp_path):
    base = load_config("configs/bert/base.py")
    assert (base.model.num_layers, base.model.d_model, base.model.num_heads, base.model.vocab_size,
            base.model.max_len, base.model.d_ff) == (12, 768, 12, 30522, 512, 3072)
    finetune_config = load_config("configs/bert/finetune.py", f"data={files / 'good.csv'},labels=2")
    assert finetune_config.model.d_model == 768 and finetune_config.train.epochs == 3
    assert (finetune_config.data.batch_size, finetune_config.optim.lr, finetune_config.optim.warmup_steps,
            finetune_config.optim.weight_decay, finetune_config.optim.schedule) == (16, 2e-5, 500, 0.01, "linear")
    for config in (load_config("configs/bert/tiny.py"), load_config("configs/bert/base.py", "runlocal"),
                   finetune_config):
        validate.validate_config(config, tmp_path)
    assert load_config("configs/bert/finetune.py", "data=glue/sst2,labels=2").data.source == "tfds"
    with pytest.raises(ValueError, match="labels"):
        load_config("configs/bert/finetune.py", f"data={files / 'good.csv'}")
