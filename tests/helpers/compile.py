"""Compiler options for tests whose tiny programs spend most of their time compiling."""

# XLA CPU's lowest optimisation level and its older fusion emitter compile these small programs about 3x
# faster; a test compiles every program it compares (a one-device reference included) the same way.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}
