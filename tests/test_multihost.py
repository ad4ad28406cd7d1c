"""Multi-host training on one machine: two processes with 4 fake CPU devices each, joined by jax.distributed
(gloo collectives), train the single-process 8-device loss curve; their checkpoint restores on another mesh.

The two processes run the real CLI (`--coordinator_address/--num_processes/--process_id`) on a hybrid mesh
whose data axis crosses the processes (`mesh.dcn_data=2`, the multi-node GPU layout). Each process feeds only
its half of every batch, only process 0 writes metrics, and both write their checkpoint shards. The two
processes then resume that checkpoint on a tensor-parallel mesh and must continue the single-process run's
curve.
"""
import os
import subprocess

import numpy as np
import pytest

from bmjax.train.loop import train_and_evaluate
from helpers.paths import REPO_ROOT
from helpers.multihost import HALF, STEPS, config_with, run_two_processes, train_losses


@pytest.fixture(scope="module")
def single_process_run(tmp_path_factory):
    """The reference: one process, 8 devices, all STEPS steps on the same (data=2, fsdp=4) mesh."""
    workdir = tmp_path_factory.mktemp("single")
    train_and_evaluate(config_with(), str(workdir))
    return train_losses(workdir)


def test_two_processes_train_the_single_process_curve_and_resume_on_another_mesh(tmp_path, single_process_run):
    workdir = tmp_path / "multi"
    run_two_processes(workdir, **{"train.steps": HALF, "mesh.dcn_data": 2})
    first = train_losses(workdir)
    assert sorted(first) == list(range(1, HALF + 1))
    np.testing.assert_allclose([first[s] for s in sorted(first)],
                               [single_process_run[s] for s in sorted(first)], rtol=1e-4)
    assert (workdir / "checkpoints" / str(HALF)).is_dir()

    # Two processes again on a tensor-parallel mesh: restore the checkpoint and carry on. (A checkpoint resumes
    # with the number of processes that wrote it: each process's data position is its own.)
    outputs = run_two_processes(workdir, **{"mesh.dcn_data": 2, "mesh.fsdp": 1, "mesh.tensor": 4})
    assert f"resuming from {(workdir / 'checkpoints' / str(HALF)).resolve()} " in outputs[0], outputs[0][-2000:]
    rest = train_losses(workdir)
    assert sorted(rest) == list(range(1, STEPS + 1))
    np.testing.assert_allclose([rest[s] for s in range(HALF + 1, STEPS + 1)],
                               [single_process_run[s] for s in range(HALF + 1, STEPS + 1)], rtol=1e-4)


def test_slurm_script_starts_one_process_per_node_with_the_coordinator_and_its_rank(tmp_path):
    """tools/slurm/train.sbatch under stand-ins for scontrol, srun and bmjax-train that record what they get."""
    bin_dir, venv_bin = tmp_path / "bin", tmp_path / "venv" / "bin"
    bin_dir.mkdir()
    venv_bin.mkdir(parents=True)
    stubs = {
        bin_dir / "scontrol": 'echo gpu-a17; echo gpu-a18',  # `scontrol show hostnames NODELIST`
        bin_dir / "srun": 'for i in $(seq 0 $((SLURM_NTASKS - 1))); do SLURM_PROCID=$i "${@: -3}"; done',
        venv_bin / "bmjax-train": 'echo "train $*"',
    }
    for path, body in stubs.items():
        path.write_text(f"#!/bin/bash\n{body}\n")
        path.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", SLURM_JOB_NODELIST="gpu-a[17-18]",
               SLURM_NNODES="2", SLURM_NTASKS="2", BMJAX_VENV=str(tmp_path / "venv"), BMJAX_PORT="23456")
    result = subprocess.run(["bash", "tools/slurm/train.sbatch", "configs/gpt/tiny.py", "/shared/run",
                             "--config.mesh.dcn_data=2"], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    common = ("--config configs/gpt/tiny.py --workdir /shared/run --coordinator_address gpu-a17:23456 "
              "--num_processes 2 --config.mesh.dcn_data=2")
    assert result.stdout.splitlines()[1:] == [f"train {common} --process_id {i}" for i in range(2)]


# Layouts where a model axis or a batch-replicating rule crosses the two processes: both processes hold devices
# of the same batch rows, so both must feed those same rows (bmjax/parallel/batches.py), and the run must be the
# one-process run to float rounding.
CROSSING_LAYOUTS = {
    "tensor8": {"mesh.data": 1, "mesh.fsdp": 1, "mesh.tensor": 8, "model.num_heads": 8},
    "sequence8": {"mesh.data": 1, "mesh.fsdp": 1, "mesh.sequence": 8, "model.attention": "ring"},
    "fsdp8_batch_over_data": {"mesh.data": 1, "mesh.fsdp": 8, "mesh.rules.batch": "data"},
}
CROSSING_STEPS = {"train.steps": 4, "optim.decay_steps": 4, "train.eval_every": 4, "train.ckpt_every": 4}


@pytest.mark.parametrize("layout", list(CROSSING_LAYOUTS))
def test_two_processes_sharing_batch_rows_feed_the_same_rows(tmp_path, layout):
    changes = {**CROSSING_LAYOUTS[layout], **CROSSING_STEPS}
    reference_dir = tmp_path / "single"
    train_and_evaluate(config_with(**changes), str(reference_dir))
    reference = train_losses(reference_dir)

    run_two_processes(tmp_path / "multi", **changes)
    got = train_losses(tmp_path / "multi")
    assert sorted(got) == sorted(reference) == [1, 2, 3, 4]
    np.testing.assert_allclose([got[s] for s in sorted(got)], [reference[s] for s in sorted(got)], rtol=1e-5)
