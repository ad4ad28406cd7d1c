"""Every test runs on 8 fake CPU devices, so every sharding path runs on CPU."""
import os
import pathlib

os.environ.setdefault("PJRT_NPROC", "64")
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from bmjax import runtime  # noqa: E402

# What bmjax's commands do at start-up (import bmjax itself changes nothing): the in-process tests' jitted steps
# keep their buffers instead of page-faulting them in again on every call.
runtime.keep_freed_memory_in_process()

import pytest  # noqa: E402

from helpers.paths import REPO_DATA, REPO_ROOT  # noqa: E402

# Files whose tests train runs, start commands in subprocesses or compile large programs: marked `slow`, so
# `make test-fast` (pytest -m "not slow") is the edit-test loop's subset; `make test` runs everything.
SLOW_FILES = {
    "test_branch.py", "test_vocab_from_tokenizer.py",
    "test_bad_input.py", "test_bench_step.py", "test_bert_cli.py", "test_bert_train.py", "test_cli.py",
    "test_compile_check.py", "test_convert_hf.py", "test_data_sources.py", "test_eval_sets.py", "test_golden.py",
    "test_hf_parity.py", "test_minilm.py",
    "test_lm_eval.py", "test_mixture_metrics.py", "test_multihost.py", "test_nonfinite.py", "test_preemption.py",
    "test_resume.py", "test_run_config.py", "test_run_length.py", "test_run_records.py", "test_sample_cli.py",
    "test_sample_multiprocess.py", "test_sweep.py", "test_tpu_compile.py", "test_trace_summary.py", "test_train.py",
    "test_validate.py", "test_mup_train.py",
    "test_scaling_plan.py", "test_sweep_branching.py",
    "test_sentencepiece.py", "test_ladder.py",
    # the costliest in-process files of the subset: 17 compiled runs on every mesh, packed batches through every
    # attention implementation (test_parallel_remat/_ring/_vocab and test_gpt keep those packages in the subset)
    "test_parallel_mesh.py", "test_segments.py",
    # each of these starts several jax processes (test_readme.py: every README command, training included)
    "test_commands.py", "test_cpu_devices.py", "test_readme.py",
}


# Single slow tests of files that stay in the subset (file::function, every parametrization).
SLOW_TESTS = {
    "test_scaling_fits.py::test_full_fit_matches_the_replication",  # the published fit: 4,500 starts, 240 runs
    # the subset's costliest single tests, where their file's other tests keep its package in the subset
    "test_gpt.py::test_remat_gives_the_same_loss_and_gradients",
    "test_bert_grad_accum.py::test_accumulated_pretraining_gradient_is_the_big_batchs",
    "test_generate.py::test_sampled_left_padded_rows_equal_each_prompt_alone",
    "test_mup.py::test_decoding_with_a_cache_uses_the_scale",
    "test_runtime.py::test_large_temporaries_are_not_faulted_in_again_every_call",
}


def pytest_collection_modifyitems(items):
    for item in items:
        if item.path.name in SLOW_FILES or f"{item.path.name}::{item.originalname}" in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)


def pytest_ignore_collect(collection_path, config):
    """Under `-m "not slow ..."` SLOW_FILES are not even imported: every run of the subset (and each xdist worker)
    would otherwise pay their imports (torch, transformers, lm_eval, tensorflow_datasets) to deselect them."""
    markexpr = config.getoption("markexpr", "") or ""
    conjuncts = [part.strip(" ()") for part in markexpr.split(" and ")] if " or " not in markexpr else []
    if collection_path.name in SLOW_FILES and "not slow" in conjuncts:
        return True
    return None


@pytest.fixture(scope="session")
def repo_data() -> pathlib.Path:
    return REPO_DATA


@pytest.fixture(scope="session")
def repo_root() -> pathlib.Path:
    return REPO_ROOT
