"""bmjax's commands, one module each, every one `main(argv=None) -> int` over common.py (flags, --help,
one-line errors, exit codes):

    train            bmjax-train            compile_check    bmjax-compile-check
    sample           bmjax-sample           sweep            bmjax-sweep
    convert          bmjax-convert          scaling          bmjax-scaling
    prepare_data     bmjax-prepare-data     train_tokenizer  bmjax-train-tokenizer
    eval             bmjax-eval

`python -m bmjax.cli.NAME` runs the same command. A command parses its flags and reports; what it does lives in
the library (train/, models/, data/, scaling/, workdir).
"""
