from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch.multiprocessing.spawn import spawn

from synthesis.ddp import free_port, from_torchrun
from tests.helpers.synthesis import ddp_worker


@pytest.mark.skipif(not dist.is_available(), reason="torch built without torch.distributed")
def test_ddp_two_gloo_ranks_hold_identical_parameters(tmp_path: Path) -> None:
    spawn(ddp_worker, args=(2, free_port(), tmp_path), nprocs=2)  # type: ignore[no-untyped-call]
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0["agree"]
    assert r1["agree"]
    assert torch.equal(r0["params"], r1["params"])
    assert r0["losses"] != r1["losses"]  # each rank trained on its own batches
    state = torch.load(tmp_path / "latest.pt", weights_only=True)
    assert state["step"] == 3
    assert len(state["rng"]) == 2  # every rank's RNG, for an exact resume


def test_ddp_context_comes_from_the_mapping_torchrun_sets() -> None:
    env = {
        "RANK": "1",
        "WORLD_SIZE": "4",
        "LOCAL_RANK": "1",
        "MASTER_ADDR": "h",
        "MASTER_PORT": "9",
    }
    ctx = from_torchrun(env, backend="gloo")
    assert (ctx.rank, ctx.world_size, ctx.local_rank) == (1, 4, 1)
    assert ctx.init_method == "tcp://h:9"
    with pytest.raises(ValueError, match="torchrun"):
        from_torchrun({})
