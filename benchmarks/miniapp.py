"""Mini App benchmark: tap-to-new-mask latency through the real server, against the bare decoder.

A ViT-B (MedSAM-sized) model with random weights (seed 0, non-zero relative-position tables, as in
``benchmarks/inference.py``) serves the Mini App's ``POST /api/refine`` on a local aiohttp server,
over a migrated SQLite database with one phantom campaign and a volunteer holding a lease; the
requests carry initData signed with the bot token, so every tap pays what a real one pays: origin
and initData checks, the lease read, the decoder in a worker thread, mask run-length encoding, and
HTTP on loopback. The crop's embedding is a fixed random tensor put in the embedding cache (the
encoder is not what a tap runs), so the decoder sees the shapes it would see in production.

Each variant replays the same tap sequence (1 to 5 taps, then a fresh start) and, after it, the
bare decoder call (``MedSamPredictor.predict``) on the exact prompts the server ran, in the same
process and on the same in-memory embedding. Variants:

* ``medsam-onnx``: MedSAM (box-only) with the CPU default decoder (factored, ONNX Runtime); taps
  move the box;
* ``sam-torch``: SAM ViT-B with the reference torch decoder; taps are point prompts.

It prints p50/p95 of both and their difference; the last line is one JSON object.

    .venv/bin/python benchmarks/miniapp.py [--taps 60] [--variants medsam-onnx,sam-torch]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TOKEN = "4242:bench-token"
USER = 777
VARIANTS = {
    "medsam-onnx": ("medsam_vit_b", "onnx"),
    "sam-torch": ("sam_vit_b", "torch"),
}


def _predictor(name: str, decoder: str, onnx_dir: Path, cache_dir: Path) -> Any:
    import torch

    from inference.backend import build_vit_b
    from inference.cache import EmbeddingCache
    from inference.models import REGISTRY, LoadedModel
    from inference.predictor import InferenceConfig, MedSamPredictor

    torch.manual_seed(0)
    sam = build_vit_b()
    for pname, parameter in sam.named_parameters():  # real checkpoints have non-zero tables
        if "rel_pos" in pname:
            torch.nn.init.normal_(parameter, std=0.02)
    model = LoadedModel(REGISTRY[name], sam, f"{name}-random-seed0")
    config = InferenceConfig(encoder="fp32", decoder=decoder, onnx_dir=onnx_dir)  # type: ignore[arg-type]
    return MedSamPredictor(model, config, EmbeddingCache(cache_dir))


async def _world(root: Path) -> tuple[Any, str]:
    """A migrated database, one proposed phantom campaign, a volunteer holding a real crop."""
    from bot.campaign import routing
    from bot.campaign import volunteers as people
    from bot.campaign.boxes import parse_boxes
    from bot.campaign.ingest import IngestOptions, ingest
    from bot.campaign.projects import ensure_campaign
    from bot.campaign.proposals import run_proposals
    from bot.campaign.services import Services
    from bot.campaign.sources import ArchiveLimits
    from bot.db import migrate
    from bot.db.models import Campaign
    from bot.jobs.proposals import LocalRunner, ProposerSpec
    from bot.settings import Settings
    from bot.sim.phantom import write_phantoms

    settings = Settings(data_dir=root / "data", database_url=f"sqlite:///{root / 'bench.db'}")
    await asyncio.to_thread(migrate.upgrade, settings.resolved_database_url)
    services = Services.from_settings(settings)
    folder = root / "phantoms"  # 512 px CT phantoms: crops of a few hundred pixels
    write_phantoms(folder, n=1, style="ct", seed=3, size=512, gold_fraction=0.0)
    boxes = parse_boxes((folder / "boxes.json").read_bytes(), "boxes.json")
    async with services.sessionmaker() as session:
        campaign = await ensure_campaign(session, "bench")
    await ingest(
        services.sessionmaker,
        services.store,
        campaign,
        [folder / "images"],
        IngestOptions({}, boxes),
        ArchiveLimits(),
    )
    await run_proposals(
        services.sessionmaker, services.store, campaign, ProposerSpec(), LocalRunner(0)
    )
    async with services.sessionmaker() as session:
        row = await session.get_one(Campaign, campaign.id)
        row.tutorial_tasks = 0
        session.add(row)
        volunteer = await people.volunteer_for(session, telegram_user_id=USER)
        await people.give_consent(session, volunteer=volunteer)
        lease = await routing.next_assignment(
            session, volunteer=volunteer, rng=np.random.default_rng(0)
        )
        await session.commit()
    return services, lease.token


def _taps(hw: tuple[int, int], n: int, seed: int) -> list[list[list[float]]]:
    """Tap sequences as a volunteer makes them: 1..5 points, then start over."""
    rng = np.random.default_rng(seed)
    h, w = hw
    out: list[list[list[float]]] = []
    points: list[list[float]] = []
    for _ in range(n):
        if len(points) == 5:
            points = []
        label = int(rng.random() < 0.7)
        points = [*points, [float(rng.uniform(0, w)), float(rng.uniform(0, h)), label]]
        out.append(points)
    return out


def _stats(values: list[float]) -> dict[str, float]:
    array = np.asarray(values)
    return {
        "p50": round(float(np.percentile(array, 50)), 2),
        "p95": round(float(np.percentile(array, 95)), 2),
        "mean": round(float(array.mean()), 2),
    }


async def _variant(
    label: str, services: Any, token: str, taps: int, warmup: int, root: Path
) -> dict[str, Any]:
    import aiohttp
    from sqlmodel import select

    from bot.campaign import arrays
    from bot.campaign.crowd import Crowd
    from bot.campaign.refine import Refiner
    from bot.db.models import Assignment, Task
    from bot.jobs.proposals import ProposerSpec
    from bot.web.initdata import signed_for_user
    from bot.web.miniapp import MiniApp, MiniAppServer
    from inference.cache import image_hash

    name, decoder = VARIANTS[label]
    predictor = _predictor(name, decoder, root / "onnx", root / "embeddings")
    async with services.sessionmaker() as session:
        lease = (await session.exec(select(Assignment).where(Assignment.token == token))).one()
        task = await session.get_one(Task, lease.task_id)
    crop = arrays.image(services.store, task.crop_key)
    hw = (int(crop.shape[0]), int(crop.shape[1]))
    grid = predictor.size // 16
    embedding = np.random.default_rng(0).standard_normal((1, 256, grid, grid)).astype(np.float32)
    predictor.cache.put(
        image_hash(crop), predictor.model_id, predictor.preprocess_version, embedding, hw
    )
    refiner = Refiner(ProposerSpec(name, None, predictor.config), proposer=predictor)
    miniapp = MiniApp(
        sessionmaker=services.sessionmaker,
        store=services.store,
        crowd=Crowd(services.store),
        refiner=refiner,
        bot_token=TOKEN,
    )
    server = MiniAppServer(miniapp, port=0)
    await server.start()
    auth = {"Authorization": "tma " + signed_for_user(USER, TOKEN, auth_date=int(time.time()))}
    roundtrip, handler, server_decoder, prompts = [], [], [], []
    try:
        async with aiohttp.ClientSession() as http:
            for i, points in enumerate(_taps(hw, warmup + taps, seed=1)):
                started = time.perf_counter()
                async with http.post(
                    f"{server.base_url}/api/refine",
                    json={"t": token, "points": points},
                    headers=auth,
                ) as response:
                    body = await response.json()
                    if response.status != 200:
                        raise RuntimeError(f"refine refused: {response.status} {body}")
                elapsed = (time.perf_counter() - started) * 1e3
                if i >= warmup:
                    roundtrip.append(elapsed)
                    server_decoder.append(body["decoder_ms"])
                    timing = response.headers["Server-Timing"]  # app;dur=<ms>
                    handler.append(float(timing.partition("dur=")[2]))
                    prompts.append(body["prompt"])
    finally:
        await server.stop()
    # The bare decoder on the same prompts, on one in-memory embedding prepared beforehand.
    hot = predictor.embed(crop)
    predictor.predict(hot, box=tuple(prompts[0]["box"]))
    bare = []
    for prompt in prompts:
        pts = np.asarray([p[:2] for p in prompt["points"]], dtype=np.float64)
        labels = np.asarray([p[2] for p in prompt["points"]], dtype=np.int64)
        use_points = refiner.takes_points and len(pts) > 0
        started = time.perf_counter()
        predictor.predict(
            hot,
            box=tuple(prompt["box"]),
            points=pts if use_points else None,
            point_labels=labels if use_points else None,
        )
        bare.append((time.perf_counter() - started) * 1e3)
    trip, decoded = _stats(roundtrip), _stats(bare)
    return {
        "model": name,
        "decoder": decoder,
        "prompts": "points + box" if refiner.takes_points else "box moved by taps",
        "roundtrip_ms": trip,
        "handler_ms": _stats(handler),
        "server_decoder_ms": _stats(server_decoder),
        "bare_decoder_ms": decoded,
        "overhead_ms_p50": round(trip["p50"] - decoded["p50"], 2),
        "ratio_p50": round(trip["p50"] / decoded["p50"], 3),
    }


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="medcrowd-miniapp-bench-") as folder:
        root = Path(folder)
        services, token = await _world(root)
        out: dict[str, Any] = {}
        try:
            for label in args.variants.split(","):
                out[label] = await _variant(label, services, token, args.taps, args.warmup, root)
                print(f"{label}: {json.dumps(out[label])}", flush=True)
        finally:
            await services.close()
    return out


def main() -> None:
    """Run the variants and print their table and one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--taps", type=int, default=60, help="timed taps per variant")
    parser.add_argument("--warmup", type=int, default=5, help="untimed taps first")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated")
    args = parser.parse_args()
    results = asyncio.run(_main(args))
    print()
    print("| variant | round trip p50 / p95 ms | bare decoder p50 / p95 ms | overhead p50 ms |")
    print("|---|---|---|---|")
    for label, r in results.items():
        print(
            f"| {label} | {r['roundtrip_ms']['p50']} / {r['roundtrip_ms']['p95']} "
            f"| {r['bare_decoder_ms']['p50']} / {r['bare_decoder_ms']['p95']} "
            f"| {r['overhead_ms_p50']} |"
        )
    print(json.dumps({"benchmark": "miniapp", "taps": args.taps, "variants": results}))


if __name__ == "__main__":
    main()
