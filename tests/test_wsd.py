"""optim.schedule=wsd (warmup-stable-decay, Hägele et al. 2024): its value at chosen steps against hand-computed
numbers for each cooldown shape (warmup end, stable, the first and last cooldown step, the floor), optax's
linear and cosine decays as references for the same stretch, and that the run's length enters it only through
the cooldown start, which is what lets a cooldown branch from a stable run."""
import math

import numpy as np
import optax
import pytest

from bmjax.defaults import base_config
from bmjax.train import optim

LR, MIN_LR = 1e-3, 1e-4


def wsd_config(**overrides):
    c = base_config().optim
    c.update(dict(lr=LR, min_lr=MIN_LR, warmup_steps=10, schedule="wsd", cooldown_fraction=0.2,
                  cooldown_shape="sqrt"), **overrides)
    return c


# 100 steps, warmup 10, 20% cooldown: stable at 1e-3 from step 10, cooldown from step 80 (t = (s - 80) / 20),
# min_lr from step 100. Worked by hand: 1e-4 + 9e-4 * g(t).
POINTS = {
    #   step: (sqrt: g = 1 - sqrt(t),      linear: g = 1 - t,    cosine: g = (1 + cos(pi t)) / 2)
    0: (0.0, 0.0, 0.0),
    5: (5e-4, 5e-4, 5e-4),  # half the warmup
    10: (1e-3, 1e-3, 1e-3),  # warmup end
    79: (1e-3, 1e-3, 1e-3),  # the last stable step
    80: (1e-3, 1e-3, 1e-3),  # the first cooldown step, t = 0
    85: (5.5e-4, 7.75e-4, 1e-4 + 9e-4 * (1 + math.sqrt(0.5)) / 2),  # t = 1/4: sqrt(t) = 1/2
    99: (1e-4 + 9e-4 * (1 - math.sqrt(0.95)), 1.45e-4, 1e-4 + 9e-4 * (1 + math.cos(0.95 * math.pi)) / 2),  # last
    100: (1e-4, 1e-4, 1e-4),  # the floor
    5000: (1e-4, 1e-4, 1e-4),
}
SHAPES = ("sqrt", "linear", "cosine")


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("step", sorted(POINTS))
def test_wsd_at_chosen_steps(step, shape):
    want = POINTS[step][SHAPES.index(shape)]
    got = float(optim.schedule(wsd_config(cooldown_shape=shape), total_steps=100)(step))
    # float32 arithmetic: a few roundings of ~6e-8 each; 1 - sqrt(0.95) = 0.025 loses ~40x of that relative.
    assert got == pytest.approx(want, rel=2e-6, abs=1e-12)


def test_the_cooldown_shapes_follow_optax_decays_over_the_same_stretch():
    steps = np.arange(80, 101)
    linear = optim.schedule(wsd_config(cooldown_shape="linear"), total_steps=100)
    cosine = optim.schedule(wsd_config(cooldown_shape="cosine"), total_steps=100)
    np.testing.assert_allclose([float(linear(s)) for s in steps],
                               [float(optax.linear_schedule(LR, MIN_LR, 20)(s - 80)) for s in steps], rtol=2e-6)
    np.testing.assert_allclose([float(cosine(s)) for s in steps],
                               [float(optax.cosine_decay_schedule(LR, 20, alpha=MIN_LR / LR)(s - 80)) for s in steps],
                               rtol=2e-6)


def test_sqrt_cooldown_lies_below_linear_inside_the_cooldown():
    sqrt = optim.schedule(wsd_config(cooldown_shape="sqrt"), total_steps=100)
    linear = optim.schedule(wsd_config(cooldown_shape="linear"), total_steps=100)
    assert all(float(sqrt(s)) < float(linear(s)) for s in range(81, 100))


def test_the_run_length_enters_only_through_the_cooldown_start():
    short, long = (optim.schedule(wsd_config(), total_steps=n) for n in (100, 1000))
    assert optim.cooldown_start(wsd_config(), 100) == 80 and optim.cooldown_start(wsd_config(), 1000) == 800
    before = np.arange(0, 80)
    np.testing.assert_array_equal(np.array([short(s) for s in before]), np.array([long(s) for s in before]))
    assert float(long(90)) == np.float32(LR) and float(short(90)) < np.float32(LR)  # past the short run's cooldown start they part
    # The same cooldown start and length (the last 100 steps), whatever the run's length: the same cooldown.
    a = optim.schedule(wsd_config(cooldown_fraction=0.5), total_steps=200)
    b = optim.schedule(wsd_config(cooldown_fraction=0.1), total_steps=1000)
    np.testing.assert_array_equal(np.array([a(s) for s in range(100, 201)]),
                                  np.array([b(s) for s in range(900, 1001)]))


def test_decay_steps_set_end_the_cooldown_there():
    schedule = optim.schedule(wsd_config(decay_steps=50), total_steps=100)
    assert optim.cooldown_start(wsd_config(decay_steps=50), 100) == 40
    assert [float(schedule(s)) for s in (39, 40, 50, 80)] == pytest.approx([LR, LR, MIN_LR, MIN_LR], rel=2e-6)


def test_a_warmup_longer_than_the_stable_part_starts_the_cooldown_at_its_end_and_warns():
    config = wsd_config(warmup_steps=90)
    schedule = optim.schedule(config, total_steps=100)
    assert optim.cooldown_start(config, 100) == 90
    assert float(schedule(45)) == pytest.approx(5e-4, rel=2e-6)  # still warming up where the cooldown would be
    assert float(schedule(95)) == pytest.approx(MIN_LR + 9e-4 * (1 - math.sqrt(0.5)), rel=2e-6)
    (line,) = optim.schedule_warnings(config, 100)
    assert "optim.cooldown_fraction" in line and "lasts 10 steps instead of 20" in line
    assert optim.schedule_warnings(wsd_config(), 100) == []
