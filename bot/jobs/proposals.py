"""Proposal workers: the same function runs in-process, in a local process pool or on Ray actors.

Workers only compute (crop in, masks out); the driver writes every result, so a worker never
touches the database and a job killed half-way resumes where it stopped.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from inference.cache import EmbeddingCache
from inference.fallback import FallbackProposer
from inference.models import REGISTRY, load_model
from inference.prediction import Candidate, Prediction
from inference.predictor import InferenceConfig, MedSamPredictor

logger = logging.getLogger(__name__)

Box = tuple[float, float, float, float]
MAX_POOL_RESTARTS = 3  # workers lost in one job before it fails (and can be resumed)


@dataclass(frozen=True)
class ProposerSpec:
    """Everything a worker needs to build its proposer (picklable, sent to other processes).

    ``model`` is ``fallback`` or a registry name (``medsam_vit_b``, ``sam_vit_b``, ``tiny``).
    """

    model: str = "fallback"
    checkpoint: Path | None = None
    config: InferenceConfig = field(default_factory=InferenceConfig)
    cache_dir: Path | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.model != "fallback" and self.model not in REGISTRY:
            raise ValueError(
                f"model must be 'fallback' or one of {sorted(REGISTRY)}, got {self.model!r}"
            )


@dataclass(frozen=True)
class WorkItem:
    """One crop to propose for: ``crop`` (H, W[, 3]) uint8, ``box`` xyxy crop pixels."""

    task_id: int
    crop: npt.NDArray[np.uint8]
    box: Box


@dataclass(frozen=True)
class ProposalResult:
    """A worker's answer for one task."""

    task_id: int
    model_id: str
    prediction: Prediction
    candidates: list[Candidate]


def build_proposer(spec: ProposerSpec) -> MedSamPredictor | FallbackProposer:
    """Build the proposer a spec describes (the checkpoint always wins over the fallback)."""
    if spec.model == "fallback":
        return FallbackProposer()
    model = load_model(spec.model, spec.checkpoint, seed=spec.seed)
    cache = EmbeddingCache(spec.cache_dir) if spec.cache_dir is not None else None
    return MedSamPredictor(model, spec.config, cache)


def propose_items(
    proposer: MedSamPredictor | FallbackProposer, items: Sequence[WorkItem]
) -> list[ProposalResult]:
    """Proposal and candidates for each item (crops are encoded as one batch on a GPU)."""
    results = []
    embeddings = []
    if isinstance(proposer, MedSamPredictor):
        batch = len(items) if proposer.config.device == "cuda" else 1
        embeddings = proposer.embed_many([item.crop for item in items], batch_size=batch)
    for i, item in enumerate(items):
        if isinstance(proposer, MedSamPredictor):
            embedding = embeddings[i]
            prediction = proposer.predict_boxes(embedding, [item.box])[0]
            candidates = proposer.candidates(embedding, item.box)
        else:
            prediction = proposer.propose(item.crop, item.box)
            candidates = proposer.candidates(item.crop, item.box)
        results.append(ProposalResult(item.task_id, proposer.model_id, prediction, candidates))
    return results


# -- in a pool process: one proposer per process, built on first use ----------------------------

_PROCESS_PROPOSER: tuple[ProposerSpec, MedSamPredictor | FallbackProposer] | None = None


def _pool_init(threads: int) -> None:
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)


def _pool_run(spec: ProposerSpec, items: Sequence[WorkItem]) -> list[ProposalResult]:
    global _PROCESS_PROPOSER
    if _PROCESS_PROPOSER is None or _PROCESS_PROPOSER[0] != spec:
        _PROCESS_PROPOSER = (spec, build_proposer(spec))
    return propose_items(_PROCESS_PROPOSER[1], items)


class Runner(Protocol):
    """Runs batches of work items somewhere and yields results as they finish."""

    def run(
        self, spec: ProposerSpec, batches: Iterator[list[WorkItem]]
    ) -> Iterator[list[ProposalResult]]:
        """Results of every batch, in completion order."""
        ...

    def close(self) -> None:
        """Release workers."""
        ...


class LocalRunner:
    """In-process when ``workers == 0``; else a process pool, one torch thread per process."""

    def __init__(self, workers: int = 1, threads: int = 1) -> None:
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        self.workers = workers
        self.threads = threads
        self._pool: ProcessPoolExecutor | None = None

    def run(
        self, spec: ProposerSpec, batches: Iterator[list[WorkItem]]
    ) -> Iterator[list[ProposalResult]]:
        """Run every batch, at most ``2 * workers`` in flight."""
        if self.workers == 0:
            proposer = build_proposer(spec)
            for batch in batches:
                yield propose_items(proposer, batch)
            return
        # A worker killed mid-job (the OOM killer, an operator) breaks the pool: a new pool
        # runs the batches that were in flight again; results already yielded stand.
        in_flight: dict[Future[list[ProposalResult]], list[WorkItem]] = {}
        restarts = 0

        def restart() -> list[list[WorkItem]]:
            """A new pool; returns the batches the dead one held."""
            nonlocal restarts
            restarts += 1
            if restarts > MAX_POOL_RESTARTS:
                raise RuntimeError(f"proposal workers died {restarts} times; giving up")
            logger.warning("a proposal worker died; running its batches again")
            self._discard_pool()
            held = list(in_flight.values())
            in_flight.clear()
            return held

        def submit(batches: list[list[WorkItem]]) -> None:
            queue = list(batches)
            while queue:
                try:
                    future = self._ensure_pool().submit(_pool_run, spec, queue[0])
                except BrokenProcessPool:
                    queue += restart()
                    continue
                in_flight[future] = queue.pop(0)

        def settle(done: set[Future[list[ProposalResult]]]) -> Iterator[list[ProposalResult]]:
            lost = []
            for future in done:
                batch = in_flight.pop(future)
                try:
                    result = future.result()
                except BrokenProcessPool:
                    lost.append(batch)
                else:
                    yield result
            if lost:
                submit(lost + restart())

        for batch in batches:
            submit([batch])
            if len(in_flight) >= 2 * self.workers:
                done, _ = wait(set(in_flight), return_when=FIRST_COMPLETED)
                yield from settle(done)
        while in_flight:
            done, _ = wait(set(in_flight), return_when=FIRST_COMPLETED)
            yield from settle(done)

    def _ensure_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawn, not fork: the driver runs an event loop and database threads.
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_pool_init,
                initargs=(self.threads,),
            )
        return self._pool

    def _discard_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def worker_pids(self) -> list[int]:
        """The process ids of the pool's workers (for operators' tools and fault tests)."""
        processes = getattr(self._pool, "_processes", None) or {}
        return sorted(int(pid) for pid in processes)

    def close(self) -> None:
        """Shut the pool down."""
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None


class RayRunner:
    """One actor per GPU (or per CPU slot); the driver writes results.

    ``address`` is ``local`` to start a local Ray instance (tests, one machine), or a cluster
    address such as ``ray://head:10001`` or ``auto``.
    """

    def __init__(self, address: str, actors: int | None = None, threads: int = 1) -> None:
        import ray

        self._ray: Any = ray
        self._started = not ray.is_initialized()
        if self._started:
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if address == "local":
                ray.init(num_cpus=max(1, actors or 1), **kwargs)
            else:
                ray.init(address=address, **kwargs)
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        self.use_gpu = gpus > 0
        self.actors = actors or (gpus if gpus else max(1, int(resources.get("CPU", 1))))
        self.threads = threads
        self._live: list[Any] = []

    def worker_pids(self) -> list[int]:
        """The process ids of the running job's actors (for operators' tools and fault tests)."""
        return sorted(int(pid) for pid in self._ray.get([a.pid.remote() for a in self._live]))

    def run(
        self, spec: ProposerSpec, batches: Iterator[list[WorkItem]]
    ) -> Iterator[list[ProposalResult]]:
        """Round-robin batches over the actors, at most two in flight per actor."""
        ray = self._ray
        # A lost worker (its process killed, its node gone) is restarted and its batches run
        # again by Ray itself; results already yielded stand.
        actor_class = ray.remote(
            num_gpus=1 if self.use_gpu else 0,
            num_cpus=1,
            max_restarts=MAX_POOL_RESTARTS,
            max_task_retries=MAX_POOL_RESTARTS,
        )(_ProposerActor)
        actors = [actor_class.remote(spec, self.threads) for _ in range(self.actors)]
        self._live = actors
        pending: list[Any] = []
        try:
            for i, batch in enumerate(batches):
                pending.append(actors[i % len(actors)].run.remote(batch))
                if len(pending) >= 2 * len(actors):
                    done, pending = ray.wait(pending, num_returns=1)
                    yield ray.get(done[0])
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                yield ray.get(done[0])
        finally:
            for actor in actors:
                ray.kill(actor)

    def close(self) -> None:
        """Shut down the Ray instance this runner started (a cluster it joined stays up)."""
        if self._started and self._ray.is_initialized():
            self._ray.shutdown()


class _ProposerActor:
    """A Ray actor holding one proposer (its model loaded once)."""

    def __init__(self, spec: ProposerSpec, threads: int) -> None:
        _pool_init(threads)
        self.proposer = build_proposer(spec)

    def run(self, items: list[WorkItem]) -> list[ProposalResult]:
        return propose_items(self.proposer, items)

    def pid(self) -> int:
        return os.getpid()


def make_runner(
    kind: Literal["local", "ray"], *, workers: int, threads: int, ray_address: str | None
) -> LocalRunner | RayRunner:
    """The runner the settings ask for."""
    if kind == "ray":
        return RayRunner(ray_address or "local", actors=workers or None, threads=threads)
    return LocalRunner(workers=workers, threads=threads)
