"""Documents that name themselves ("~A17: ...", "alpha 17: ..."), and ArrayRecord token shards of them: the
text a pipeline batches or scores then shows which documents it delivered."""
import numpy as np

from bmjax.data import prepare


def self_naming(template: str, tag: str, count: int, *, seed: int, length: tuple[int, int]) -> list[str]:
    """`count` documents, each `template.format(tag=tag, i=i)` then random letters and spaces (how many drawn
    from [length[0], length[1]) by a generator seeded with `seed`) and a newline."""
    rng = np.random.default_rng(seed)
    return [template.format(tag=tag, i=i) + "".join(rng.choice(list("abcdefgh "), size=int(rng.integers(*length))))
            + "\n" for i in range(count)]


def write_shards(docs: list[str], path, tokenizer, num_shards: int) -> str:
    """`docs` as `num_shards` ArrayRecord shards under `path`; returns the path."""
    prepare.prepare_shards(docs, str(path), tokenizer, num_shards=num_shards, progress=False)
    return str(path)
