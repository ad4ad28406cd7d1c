"""Packed batches (data.packing=segments): every attention implementation keeps documents apart, values and
gradients, and the LM loss scores each document as if it were alone and never scores padding.

The batch follows the data contract: segment_ids 0 = padding, 1, 2, ... = the documents of a row; positions
restart at 0 in each document. A kernel that silently ignored segment ids (MaxText once shipped one) fails
`test_every_implementation_keeps_documents_apart`: with the documents' boundaries ignored, the second
document's outputs mix in the first's keys, and the per-document reference differs by far more than the
tolerance (checked in the same test, so the test cannot pass vacuously).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bmjax.models import attention
from bmjax.models import build_model
from bmjax.parallel import context
from bmjax.parallel import mesh as mesh_lib
from bmjax.train import tasks
from helpers.compile import FAST_COMPILE

# 128 is the shortest length the splash kernel takes; every implementation gets the same batch.
B, L, H, K, D = 2, 128, 4, 2, 8
DOCS = [[40, 50], [70, 58]]  # document lengths per row; row 0 ends in 38 padding tokens


def packed_layout():
    """segment_ids and positions [B, L] of the contract, from DOCS."""
    segments, positions = np.zeros((B, L), np.int32), np.zeros((B, L), np.int32)
    for row, lengths in enumerate(DOCS):
        start = 0
        for doc, length in enumerate(lengths, start=1):
            segments[row, start:start + length] = doc
            positions[row, start:start + length] = np.arange(length)
            start += length
    return jnp.asarray(segments), jnp.asarray(positions)


def document_spans():
    for row, lengths in enumerate(DOCS):
        start = 0
        for length in lengths:
            yield row, slice(start, start + length)
            start += length


def qkv(seed=0):
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    return (jax.random.normal(k1, (B, L, H, D)), jax.random.normal(k2, (B, L, K, D)),
            jax.random.normal(k3, (B, L, K, D)))


def per_document_reference(q, k, v):
    """Each document attended alone (causal), zeros on padding: what packed attention must equal."""
    out = jnp.zeros_like(q)
    for row, span in document_spans():
        alone = attention.attention_reference(q[row:row + 1, span], k[row:row + 1, span], v[row:row + 1, span],
                                              causal=True)
        out = out.at[row, span].set(alone[0])
    return out


def scored(out, segments):
    """A scalar that weighs every real token's output differently (padding rows excluded), for gradients."""
    weights = jnp.sin(jnp.arange(out.size, dtype=jnp.float32)).reshape(out.shape)
    return jnp.sum(out * weights * (segments != 0)[:, :, None, None])


# implementation -> the mesh it runs under (None: no mesh). Ring shards the length 4 ways, so documents cross
# block boundaries and segment ids must travel round the ring with their keys; splash runs in Pallas interpret
# mode here, inside shard_map over a data x fsdp x tensor mesh.
IMPLEMENTATIONS = [
    pytest.param("xla", None, id="xla"),
    pytest.param("cudnn", None, id="cudnn", marks=pytest.mark.skipif(
        jax.default_backend() != "gpu", reason="cuDNN attention needs an NVIDIA GPU")),
    pytest.param("ring", dict(sequence=4, tensor=2), id="ring"),
    pytest.param("splash", dict(data=2, fsdp=2, tensor=2), id="splash"),
]


def test_the_list_of_implementations_is_complete():
    """Every implementation a user can name is covered below (a new one must join the list)."""
    covered = {p.values[0] for p in IMPLEMENTATIONS} | {"reference"}
    assert covered == set(attention.IMPLEMENTATIONS)


@pytest.mark.parametrize("implementation,mesh_sizes", IMPLEMENTATIONS)
def test_every_implementation_keeps_documents_apart(implementation, mesh_sizes):
    segments, _ = packed_layout()
    q, k, v = qkv()
    dtype = jnp.bfloat16 if implementation == "cudnn" else jnp.float32  # cuDNN's fused path is 16-bit only
    q, k, v = (x.astype(dtype) for x in (q, k, v))
    want = jax.jit(per_document_reference)(q, k, v).astype(jnp.float32)
    want_grads = jax.jit(jax.grad(lambda q, k, v: scored(per_document_reference(q, k, v).astype(jnp.float32),
                                                          segments), argnums=(0, 1, 2)))(q, k, v)

    def loss(q, k, v):
        out = attention.attend(q, k, v, causal=True, segment_ids=segments, implementation=implementation)
        return scored(out.astype(jnp.float32), segments), out

    fn = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)
    if mesh_sizes is None:
        (_, got), grads = jax.jit(fn)(q, k, v)
    else:
        mesh = mesh_lib.make_mesh(dict(dict(data=1, fsdp=1, tensor=1, sequence=1), **mesh_sizes))
        with context.activate(mesh):
            (_, got), grads = jax.jit(fn).lower(q, k, v).compile(compiler_options=FAST_COMPILE)(q, k, v)

    real = np.asarray(segments != 0)
    got = np.asarray(got.astype(jnp.float32))
    tol = dict(atol=2e-2, rtol=2e-2) if dtype == jnp.bfloat16 else dict(atol=1e-5, rtol=1e-5)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got[real], np.asarray(want)[real], **tol)
    for g, w in zip(grads, want_grads):
        np.testing.assert_allclose(np.asarray(g.astype(jnp.float32)), np.asarray(w.astype(jnp.float32)), **tol)
    # The batch is one where ignoring the segments would show: plain causal attention differs from the packed
    # result far beyond the tolerance on the second documents.
    ignoring = np.asarray(attention.attention_reference(q, k, v, causal=True).astype(jnp.float32))
    second = np.asarray(segments == 2)
    assert np.abs(ignoring[second] - got[second]).max() > 0.1


def tiny_gpt(position, attention_impl="xla"):
    return build_model(dict(name="gpt", vocab_size=61, d_model=32, num_layers=2, num_heads=4, max_len=L,
                            position=position, attention=attention_impl), rngs=nnx.Rngs(0))


def packed_lm_batch(seed=0):
    segments, positions = packed_layout()
    tokens = jax.random.randint(jax.random.key(seed), (B, L + 1), 0, 61)
    return dict(inputs=tokens[:, :-1], targets=tokens[:, 1:], segment_ids=segments, positions=positions)


def one_document_per_row(batch):
    """The same documents, each alone at the start of its own row, the rest weighted 0: no segments needed
    (causal attention keeps a row's first document apart from what follows it)."""
    rows = [(row, span) for row, span in document_spans()]
    inputs = np.zeros((len(rows), L), np.int32)
    targets, weights = np.zeros_like(inputs), np.zeros((len(rows), L), np.float32)
    for i, (row, span) in enumerate(rows):
        n = span.stop - span.start
        inputs[i, :n], targets[i, :n] = batch["inputs"][row, span], batch["targets"][row, span]
        weights[i, :n] = 1.0
    return dict(inputs=jnp.asarray(inputs), targets=jnp.asarray(targets), weights=jnp.asarray(weights))


def loss_and_grads(model, batch):
    graphdef, params = nnx.split(model)
    fn = jax.value_and_grad(lambda params: tasks.lm_loss(nnx.merge(graphdef, params), batch, None)[0])
    return jax.jit(fn).lower(params).compile(compiler_options=FAST_COMPILE)(params)


@pytest.mark.parametrize("position", ["learned", "rotary"])
def test_packed_lm_loss_is_each_documents_own(position):
    """Positions restart, attention stays in the document, padding is not scored: the packed loss equals the
    loss of the documents run one by one, and its gradients are the same."""
    model = tiny_gpt(position)
    batch = packed_lm_batch()
    packed_loss, packed_grads = loss_and_grads(model, batch)
    alone_loss, alone_grads = loss_and_grads(model, one_document_per_row(batch))
    np.testing.assert_allclose(packed_loss, alone_loss, rtol=1e-5)
    for got, want in zip(jax.tree.leaves(packed_grads), jax.tree.leaves(alone_grads)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    count = tasks.lm_loss(model, batch, None)[1]["loss"][1]
    assert float(count) == sum(sum(lengths) for lengths in DOCS)  # padding is not counted


def test_padding_changes_nothing_and_stays_finite():
    """Whatever sits in the padding (inputs or targets) leaves the loss and the real tokens' logits alone."""
    model = tiny_gpt("learned")
    batch = packed_lm_batch()
    pad = batch["segment_ids"] == 0
    noisy = dict(batch, inputs=jnp.where(pad, 60, batch["inputs"]), targets=jnp.where(pad, 7, batch["targets"]))
    np.testing.assert_allclose(tasks.lm_loss(model, noisy, None)[0], tasks.lm_loss(model, batch, None)[0],
                               rtol=1e-6)
    logits = model(batch["inputs"], positions=batch["positions"], segment_ids=batch["segment_ids"])
    assert np.isfinite(np.asarray(logits)).all()
    # Without segment ids the same tokens see the previous document: the loss changes (the test can fail).
    unpacked = dict(inputs=batch["inputs"], targets=batch["targets"])
    assert abs(float(tasks.lm_loss(model, unpacked, None)[0]) - float(tasks.lm_loss(model, batch, None)[0])) > 1e-3


def test_splash_gpt_equals_xla_gpt_on_a_packed_batch():
    """The whole model with the TPU kernel (interpret mode) gives the XLA model's loss on a packed batch."""
    batch = packed_lm_batch(seed=1)
    want = tasks.lm_loss(tiny_gpt("rotary"), batch, None)[0]
    got = tasks.lm_loss(tiny_gpt("rotary", "splash"), batch, None)[0]
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_bert_packed_rows_encode_each_document_alone():
    """BERT reading a packed source: with segment ids and restarting positions, each document's hidden states
    are those of the document encoded on its own (bidirectional attention stays inside the document)."""
    model = build_model(dict(name="bert", heads="none", vocab_size=61, d_model=32, num_layers=2, num_heads=4,
                             d_ff=64, max_len=L, dropout=0.0), rngs=nnx.Rngs(0))
    segments, positions = packed_layout()
    ids = jax.random.randint(jax.random.key(3), (B, L), 0, 61)
    packed = model.encode(ids, positions=positions, segment_ids=segments)
    for row, span in document_spans():
        alone = model.encode(ids[row:row + 1, span])
        np.testing.assert_allclose(packed[row, span], alone[0], atol=1e-5)
    assert np.isfinite(np.asarray(packed)).all()
