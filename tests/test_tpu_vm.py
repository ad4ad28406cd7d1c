"""tools/tpu_vm.py --dry_run prints the exact gcloud commands: one slice, and multi-slice via queued resources."""
import pytest

from helpers.configs import load_file
from helpers.paths import REPO_ROOT as REPO


@pytest.fixture(scope="module")
def tpu_vm():
    return load_file("tools/tpu_vm.py")


def dry_run(tpu_vm, capsys, *argv):
    assert tpu_vm.main(["--dry_run", *argv]) == 0  # before any "--": what follows it goes to bmjax-train
    return capsys.readouterr().out.splitlines()


def test_one_slice_lifecycle(tpu_vm, capsys):
    where = ["--name", "bm", "--zone", "us-central2-b", "--project", "proj"]
    assert dry_run(tpu_vm, capsys, "create", *where, "--accelerator_type", "v4-32", "--spot") == [
        "gcloud compute tpus tpu-vm create bm --zone=us-central2-b --project=proj --accelerator-type=v4-32 "
        "--version=tpu-ubuntu2204-base --spot"]
    assert dry_run(tpu_vm, capsys, "setup", *where) == [
        f"git -C {REPO} archive --format=tar.gz --output=/tmp/bmjax-bm.tar.gz HEAD",
        "gcloud compute tpus tpu-vm scp /tmp/bmjax-bm.tar.gz bm:bmjax.tar.gz --zone=us-central2-b --project=proj "
        "--worker=all",
        "gcloud compute tpus tpu-vm ssh bm --zone=us-central2-b --project=proj --worker=all --command 'mkdir -p bmjax "
        "&& tar -xzf bmjax.tar.gz -C bmjax && cd bmjax && python3 -m venv .venv && .venv/bin/pip install -q -e . "
        "\"jax[tpu]==0.10.2\"'"]
    assert dry_run(tpu_vm, capsys, "run", *where, "--config", "configs/gpt/gpt2.py:size=350m", "--workdir",
                   "/mnt/runs/350m", "--", "--config.mesh.fsdp=32") == [
        "gcloud compute tpus tpu-vm ssh bm --zone=us-central2-b --project=proj --worker=all --command 'cd bmjax && "
        ".venv/bin/bmjax-train --config configs/gpt/gpt2.py:size=350m --workdir /mnt/runs/350m "
        "--config.mesh.fsdp=32'"]
    assert dry_run(tpu_vm, capsys, "delete", *where) == [
        "gcloud compute tpus tpu-vm delete bm --zone=us-central2-b --project=proj --quiet"]


def test_multi_slice_uses_queued_resources_and_runs_on_every_node(tpu_vm, capsys):
    where = ["--name", "ms", "--zone", "us-east5-b", "--num_slices", "2"]
    assert dry_run(tpu_vm, capsys, "create", *where, "--accelerator_type", "v5litepod-16") == [
        "gcloud compute tpus queued-resources create ms --zone=us-east5-b --node-count=2 --node-prefix=ms "
        "--accelerator-type=v5litepod-16 --runtime-version=v2-alpha-tpuv5-lite"]
    assert dry_run(tpu_vm, capsys, "run", *where, "--config", "configs/gpt/tiny.py", "--workdir", "/mnt/r", "--",
                   "--config.mesh.dcn_data=2") == [
        f"gcloud compute tpus tpu-vm ssh ms-{i} --zone=us-east5-b --worker=all --command 'cd bmjax && "
        f".venv/bin/bmjax-train --config configs/gpt/tiny.py --workdir /mnt/r --config.mesh.dcn_data=2'"
        for i in range(2)]
    assert dry_run(tpu_vm, capsys, "delete", *where) == [
        "gcloud compute tpus queued-resources delete ms --zone=us-east5-b --force --quiet"]


def test_unknown_accelerator_needs_an_explicit_runtime_version(tpu_vm, capsys):
    with pytest.raises(SystemExit) as exit_:
        tpu_vm.main(["--dry_run", "create", "--name", "x", "--zone", "z", "--accelerator_type", "v9-8"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.startswith("error: --version: no default runtime for 'v9-8'")
