"""Compiler options for tests whose tiny programs spend most of their time compiling: XLA CPU's lowest
optimisation level and its older fusion emitter. A test compiles every program it compares (a one-device
reference included) the same way, so the programs compared are the same."""

FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}  # for .compile()
FAST_COMPILE_FLAGS = ("--xla_backend_optimization_level=0", "--xla_cpu_use_fusion_emitters=false")  # XLA_FLAGS
