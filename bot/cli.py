"""The ``medcrowd`` command line: ``db``, ``phantom``, ``ingest``, ``propose``, ``bench``, ``demo``.

Also ``export``, ``run``, ``evaluate`` (does synthesis help? the downstream evaluation), ``backup``
and ``restore`` (docs/operations.md).

Settings come from ``MEDCROWD_*`` variables (or ``.env``); ``--data-dir`` and ``--database-url``
override them. On failure the command prints one line saying why and exits non-zero.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from alembic.util.exc import CommandError
from pydantic import ValidationError
from tqdm import tqdm

from bot import logs
from bot.campaign.backup import BackupReport, backup
from bot.campaign.boxes import parse_boxes, parse_grid
from bot.campaign.errors import MedCrowdError
from bot.campaign.export import ExportReport, export_campaign
from bot.campaign.health import Readiness, database_probe
from bot.campaign.ingest import IngestOptions, IngestReport, index_masks, ingest
from bot.campaign.projects import ensure_campaign, get_campaign
from bot.campaign.proposals import ProposalRun, run_proposals, spec_from
from bot.campaign.restore import restore
from bot.campaign.services import Services, limits_from
from bot.campaign.sources import count_inputs
from bot.campaign.synthesis import PRESETS, SynthesisOptions, SynthesisRun, run_synthesis
from bot.db import migrate
from bot.jobs.proposals import make_runner
from bot.settings import Settings
from bot.sim import demo, enhancement
from bot.sim.phantom import STYLES, write_phantoms
from bot.telegram.app import BotOptions, bot_services, run_bot
from bot.telegram.workers import WorkerProcesses, parse_partition
from bot.web.health import HealthServer
from bot.web.miniapp import MiniApp, MiniAppServer, origin_of
from bot.web.webhook import WebhookServer
from fusion.bench import as_dicts, online_latency, run_methods, summarise
from fusion.simulate import Scenario, simulate

logger = logging.getLogger("bot.cli")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medcrowd",
        description="MedCrowd: crowd + MedSAM segmentation campaigns, run from Telegram.",
    )
    parser.add_argument(
        "--data-dir", type=Path, help="data dir (default $MEDCROWD_DATA_DIR or ./var)"
    )
    parser.add_argument("--database-url", help="SQLAlchemy URL (default: SQLite in the data dir)")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING, ...")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    db = sub.add_parser("db", help="database migrations", description="Database migrations.")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    db_sub.add_parser("upgrade", help="apply every migration (create or update the schema)")
    db_sub.add_parser("check", help="fail if the models and the migrations disagree")

    ph = sub.add_parser(
        "phantom",
        help="write phantom images with exact truth masks",
        description="Write medical-like phantom images, truth masks, gold masks and boxes.",
    )
    ph.add_argument("out", type=Path, help="output folder")
    ph.add_argument("--n", type=int, default=24, help="number of images (default 24)")
    ph.add_argument("--style", default="mixed", choices=[*STYLES, "mixed"], help="image style")
    ph.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    ph.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    ph.add_argument(
        "--gold-fraction", type=float, default=0.2, help="share of masks copied to gold/ (0.2)"
    )

    ing = sub.add_parser(
        "ingest",
        help="ingest images (folders, zips, DICOM, NIfTI) into a campaign",
        description="Ingest images into a campaign: normalise, de-identify, cut crops, open tasks.",
    )
    ing.add_argument("paths", type=Path, nargs="+", help="files, folders or zip archives")
    ing.add_argument("--project", required=True, help="campaign name (created if new)")
    ing.add_argument("--masks", type=Path, help="folder or zip of expert masks (become gold)")
    ing.add_argument("--boxes", type=Path, help="boxes file: JSON or CSV, xyxy pixels")
    ing.add_argument("--grid", help="ROWSxCOLS boxes for images with no boxes and no mask")
    ing.add_argument("--modality", help="modality code for non-DICOM images (CT, MR, US, ...)")
    ing.add_argument("--structure", help="structure to segment, for a new campaign")
    ing.add_argument("--report", type=Path, required=True, help="where to write the JSON report")

    pr = sub.add_parser(
        "propose",
        help="propose a mask for every pending crop (MedSAM, or the labelled fallback)",
        description=(
            "Run the proposals job: MedSAM (with MEDCROWD_MEDSAM_CHECKPOINT) or the classical "
            "fallback proposes a mask and one-tap candidates for every crop that has none yet. "
            "Idempotent and resumable; runs on Ray when --ray or MEDCROWD_RAY_ADDRESS is given."
        ),
    )
    pr.add_argument("--project", required=True, help="campaign name")
    pr.add_argument(
        "--model",
        choices=["fallback", "medsam_vit_b", "sam_vit_b", "tiny"],
        help="override the model (default: the checkpoint's, else the fallback)",
    )
    pr.add_argument("--workers", type=int, help="worker processes (default $MEDCROWD_WORKERS)")
    pr.add_argument(
        "--ray", action="store_true", help="run on Ray ($MEDCROWD_RAY_ADDRESS or local)"
    )

    bench = sub.add_parser("bench", help="benchmarks", description="Benchmarks.")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True, metavar="BENCHMARK")
    fb = bench_sub.add_parser(
        "fusion",
        help="every fusion method on one simulated crowd scenario",
        description=(
            "Simulate a crowd scenario (JSON, see fusion/simulate.py) and score every fusion "
            "method on the same answers: mean and 10th-percentile Dice, share >= 0.90, answers "
            "per crop, seconds, peak memory."
        ),
    )
    fb.add_argument("--scenario", type=Path, required=True, help="scenario JSON file")
    fb.add_argument("--out", type=Path, required=True, help="where to write the results JSON")
    fb.add_argument(
        "--seed", type=int, help="replace the scenario's seed (replications of one scenario)"
    )
    fb.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="run each method this many times in its process; seconds are the median (default 1)",
    )
    fb.add_argument(
        "--methods",
        help="comma-separated subset (default: ours, the baselines and every installed peer)",
    )

    ex = sub.add_parser(
        "export",
        help="write a campaign's dataset zip (masks, COCO RLE, NIfTI, answers, datasheet)",
        description="Export a campaign's finished crops as a dataset zip.",
    )
    ex.add_argument("--project", required=True, help="campaign name")
    ex.add_argument("--out", type=Path, help="folder for the zip (default <data dir>/exports)")

    sy = sub.add_parser(
        "synthesize",
        help="train pix2pix on a campaign's finished crops and store gated synthetic pairs",
        description=(
            "Train (or resume) pix2pix on the campaign's finished crops (consensus and gold), "
            "generate N candidate pairs from new plausible masks, keep those the quality gate "
            "accepts, and store them with their scores and provenance."
        ),
    )
    sy.add_argument("--project", required=True, help="campaign name")
    sy.add_argument("--n", type=int, default=64, help="candidate pairs to generate (64)")
    sy.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="cpu",
        help="configuration: cpu (64 px, minutes), gpu (256 px, the reference size), demo, tiny",
    )
    sy.add_argument("--steps", type=int, help="training steps (default: the preset's)")
    sy.add_argument("--seed", type=int, default=0, help="random seed (0)")

    rn = sub.add_parser(
        "run",
        help="run the Telegram bot (long polling, or a webhook when MEDCROWD_WEBHOOK_URL is set)",
        description=(
            "Run the volunteer bot. Needs MEDCROWD_BOT_TOKEN; MEDCROWD_TELEGRAM_BASE_URL points it "
            "at a local Bot API emulator or server. Applies pending migrations first."
        ),
    )
    rn.add_argument(
        "--processes",
        type=int,
        default=1,
        help="bot processes sharing the volunteers (PostgreSQL only; default 1)",
    )
    rn.add_argument("--partition", help=argparse.SUPPRESS)  # k/n: a worker the front started

    bk = sub.add_parser(
        "backup",
        help="write a backup: the database and the data dir's files in one tar",
        description=(
            "Write a consistent snapshot of the database (every row, as portable JSON) and of the "
            "data dir's store/ and synthesis/ files, with a manifest of checksums, to one tar "
            "file. Safe while the bot runs. See docs/operations.md."
        ),
    )
    bk.add_argument("out", type=Path, help="the file to write (.tar; .tar.gz to gzip it)")
    rs = sub.add_parser(
        "restore",
        help="restore a backup into an empty database and the data dir (all or nothing)",
        description=(
            "Check a backup's checksums, migrate the target database, then restore every row "
            "and file in one transaction. Works across SQLite and PostgreSQL. Stop the bot first."
        ),
    )
    rs.add_argument("source", type=Path, help="a file written by `medcrowd backup`")
    rs.add_argument(
        "--force", action="store_true", help="replace the rows of a database that is not empty"
    )

    dm = sub.add_parser(
        "demo",
        help="run the offline demo campaign and write its report",
        description=(
            "Run the offline demo campaign: phantom images with a hidden truth, ingest, "
            "proposals, virtual volunteers in the real bot through a local Bot API emulator, "
            "fusion, expert review, export; writes report.html and summary.json."
        ),
    )
    dm.add_argument("--out", type=Path, help="output folder, wiped first (default DATA_DIR/demo)")
    dm.add_argument("--quick", action="store_true", help="a small run for tests (about a minute)")
    dm.add_argument("--images", "--n", dest="images", type=int, help="phantom images (24)")
    dm.add_argument("--crops", type=int, help="crops kept from the phantoms' boxes (60)")
    dm.add_argument(
        "--volunteers",
        type=int,
        help="virtual volunteers answering in (emulated) Telegram; 0 skips that step (20)",
    )
    dm.add_argument("--answers", type=int, help="answers each volunteer gives at most (25)")
    dm.add_argument(
        "--style",
        choices=("mixed", "ct", "ultrasound", "dermoscopy", "histology"),
        help="phantom style (mixed)",
    )
    dm.add_argument("--checkpoint", type=Path, help="a MedSAM checkpoint for the proposals")
    dm.add_argument("--seed", type=int, help="random seed (7)")

    ev = sub.add_parser(
        "evaluate",
        help="does synthesis help? downstream Dice with and without synthetic pairs",
        description=(
            "Train a small downstream U-Net on phantom crops with 10/25/50/100%% of the real "
            "labelled pairs, as real only, real + synthetic (1:1, 1:2) and synthetic only, over "
            "several seeds; score it on an untouched real test set. Also compares training on "
            "the phantom truth, the crowd consensus and the raw proposals. Writes "
            "enhancement.json and enhancement.png; prints the table and, last, a JSON summary."
        ),
    )
    ev.add_argument("--quick", action="store_true", help="a small run for tests (under a minute)")
    ev.add_argument("--out", type=Path, help="output folder (default DATA_DIR/evaluate)")
    ev.add_argument("--seeds", type=int, help="number of seeds, 0, 1, ... (3; --quick 1)")
    ev.add_argument(
        "--fractions",
        type=float,
        nargs="+",
        help="shares of the real labelled pairs, each in (0, 1] (0.1 0.25 0.5 1; --quick 0.25 1)",
    )
    ev.add_argument("--style", choices=STYLES, help="phantom style (ultrasound)")
    ev.add_argument("--images", type=int, help="phantom images, pool and test (120; --quick 40)")
    ev.add_argument(
        "--no-label-sources", action="store_true", help="skip the label-source comparison"
    )
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, object] = {}
    if args.data_dir is not None:
        overrides["data_dir"] = args.data_dir
    if args.database_url is not None:
        overrides["database_url"] = args.database_url
    if args.log_level is not None:
        overrides["log_level"] = args.log_level
    if getattr(args, "checkpoint", None) is not None:
        if not args.checkpoint.is_file():
            raise FileNotFoundError(f"no MedSAM checkpoint at {args.checkpoint}")
        overrides["medsam_checkpoint"] = args.checkpoint
    return Settings(**overrides)  # type: ignore[arg-type]


def _configure_logging(level: str, settings: Settings | None = None) -> None:
    token = settings.bot_token if settings else None
    logging.basicConfig(  # text or JSON lines; the token is redacted from either
        level=level,
        handlers=logs.handlers(
            settings.log_format if settings else "text",
            file=settings.log_file if settings else None,
            keep_days=settings.retention_log_days if settings else 14,
            secrets=logs.token_secrets(token.get_secret_value() if token else None),
        ),
    )
    # httpx logs the token-bearing URL of every request at INFO: WARNING at least, always.
    for noisy in ("httpx", "httpcore", "alembic", "aiosqlite", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    # At DEBUG, python-telegram-bot logs every request and raw update (names, texts): never
    # below INFO, whatever the level asked for.
    logging.getLogger("telegram").setLevel(max(logging.INFO, logging.getLogger().level))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        settings = _settings(args)
        # The demo's and the evaluation's progress bars and tables are their output: only
        # warnings beside them.
        quiet = args.command in ("demo", "evaluate") and args.log_level is None
        _configure_logging("WARNING" if quiet else settings.log_level, settings)
        return _dispatch(args, settings)
    except ValidationError as error:  # before ValueError, of which it is a subclass
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        print(f"medcrowd: error: setting {where}: {first['msg']}", file=sys.stderr)  # noqa: T201
        return 2
    except (MedCrowdError, OSError, ValueError, CommandError) as error:
        print(f"medcrowd: error: {_one_line(error)}", file=sys.stderr)  # noqa: T201
        return 2
    except KeyboardInterrupt:
        print("medcrowd: interrupted", file=sys.stderr)  # noqa: T201
        return 130


def _one_line(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return text.splitlines()[0] if text else text


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "db":
        url = settings.resolved_database_url
        if args.db_command == "upgrade":
            migrate.upgrade(url)
            print("database is at the latest schema")  # noqa: T201
        else:
            migrate.check(url)
        return 0
    if args.command == "phantom":
        with tqdm(total=args.n, desc="phantoms", unit="img", disable=None) as bar:
            manifest = write_phantoms(
                args.out,
                n=args.n,
                style=args.style,
                seed=args.seed,
                size=args.size,
                gold_fraction=args.gold_fraction,
                progress=lambda: bar.update(1),
            )
        print(  # noqa: T201
            f"wrote {manifest['n']} {args.style} phantoms ({manifest['gold']} gold) to {args.out}"
        )
        return 0
    if args.command == "ingest":
        report = asyncio.run(_ingest(args, settings))
        report.write(args.report)
        counts = report.counts()
        print(  # noqa: T201
            f"{counts['ingested']} ingested, {counts['duplicate']} duplicate, "
            f"{counts['rejected']} rejected; {counts['images']} images of {counts['frames']} "
            f"frames, {counts['tasks']} tasks "
            f"({counts['gold_tasks']} gold). Report: {args.report}"
        )
        return 0
    if args.command == "propose":
        run = asyncio.run(_propose(args, settings))
        print(  # noqa: T201
            f"{run.written} proposals written by {run.model_id} "
            f"({run.pending} crops were pending; job {run.job_id})"
        )
        return 0
    if args.command == "bench":
        return _bench_fusion(args)
    if args.command == "export":
        exported = asyncio.run(_export(args, settings))
        print(  # noqa: T201
            f"exported {exported.crops} crops ({exported.gold} gold) of {exported.images} images "
            f"and {exported.answers} answers to {exported.path} ({exported.bytes / 1e6:.1f} MB)"
        )
        return 0
    if args.command == "synthesize":
        if args.n < 1:
            raise ValueError("--n must be at least 1")
        synthesized = asyncio.run(_synthesize(args, settings))
        print(  # noqa: T201
            f"synthesis job #{synthesized.job_id}: trained on {synthesized.trained_on} finished "
            f"crops to step {synthesized.steps} (resumed from {synthesized.resumed_from}); kept "
            f"{len(synthesized.kept)} of {synthesized.candidates} candidates "
            f"({100 * synthesized.acceptance:.0f} %); checkpoint sha256 "
            f"{synthesized.checkpoint_sha256[:16]}"
        )
        return 0
    if args.command == "run":
        if args.processes < 1:
            raise ValueError("--processes must be at least 1")
        partition = parse_partition(args.partition) if args.partition else (0, args.processes)
        asyncio.run(_run(settings, partition))
        return 0
    if args.command in ("backup", "restore"):
        saved = asyncio.run(_backup_or_restore(args, settings))
        done = "wrote" if args.command == "backup" else "restored"
        print(  # noqa: T201
            f"{done} {sum(saved.rows.values())} rows and {saved.files} files "
            f"({saved.bytes / 1e6:.1f} MB, schema {saved.revision}): {saved.path}"
        )
        return 0
    if args.command == "evaluate":
        return _evaluate(args, settings)
    if args.command == "demo":
        return asyncio.run(
            demo.run_demo(
                settings, _demo_options(args), launch=_launch if args.volunteers != 0 else None
            )
        )
    raise AssertionError(f"unhandled command {args.command}")


def _demo_options(args: argparse.Namespace) -> demo.DemoOptions:
    """The demo's options: ``--quick`` sizes, then every flag given."""
    base = demo.DemoOptions.quick_run() if args.quick else demo.DemoOptions()
    given = {
        name: getattr(args, name)
        for name in ("out", "images", "crops", "volunteers", "answers", "style", "seed")
        if getattr(args, name) is not None
    }
    return dataclasses.replace(base, **given)


@contextlib.asynccontextmanager
async def _launch(
    settings: Settings, token: str, base_url: str, file_url: str
) -> AsyncIterator[None]:
    """The real bot, in this process, against a Bot API at ``base_url`` (the demo's emulator)."""
    services = Services.from_settings(settings)
    options = BotOptions(  # virtual volunteers press faster than people: no flood limit
        token=token,
        base_url=base_url,
        base_file_url=file_url,
        poll_timeout=1,
        digest_seconds=2,
        flood_rate=1000.0,
        flood_burst=1000.0,
    )
    handlers = bot_services(
        services,
        spec_from(settings),
        digest_seconds=2,
        admins=settings.admin_ids,
        synthesis=SynthesisOptions(n=settings.synthesis_n, preset=settings.synthesis_preset),
    )
    # The Mini App editor on a free loopback port: the emulator accepts http there.
    miniapp = MiniApp(
        sessionmaker=handlers.sessionmaker,
        store=handlers.store,
        crowd=handlers.crowd,
        refiner=handlers.refiner,
        bot_token=token,
    )
    editor = MiniAppServer(miniapp, port=0)
    await editor.start()
    handlers.webapp_url = f"{editor.base_url}/app/"
    stop = asyncio.Event()
    task = asyncio.create_task(run_bot(options, handlers, stop=stop, editor=miniapp))
    try:
        yield
    finally:
        stop.set()
        await task
        await editor.stop()
        await services.close()


async def _export(args: argparse.Namespace, settings: Settings) -> ExportReport:
    await asyncio.to_thread(migrate.upgrade, settings.resolved_database_url)
    services = Services.from_settings(settings)
    try:
        async with services.sessionmaker() as session:
            campaign = await get_campaign(session, args.project)
            return await export_campaign(
                session, services.store, campaign, args.out or settings.data_dir / "exports"
            )
    finally:
        await services.close()


async def _synthesize(args: argparse.Namespace, settings: Settings) -> SynthesisRun:
    await asyncio.to_thread(migrate.upgrade, settings.resolved_database_url)
    services = Services.from_settings(settings)
    options = SynthesisOptions(n=args.n, preset=args.preset, steps=args.steps, seed=args.seed)
    bars: dict[str, tqdm[Any]] = {}

    def report(phase: str, done: int, total: int) -> None:
        if phase not in bars:
            bars[phase] = tqdm(total=total, desc=phase, disable=None)
        bars[phase].update(done - bars[phase].n)

    try:
        async with services.sessionmaker() as session:
            campaign = await get_campaign(session, args.project)
        return await run_synthesis(
            services.sessionmaker,
            services.store,
            campaign,
            options,
            settings.data_dir,
            report=report,
        )
    finally:
        for bar in bars.values():
            bar.close()
        await services.close()


async def _run(settings: Settings, partition: tuple[int, int] = (0, 1)) -> None:
    if settings.bot_token is None:
        raise ValueError("set MEDCROWD_BOT_TOKEN to the token @BotFather gave you")
    token = settings.bot_token.get_secret_value()
    url = settings.resolved_database_url
    shared = partition[1] > 1
    if shared and not url.startswith("postgresql"):
        raise ValueError("several bot processes need PostgreSQL (MEDCROWD_DATABASE_URL)")
    front = partition[0] == 0
    if not front:  # a worker the front started: no servers (the Mini App's URL stays, for buttons)
        settings = settings.model_copy(update={"webhook_url": None, "health_listen": None})
    else:
        await asyncio.to_thread(migrate.upgrade, url)
    services = Services.from_settings(settings)
    options = BotOptions(
        token=token,
        base_url=settings.telegram_base_url,
        base_file_url=settings.telegram_file_url,
        rate_limit=settings.telegram_rate_limit,
        digest_seconds=settings.digest_seconds,
        flood_rate=settings.flood_rate,
        flood_burst=settings.flood_burst,
        keep_updates_hours=settings.retention_updates_hours,
    )
    readiness = Readiness()
    readiness.add("database", database_probe(services.engine))
    handlers = bot_services(
        services,
        spec_from(settings),
        digest_seconds=settings.digest_seconds,
        admins=settings.admin_ids,
        webapp_url=settings.webapp_url,
        synthesis=SynthesisOptions(n=settings.synthesis_n, preset=settings.synthesis_preset),
    )
    miniapp: MiniApp | None = None
    editor_server: MiniAppServer | None = None
    if settings.webapp_url and front:
        miniapp = MiniApp(
            sessionmaker=handlers.sessionmaker,
            store=handlers.store,
            crowd=handlers.crowd,  # the bot's live fusion model: one per process
            refiner=handlers.refiner,
            bot_token=options.token,
            origin=origin_of(settings.webapp_url),
            max_age=settings.webapp_max_age,
        )
    webhook = secret = None
    if settings.webhook_url:
        if settings.webhook_secret is None:
            raise ValueError("webhook mode needs MEDCROWD_WEBHOOK_SECRET")
        secret = settings.webhook_secret.get_secret_value()
        host, _, port = settings.webhook_listen.rpartition(":")
        webhook = WebhookServer(
            secret=secret,
            host=host or "127.0.0.1",
            port=int(port),
            path=urlsplit(settings.webhook_url).path or "/telegram",
            miniapp=miniapp,
            readiness=readiness,
        )
    elif miniapp is not None:
        host, _, port = settings.webapp_listen.rpartition(":")
        editor_server = MiniAppServer(miniapp, host=host or "127.0.0.1", port=int(port))
    health_server = None
    if settings.health_listen:
        host, _, port = settings.health_listen.rpartition(":")
        health_server = HealthServer(readiness, host=host or "127.0.0.1", port=int(port))
        await health_server.start()
    others = None
    stopping = asyncio.Event()
    supervisor = None
    if shared and partition[0] == 0:
        others = WorkerProcesses(
            partition[1],
            {
                "MEDCROWD_DATA_DIR": str(settings.data_dir),
                "MEDCROWD_DATABASE_URL": url,
                "MEDCROWD_LOG_LEVEL": settings.log_level,
            },
        )
        others.start()
        supervisor = asyncio.create_task(others.supervise(stopping))
    try:
        await run_bot(
            options,
            handlers,
            webhook=webhook,
            webhook_url=settings.webhook_url,
            webhook_secret=secret,
            editor=miniapp,
            editor_server=editor_server,
            readiness=readiness,
            stop=stopping,
            partition=partition,
            listen_url=url if shared else None,
        )
    finally:
        stopping.set()
        if supervisor is not None:
            await supervisor
        if others is not None:
            await others.stop()
        if health_server is not None:
            await health_server.stop()
        await services.close()


async def _backup_or_restore(args: argparse.Namespace, settings: Settings) -> BackupReport:
    bars: dict[str, tqdm[Any]] = {}

    def progress(phase: str, done: int, total: int | None) -> None:
        if phase not in bars:
            bars[phase] = tqdm(total=total, desc=phase, disable=None)
        bars[phase].update(done - bars[phase].n)

    url = settings.resolved_database_url
    try:
        if args.command == "backup":
            return await backup(url, settings.data_dir, args.out, progress=progress)
        return await restore(
            url, settings.data_dir, args.source, force=args.force, progress=progress
        )
    finally:
        for bar in bars.values():
            bar.close()


async def _ingest(args: argparse.Namespace, settings: Settings) -> IngestReport:
    limits = limits_from(settings)
    for path in args.paths:
        if not path.exists():
            raise FileNotFoundError(f"no such file or folder: {path}")
    masks, problems = index_masks([args.masks], limits) if args.masks else ({}, [])
    for problem in problems:
        logger.warning("mask skipped: %s", problem)
    boxes = parse_boxes(args.boxes.read_bytes(), args.boxes.name) if args.boxes else None
    options = IngestOptions(
        masks=masks,
        boxes=boxes,
        grid=parse_grid(args.grid) if args.grid else None,
        modality=args.modality,
    )
    await asyncio.to_thread(migrate.upgrade, settings.resolved_database_url)
    services = Services.from_settings(settings)
    try:
        async with services.sessionmaker() as session:
            campaign = await ensure_campaign(session, args.project, structure=args.structure)
        with tqdm(total=count_inputs(args.paths), desc="ingest", unit="file", disable=None) as bar:
            return await ingest(
                services.sessionmaker,
                services.store,
                campaign,
                args.paths,
                options,
                services.limits,
                progress=lambda _status: bar.update(1),
            )
    finally:
        await services.close()


async def _propose(args: argparse.Namespace, settings: Settings) -> ProposalRun:
    spec = spec_from(settings, model=args.model)
    workers = settings.workers if args.workers is None else args.workers
    use_ray = args.ray or settings.ray_address is not None
    await asyncio.to_thread(migrate.upgrade, settings.resolved_database_url)
    services = Services.from_settings(settings)
    runner = make_runner(
        "ray" if use_ray else "local",
        workers=workers,
        threads=settings.torch_threads,
        ray_address=settings.ray_address,
    )
    try:
        async with services.sessionmaker() as session:
            campaign = await get_campaign(session, args.project)
        with tqdm(desc="proposals", unit="crop", disable=None) as bar:

            def progress(done: int, total: int) -> None:
                bar.total = total
                bar.n = done
                bar.refresh()

            return await run_proposals(
                services.sessionmaker, services.store, campaign, spec, runner, progress=progress
            )
    finally:
        runner.close()
        await services.close()


def _bench_fusion(args: argparse.Namespace) -> int:
    scenario = Scenario.from_json(args.scenario)
    if args.seed is not None:
        scenario = dataclasses.replace(scenario, seed=args.seed)
    campaign = simulate(scenario)
    methods = args.methods.split(",") if args.methods else None
    scored = run_methods(campaign, methods=methods, repeats=args.repeats)
    results = as_dicts(scored)
    summary: dict[str, float | str | None] = {**summarise(scored), **online_latency(campaign)}
    body = {
        "scenario": str(args.scenario),
        "seed": scenario.seed,
        "repeats": args.repeats,
        "answers": len(campaign.answers),
        "methods": results,
        "summary": summary,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(body, indent=2))
    header = (
        f"{'method':<16} {'Dice':>7} {'p10':>7} {'>=0.90':>7} {'answers':>8} {'s':>7} {'MB':>7}"
    )
    print(header)  # noqa: T201
    for r in results:
        print(  # noqa: T201
            f"{r['method']:<16} {r['mean_dice']:>7.4f} {r['p10_dice']:>7.4f} "
            f"{r['share_dice_90']:>7.1%} {r['answers_per_crop']:>8.2f} {r['seconds']:>7.2f} "
            f"{r['peak_mb']:>7.1f}"
        )
    for key, value in summary.items():
        print(f"{key}: {value}")  # noqa: T201
    print(json.dumps(body))  # noqa: T201
    return 0


def _evaluate_config(args: argparse.Namespace) -> enhancement.EnhancementConfig:
    """The evaluation's config: ``--quick`` sizes, then every flag given."""
    base = enhancement.EnhancementConfig.quick() if args.quick else enhancement.EnhancementConfig()
    given: dict[str, object] = {}
    if args.seeds is not None:
        if not 1 <= args.seeds <= 20:
            raise ValueError(f"--seeds must be between 1 and 20, got {args.seeds}")
        given["seeds"] = tuple(range(args.seeds))
    if args.fractions is not None:
        if any(not 0 < f <= 1 for f in args.fractions):
            raise ValueError(f"--fractions must each be in (0, 1], got {args.fractions}")
        given["fractions"] = tuple(sorted(set(args.fractions)))
    if args.images is not None:
        if args.images < 10:
            raise ValueError(f"--images must be at least 10, got {args.images}")
        given["n_images"] = args.images
    if args.style is not None:
        given["style"] = args.style
    if args.no_label_sources:
        given["label_sources"] = False
    return dataclasses.replace(base, **given)  # type: ignore[arg-type]


def _evaluate(args: argparse.Namespace, settings: Settings) -> int:
    cfg = _evaluate_config(args)
    out = args.out or settings.data_dir / "evaluate"
    out.mkdir(parents=True, exist_ok=True)
    with tqdm(total=enhancement.total_steps(cfg), desc="evaluate", disable=None) as bar:

        def progress(what: str) -> None:
            bar.set_postfix_str(what)
            bar.update(1)

        result = enhancement.run_enhancement(cfg, progress=progress)
    (out / "enhancement.json").write_text(result.to_json())
    (out / "enhancement.png").write_bytes(result.plot_png())
    print(result.format_table())  # noqa: T201
    print(f"wrote {out / 'enhancement.json'} and {out / 'enhancement.png'}")  # noqa: T201
    print(json.dumps(result.summary()))  # noqa: T201
    return 0
