"""Logical axis rules: where every GPT and BERT parameter lives on a (data=2, fsdp=2, tensor=2) mesh (golden
tables), config overrides, and the mesh and rule errors a user gets before anything compiles."""
import re

import jax
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from bmjax.defaults import base_config
from bmjax.errors import ConfigError
from bmjax.models import build_model
from bmjax.parallel import mesh as mesh_lib
from bmjax.parallel import rules

TINY = dict(vocab_size=64, d_model=32, num_heads=4, max_len=16)

GPT_TABLE = {  # GPT-2 layout: learned positions, biases, LayerNorm, GELU MLP, tied embedding
    "wte.embedding": ("tensor", "fsdp"),
    "wpe.embedding": (None, "fsdp"),
    "blocks.0.ln_1.scale": ("fsdp",),
    "blocks.0.ln_1.bias": ("fsdp",),
    "blocks.0.attn.query.kernel": ("fsdp", "tensor", None),
    "blocks.0.attn.query.bias": ("tensor", None),
    "blocks.0.attn.key.kernel": ("fsdp", "tensor", None),
    "blocks.0.attn.key.bias": ("tensor", None),
    "blocks.0.attn.value.kernel": ("fsdp", "tensor", None),
    "blocks.0.attn.value.bias": ("tensor", None),
    "blocks.0.attn.out.kernel": ("tensor", None, "fsdp"),
    "blocks.0.attn.out.bias": ("fsdp",),
    "blocks.0.ln_2.scale": ("fsdp",),
    "blocks.0.ln_2.bias": ("fsdp",),
    "blocks.0.mlp.fc_in.kernel": ("fsdp", "tensor"),
    "blocks.0.mlp.fc_in.bias": ("tensor",),
    "blocks.0.mlp.fc_out.kernel": ("tensor", "fsdp"),
    "blocks.0.mlp.fc_out.bias": ("fsdp",),
    "ln_f.scale": ("fsdp",),
    "ln_f.bias": ("fsdp",),
}

GPT_LLAMA_SCANNED_TABLE = {  # scan_layers (a leading, replicated layer axis), GQA, SwiGLU, RMSNorm, untied head
    "wte.embedding": ("tensor", "fsdp"),
    "blocks.ln_1.scale": (None, "fsdp"),
    "blocks.attn.query.kernel": (None, "fsdp", "tensor", None),
    "blocks.attn.key.kernel": (None, "fsdp", "tensor", None),
    "blocks.attn.value.kernel": (None, "fsdp", "tensor", None),
    "blocks.attn.out.kernel": (None, "tensor", None, "fsdp"),
    "blocks.ln_2.scale": (None, "fsdp"),
    "blocks.mlp.gate.kernel": (None, "fsdp", "tensor"),
    "blocks.mlp.up.kernel": (None, "fsdp", "tensor"),
    "blocks.mlp.down.kernel": (None, "tensor", "fsdp"),
    "ln_f.scale": ("fsdp",),
    "lm_head.kernel": ("fsdp", "tensor"),
}

BERT_TABLE = {  # pretraining heads
    "wte.embedding": ("tensor", "fsdp"),
    "wpe.embedding": (None, "fsdp"),
    "token_types.embedding": (None, "fsdp"),
    "ln_embed.scale": ("fsdp",),
    "ln_embed.bias": ("fsdp",),
    "blocks.0.attn.query.kernel": ("fsdp", "tensor", None),
    "blocks.0.attn.query.bias": ("tensor", None),
    "blocks.0.attn.key.kernel": ("fsdp", "tensor", None),
    "blocks.0.attn.key.bias": ("tensor", None),
    "blocks.0.attn.value.kernel": ("fsdp", "tensor", None),
    "blocks.0.attn.value.bias": ("tensor", None),
    "blocks.0.attn.out.kernel": ("tensor", None, "fsdp"),
    "blocks.0.attn.out.bias": ("fsdp",),
    "blocks.0.ln_attn.scale": ("fsdp",),
    "blocks.0.ln_attn.bias": ("fsdp",),
    "blocks.0.mlp.fc_in.kernel": ("fsdp", "tensor"),
    "blocks.0.mlp.fc_in.bias": ("tensor",),
    "blocks.0.mlp.fc_out.kernel": ("tensor", "fsdp"),
    "blocks.0.mlp.fc_out.bias": ("fsdp",),
    "blocks.0.ln_mlp.scale": ("fsdp",),
    "blocks.0.ln_mlp.bias": ("fsdp",),
    "pooler.kernel": ("fsdp", None),
    "pooler.bias": (None,),
    "mlm.dense.kernel": ("fsdp", None),
    "mlm.dense.bias": (None,),
    "mlm.ln.scale": ("fsdp",),
    "mlm.ln.bias": ("fsdp",),
    "mlm.bias": ("tensor",),
    "nsp.kernel": ("fsdp", None),
    "nsp.bias": (None,),
}


def param_specs(model_cfg, mesh, rule_table=rules.DEFAULT_RULES):
    model = nnx.eval_shape(lambda: build_model(model_cfg, rngs=nnx.Rngs(0)))
    _, params = nnx.split(model, nnx.Param)
    table = rules.spec_table(params, mesh, rule_table)
    for key, (shape, names, spec) in table.items():  # the table a user reads with `pytest -s`
        print(f"{key:32s} {str(shape):16s} {str(names):40s} {spec}")
    return {key: tuple(spec) for key, (_, _, spec) in table.items()}


@pytest.fixture(scope="module")
def mesh222():
    return mesh_lib.make_mesh(dict(data=2, fsdp=2, tensor=2, sequence=1))


@pytest.mark.parametrize("model_cfg,golden", [
    (dict(name="gpt", num_layers=1, **TINY), GPT_TABLE),
    (dict(name="gpt", num_layers=2, num_kv_heads=2, scan_layers=True, mlp="swiglu", norm="rmsnorm",
          use_bias=False, tie_embeddings=False, position="rotary", **TINY), GPT_LLAMA_SCANNED_TABLE),
    (dict(name="bert", num_layers=1, d_ff=64, **TINY), BERT_TABLE),
], ids=["gpt2", "gpt_llama_scanned", "bert"])
def test_param_partition_specs_under_default_rules(mesh222, model_cfg, golden):
    assert param_specs(model_cfg, mesh222) == golden


def test_optimizer_state_is_sharded_like_its_params(mesh222):
    """Adam's moments get their parameter's sharding (ZeRO-3: optimizer state split over fsdp too)."""
    from bmjax.train import optim, setup

    c = base_config()
    c.model.update(name="gpt", num_layers=1, **TINY)
    tx, _ = optim.make_optimizer(c.optim, 10)
    _, _, shardings, _ = setup.create_state(c, mesh222, tx)
    kernel = shardings.params["blocks"][0]["mlp"]["fc_in"]["kernel"].get_raw_value()
    moments = [leaf for leaf in jax.tree.leaves(shardings.opt_state)
               if getattr(leaf, "spec", None) == P("fsdp", "tensor")]
    assert kernel.spec == P("fsdp", "tensor")
    assert len(moments) >= 2  # mu and nu of fc_in.kernel (and of every other [embed, mlp] kernel)


def test_default_config_rules_are_the_default_table():
    assert rules.rules_from_config(base_config().mesh) == rules.DEFAULT_RULES


def test_config_overrides_move_parameters(mesh222):
    """`--config.mesh.rules.embed=` (replicate: no FSDP) and `mlp=tensor,fsdp` (2-D MLP sharding)."""
    c = base_config()
    c.mesh.rules.embed = ""
    c.mesh.rules.mlp = "tensor,fsdp"
    table = param_specs(dict(name="gpt", num_layers=1, **TINY), mesh222, rules.rules_from_config(c.mesh))
    assert table["blocks.0.mlp.fc_in.kernel"] == (None, ("tensor", "fsdp"))
    assert table["blocks.0.attn.query.kernel"] == (None, "tensor", None)
    assert table["wte.embedding"] == ("tensor", None)


def test_each_mesh_axis_shards_one_dimension_and_uneven_dimensions_stay_whole(mesh222):
    spec = rules.logical_to_spec(("batch", "length", "embed"), rules.DEFAULT_RULES, mesh222)
    assert spec == P(("data", "fsdp"), None, None)  # fsdp went to the batch; sequence has size 1
    assert rules.shaped_spec(("vocab", "embed"), (65, 32), mesh222) == P(None, "fsdp")


@pytest.mark.parametrize("setting,key", [
    (dict(data=3), "mesh"),
    (dict(data=-1, fsdp=-1), "mesh.fsdp"),
    (dict(data=-1, tensor=3), "mesh.tensor"),  # the axis set, not the -1 that takes the rest
    (dict(data=0), "mesh.data"),
    (dict(data=8, dcn_data=3), "mesh.dcn_data"),
    (dict(data=4, fsdp=2, dcn_fsdp=2), "mesh.dcn_fsdp"),  # one process: no second slice to cross to
    (dict(rules=dict(embed="fsdp,model")), "mesh.rules.embed"),
    (dict(rules=dict(batch="data,data")), "mesh.rules.batch"),
])
def test_mesh_and_rule_errors_name_the_key(setting, key):
    from bmjax import validate

    c = base_config()
    c.data.batch_size = 16
    for name, value in setting.items():
        if name == "rules":
            c.mesh.rules.update(value)
        else:
            c.mesh[name] = value
    with pytest.raises(ConfigError) as error:
        validate.check_mesh(c)
    assert error.value.key == key, str(error.value)


def test_batch_must_divide_over_data_and_fsdp():
    from bmjax import validate

    c = base_config()
    c.data.batch_size = 12
    c.mesh.update(data=2, fsdp=4)
    with pytest.raises(ConfigError, match="data.batch_size"):
        validate.check_mesh(c)


def test_activations_follow_the_rules_only_inside_a_layout(mesh222):
    """Models hint activation layouts by name (layers.constrain); the trainer's layout turns the hint into a
    sharding, and outside it the hint does nothing (models never see a mesh)."""
    from bmjax.models import layers
    from bmjax.parallel import context

    x = jax.numpy.zeros((8, 16, 32))
    f = jax.jit(lambda x: layers.constrain(x * 2, ("batch", "length", "embed")))
    with context.activate(mesh222):
        inside = jax.jit(lambda x: layers.constrain(x * 2, ("batch", "length", "embed")))(x)
    assert inside.sharding.spec == P(("data", "fsdp"))  # embed's fsdp already went to the batch
    assert f(x).sharding.is_fully_replicated


# --- A dimension its mesh axes do not divide (bmjax/validate.py check_parameter_layout) ---------------------------

def twelve_heads_on_tensor8(**mesh):
    c = base_config()
    c.model.update(vocab_size=64, d_model=96, num_layers=2, num_heads=12, max_len=16)  # GPT-2's 12 heads, small
    c.mesh.update(dict(data=1, tensor=8), **mesh)
    return c


def test_heads_that_tensor_does_not_divide_are_an_error_naming_the_parameter():
    from bmjax import validate

    with pytest.raises(ConfigError) as error:
        validate.check_parameter_layout(twelve_heads_on_tensor8())
    message = str(error.value)
    assert error.value.key == "mesh.tensor" and "\n" not in message
    assert re.search(r"parameter blocks\.0\.attn\.(query|key|value)\.(kernel|bias): its '(kv_)?heads' dimension "
                     r"of 12 does not divide", message), message
    assert "tensor=8" in message and "mesh.allow_replication=True" in message


def test_allow_replication_keeps_the_dimension_whole_and_warns_once_per_parameter_group(caplog):
    from bmjax import validate

    c = twelve_heads_on_tensor8(allow_replication=True)
    with caplog.at_level("WARNING"):
        validate.check_parameter_layout(c)
    warnings = [r.getMessage() for r in caplog.records if "mesh.allow_replication" in r.getMessage()]
    # q, k, v kernels and biases and the output kernel: one line each, for both layers together.
    assert len(warnings) == 7, warnings
    assert any(w.startswith("mesh.allow_replication: blocks.*.attn.query.kernel (2 parameters)") for w in warnings)
    mesh = mesh_lib.make_mesh(c.mesh)
    model = nnx.eval_shape(lambda: build_model(c.model, rngs=nnx.Rngs(0)))
    table = rules.spec_table(nnx.state(model), mesh, rules.rules_from_config(c.mesh))
    assert table["blocks.0.attn.query.kernel"][2] == P(None, None, None)  # replicated, as warned
    assert table["blocks.0.mlp.fc_in.kernel"][2] == P(None, "tensor")  # 384 MLP units do divide
