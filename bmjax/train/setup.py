"""The set-up every train step needs, shared by the training loop and the tools that run or compile its step
(tools/bench_step.py, tools/bench_ckpt.py, bmjax-compile-check):

    checked = validate.validate_config(config, workdir)       # what it built: config, mesh, rules, tokenizer, model
    config = checked.config                                   # model.vocab_size resolved from the tokenizer
    data, input_rows = load_data(config, workdir, checked.mesh, checked.rules, checked.tokenizer)
    training = build_training(config, checked.mesh, total_train_steps(config, data), rules=checked.rules,
                              abstract_model=checked.abstract_model)
    state = training.init(int(config.train.seed))
    state, metrics = training.step_fn(state, to_global(batch, training.feed_sharding, seq_len))

`build_training` needs no data and no real devices (the mesh may be over a TPU topology's abstract devices):
optimizer, abstract state and its shardings, and the jitted steps, nothing allocated until `init` runs.
`rules` (the logical-axis rules) default to the config's, `rules_lib.rules_from_config(config.mesh)`.
"""
import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx

from bmjax import data as data_lib
from bmjax.models import build_model
from bmjax.parallel import context
from bmjax.parallel import rules as rules_lib
from bmjax.parallel.batches import input_shard
from bmjax.train import optim
from bmjax.train import step as step_lib
from bmjax.train import tasks as tasks_lib


def create_state(config, mesh, tx, rules=None, abstract_model=None):
    """Abstract train state, its shardings, and a jitted initialiser that creates it already sharded.
    `abstract_model`: the model as shapes (validation's, `Validated.abstract_model`); built here when None."""
    model_cfg = config.model

    def init_fn(seed):
        model = build_model(model_cfg, rngs=nnx.Rngs(params=jax.random.key(seed)))
        graphdef, params, rest = step_lib.split_model(model)
        state = step_lib.TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                                    rest=rest, skipped=jnp.zeros((), jnp.int32))
        return graphdef, state

    if abstract_model is None:
        graphdef, abstract_state = nnx.eval_shape(lambda: init_fn(0))
    else:
        graphdef, params, rest = step_lib.split_model(abstract_model)
        scalar = jax.ShapeDtypeStruct((), jnp.int32)
        abstract_state = step_lib.TrainState(step=scalar, params=params, opt_state=jax.eval_shape(tx.init, params),
                                             rest=rest, skipped=scalar)
    rules = rules_lib.rules_from_config(config.mesh) if rules is None else rules
    shardings = rules_lib.state_shardings(abstract_state, mesh, rules)
    init = jax.jit(lambda seed: init_fn(seed)[1], static_argnums=0, out_shardings=shardings)
    return graphdef, abstract_state, shardings, init


def make_step_fns(config, mesh, graphdef, state_shardings, tx, lr_schedule, steps_per_call=None, rules=None):
    """The jitted train step (`steps_per_call` updates per call, default train.steps_per_call) and eval step,
    with their shardings.

    Returns (step_fn, eval_step, batch_sharding, feed_sharding): feed_sharding is what step_fn's batch argument
    takes ([steps_per_call, batch, length] when several steps are fused, else [batch, length]).
    """
    k = int(config.train.steps_per_call if steps_per_call is None else steps_per_call)
    task = tasks_lib.get_task(config.data.task)
    rules = rules_lib.rules_from_config(config.mesh) if rules is None else rules
    batch_sharding = rules_lib.batch_sharding(mesh, rules=rules)
    feed_sharding = batch_sharding
    if k > 1:
        feed_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, *batch_sharding.spec))
    train_step = step_lib.make_train_step(
        graphdef, task, tx, lr_schedule, base_key=jax.random.key(int(config.train.seed)),
        use_dropout=float(config.model.dropout) > 0, grad_accum=int(config.optim.grad_accum),
        skip_nonfinite=config.train.on_nonfinite == "skip")
    # Traced inside the mesh's layout: activation constraints, ring attention and the vocab-parallel loss.
    step_fn = jax.jit(
        context.within(step_lib.make_multi_step(train_step, k), mesh, rules),
        in_shardings=(state_shardings, None),  # None: the batch arrays' own shardings (see to_global)
        out_shardings=(state_shardings, None),
        donate_argnums=0,
    )
    eval_step = jax.jit(context.within(step_lib.make_eval_step(graphdef, task), mesh, rules),
                        in_shardings=(state_shardings.params, state_shardings.rest, None))
    return step_fn, eval_step, batch_sharding, feed_sharding


@dataclasses.dataclass(frozen=True)
class Training:
    """The optimizer, the train state's layout and the jitted steps of one config on one mesh."""
    mesh: jax.sharding.Mesh
    rules: tuple  # the logical-axis rules (bmjax/parallel/rules.py)
    tx: Any  # optax.GradientTransformation
    lr_schedule: Callable
    graphdef: Any  # the model's nnx.GraphDef
    abstract_state: step_lib.TrainState  # jax.ShapeDtypeStruct leaves
    state_shardings: step_lib.TrainState  # NamedSharding leaves
    init: Callable  # seed -> the train state, created sharded
    step_fn: Callable  # (state, feed) -> (state, metrics); train.steps_per_call updates per call
    eval_step: Callable  # (params, rest, batch) -> summed eval metrics
    batch_sharding: jax.sharding.NamedSharding  # one [batch, length] batch
    feed_sharding: jax.sharding.NamedSharding  # step_fn's batch argument

    def step_fn_for(self, config, steps_per_call: int):
        """(train step fusing `steps_per_call` updates, its feed sharding), e.g. for a run's shorter last call."""
        fn, _, _, feed_sharding = make_step_fns(config, self.mesh, self.graphdef, self.state_shardings, self.tx,
                                                self.lr_schedule, steps_per_call, rules=self.rules)
        return fn, feed_sharding


def build_training(config, mesh, total_steps: int, rules=None, abstract_model=None) -> Training:
    """Optimizer (its schedule over `total_steps`), abstract state, shardings and jitted steps; compiles nothing.
    `abstract_model`: validation's (`Validated.abstract_model`), else built here."""
    rules = rules_lib.rules_from_config(config.mesh) if rules is None else rules
    tx, lr_schedule = optim.make_optimizer(config.optim, total_steps, config.model)
    graphdef, abstract_state, state_shardings, init = create_state(config, mesh, tx, rules, abstract_model)
    step_fn, eval_step, batch_sharding, feed_sharding = make_step_fns(
        config, mesh, graphdef, state_shardings, tx, lr_schedule, rules=rules)
    return Training(mesh=mesh, rules=rules, tx=tx, lr_schedule=lr_schedule, graphdef=graphdef, abstract_state=abstract_state,
                    state_shardings=state_shardings, init=init, step_fn=step_fn, eval_step=eval_step,
                    batch_sharding=batch_sharding, feed_sharding=feed_sharding)


def load_data(config, workdir: str, mesh, rules=None, tokenizer=None):
    """(data, input_rows): the config's pipeline (data.task's) for the batch rows this process loads, with
    `tokenizer` (validation's, `Validated.tokenizer`) or its own, checked against the model
    (bmjax.data.tokenizers.build_tokenizer). Processes whose devices hold the same batch rows load the same rows
    (bmjax/parallel/batches.py)."""
    input_rows = input_shard(mesh, rules_lib.rules_from_config(config.mesh) if rules is None else rules)
    data = data_lib.make_data(config, str(workdir), tokenizer=tokenizer, process_index=input_rows.index,
                              process_count=input_rows.count)
    return data, input_rows


def total_train_steps(config, data) -> int:
    """train.steps, or with train.epochs (classification) that many passes over the training examples,
    rounded up to whole batches."""
    if not config.train.epochs:
        return int(config.train.steps)
    return -(-int(config.train.epochs) * data.train_examples // int(config.data.batch_size))
