"""The refine stage over a split: inputs checked, images refined in bounded memory, maps written.

pydensecrf runs one image per task in a pool of *spawned* worker processes (each opens
the stores itself; nothing big crosses a pipe, and no forked copy of zarr's event-loop
thread or an OpenMP pool can deadlock it). The torch CRF runs in this process, batching
images of the same size. Either way at most a few images are in memory at once.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from usseg.artifacts.atomic import atomic_dir, atomic_file, clear_temp_files, partial_path, write_json
from usseg.artifacts.digest import digest_tree, file_digest
from usseg.artifacts.label_maps import has_map, write_index, write_map
from usseg.artifacts.locks import file_lock
from usseg.artifacts.predictions import open_predictions
from usseg.artifacts.prepared import PreparedDataset, Record
from usseg.errors import UssegError
from usseg.refine import image as I
from usseg.refine.params import RefineSettings

log = logging.getLogger(__name__)
SHARDS_DIR = ".shards"
RESUME_FILE = ".resume.json"  # fingerprint of a non-sharded partial run


@dataclass
class Stats:
    """What one image contributes to the job's metrics."""

    pixels: int
    changed: int  # labelled pixels whose label the CRF changed
    unlabelled: int  # pixels left 255 in the output
    seconds: float


class RefineJob:
    """Reads one image's inputs and writes its outputs; picklable into worker processes."""

    def __init__(self, scores: Path, dataset_dir: Path, split: str, settings: RefineSettings, out: Path) -> None:
        self.scores, self.dataset_dir, self.split = Path(scores), Path(dataset_dir), split
        self.settings, self.out = settings, Path(out)
        self._ds: Any = None
        self.dataset = PreparedDataset(dataset_dir)
        self.records = self.dataset.records(split)
        ds = self.open()
        self.kind = str(ds.attrs["kind"])
        self.num_labels = int(ds.attrs["num_labels"])
        self._check(ds)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_ds": None}  # each process opens the store itself

    def open(self) -> Any:
        if self._ds is None:
            self._ds = open_predictions(self.scores)
        return self._ds

    def _check(self, ds: Any) -> None:
        """Predictions and split must list the same images in the same order and sizes."""
        var = "scores" if self.kind == "soft" else "labels"
        if var not in ds:
            raise UssegError(f"{self.scores}: kind {self.kind!r} but no {var!r} variable")
        if not 1 <= self.num_labels <= 254:
            raise UssegError(f"{self.scores}: num_labels={self.num_labels} outside 1..254")
        if self.kind == "soft" and ds.sizes["label"] != self.num_labels:
            raise UssegError(f"{self.scores}: {ds.sizes['label']} score maps but num_labels={self.num_labels}")
        if min(ds.sizes["y"], ds.sizes["x"]) < 1:
            raise UssegError(f"{self.scores}: empty patch grid {ds.sizes['y']}x{ds.sizes['x']}")
        ids = [str(i) for i in ds["image"].values]
        want = [r.id for r in self.records]
        where = f"{self.scores} vs {self.dataset_dir} split {self.split!r}"
        for i, (got, rec) in enumerate(zip(ids, want, strict=False)):
            if got != rec:
                raise UssegError(f"{where}: image {i} is {got!r} in the predictions but {rec!r} in the split")
        if len(ids) != len(want):
            first = ids[len(want)] if len(ids) > len(want) else want[len(ids)]
            raise UssegError(f"{where}: {len(ids)} vs {len(want)} images; first unmatched id {first!r}")
        heights, widths = ds["height"].values, ds["width"].values
        for rec, h, w in zip(self.records, heights, widths, strict=True):
            if (int(h), int(w)) != (rec.height, rec.width):
                raise UssegError(
                    f"{where}: image {rec.id!r} is {w}x{h} in the predictions, {rec.width}x{rec.height} in the split"
                )

    def load(self, index: int) -> tuple[Record, np.ndarray, I.Upsampled]:
        """The image and its full-size prediction (probabilities only when needed)."""
        rec = self.records[index]
        where = f"image {rec.id!r} ({self.scores})"
        ds = self.open()
        image = self.dataset.load_image(rec)
        need_probs = self.settings.crf_params is not None or self.settings.save_probs
        if self.kind == "soft":
            scores = np.asarray(ds["scores"].isel(image=index).values, np.float32)
            up = I.from_scores(scores, rec.height, rec.width, self.num_labels, where)
        else:
            labels = np.asarray(ds["labels"].isel(image=index).values)
            up = I.from_labels(
                labels, rec.height, rec.width, self.num_labels, self.settings.label_confidence, need_probs, where
            )
        return rec, image, up

    def write(self, rec: Record, labels: np.ndarray, probs: np.ndarray | None) -> None:
        """One image's outputs, each renamed into place when complete; the map last (it marks the
        image done for a resumed run)."""
        if self.settings.save_probs and probs is not None:
            with atomic_file(self.out / "probs" / f"{rec.id}.npy", "wb") as fh:
                np.save(fh, probs.astype(np.float16))
        write_map(self.out, rec.id, labels)

    def done(self, index: int) -> bool:
        """Whether an earlier (interrupted) run already wrote this image's outputs."""
        return has_map(self.out, self.records[index].id)

    def stats(self, up: I.Upsampled, labels: np.ndarray, seconds: float) -> Stats:
        labelled = up.labels != I.UNLABELLED
        return Stats(
            pixels=labels.size,
            changed=int(((labels != up.labels) & labelled).sum()),
            unlabelled=int((labels == I.UNLABELLED).sum()),
            seconds=seconds,
        )

    def refine_reference(self, index: int) -> Stats:
        """One image with pydensecrf (or no CRF): the unit of work of a pool worker."""
        from usseg.refine.crf_reference import dense_crf

        start = time.perf_counter()
        rec, image, up = self.load(index)
        q = up.probs
        if self.settings.crf_params is None:
            labels = up.labels
        else:
            assert up.probs is not None
            u = I.unary(up.probs, self.settings.unary_clip)
            q = dense_crf(image, u, self.settings.crf_params, where=f"image {rec.id!r}")
            labels = I.finish(q, up, self.settings)
        self.write(rec, labels, q)
        return self.stats(up, labels, time.perf_counter() - start)

    def refine_torch(self, indices: Sequence[int], device: Any) -> Iterator[Stats]:
        """A batch of same-size images with the torch CRF."""
        from usseg.refine.crf_reference import check_crf_inputs
        from usseg.refine.crf_torch import dense_crf_batch

        start = time.perf_counter()
        loaded = [self.load(i) for i in indices]
        unaries = []
        for rec, image, up in loaded:
            assert up.probs is not None
            unaries.append(I.unary(up.probs, self.settings.unary_clip))
            check_crf_inputs(image, unaries[-1], f"image {rec.id!r}")
        assert self.settings.crf_params is not None
        q = dense_crf_batch(
            np.stack([im for _, im, _ in loaded]), np.stack(unaries), self.settings.crf_params, device
        ).cpu().numpy()
        seconds = (time.perf_counter() - start) / len(indices)
        for (rec, _, up), qi in zip(loaded, q, strict=True):
            labels = I.finish(qi, up, self.settings)
            self.write(rec, labels, qi)
            yield self.stats(up, labels, seconds)


_JOB: RefineJob | None = None


def _init_worker(job: RefineJob) -> None:
    """Pool initializer: one job per process, BLAS kept to one thread (the pool is the parallelism)."""
    global _JOB
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    _JOB = job


def _work(index: int) -> Stats:
    assert _JOB is not None
    return _JOB.refine_reference(index)


def run_images(job: RefineJob, indices: Sequence[int], threads: int) -> list[Stats]:
    """Refine ``indices`` with the configured implementation; per-image stats."""
    bar = {"total": len(indices), "desc": "refine", "unit": "img"}
    s = job.settings
    if s.impl == "torch" and s.crf_params is not None:
        import torch

        from usseg.device import pick_device
        from usseg.refine.crf_torch import batches

        torch.set_num_threads(max(1, threads))
        device = pick_device(s.device, "refine.device")
        # On a CPU a bigger lattice only thrashes the cache: batching pays on the GPU only.
        size = s.batch_size if device.type == "cuda" else 1
        groups = batches([(job.records[i].height, job.records[i].width) for i in indices], size, job.num_labels)
        out = []
        with tqdm(**bar) as progress:
            for group in groups:
                for st in job.refine_torch([indices[g] for g in group], device):
                    out.append(st)
                    progress.update()
        return out
    workers = min(threads, len(indices))
    if workers <= 1 or s.crf_params is None:  # upsampling alone is too cheap to pay for a pool
        job.open()
        return [job.refine_reference(i) for i in tqdm(indices, **bar)]
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers, initializer=_init_worker, initargs=(job,)) as pool:
        return list(tqdm(pool.imap_unordered(_work, indices, chunksize=1), **bar))


def shard_indices(n: int, shard: tuple[int, int] | None) -> list[int]:
    """Shard i of k takes images i, i+k, i+2k, ... (balanced whatever the size order)."""
    if shard is None:
        return list(range(n))
    i, k = shard
    return list(range(i, n, k))


def index_doc(job: RefineJob) -> dict[str, Any]:
    return {
        "num_labels": job.num_labels,
        "split": job.split,
        "images": len(job.records),
        "probs": job.settings.save_probs,
        "source": job.kind,
        **job.settings.describe(),
    }


def refine_split(
    scores: Path,
    dataset_dir: Path,
    split: str,
    out: Path,
    settings: RefineSettings,
    threads: int,
    shard: tuple[int, int] | None = None,
) -> list[Stats]:
    """Refine a split (or one shard of it) into ``out``; see docs/refine.md for sharding."""
    out = Path(out)
    if shard is None:
        return _refine_resumable(scores, dataset_dir, split, out, settings, threads)
    tmp = partial_path(out)
    if (tmp / RESUME_FILE).is_file():
        with file_lock(_lock_path(out)):
            if (tmp / RESUME_FILE).is_file():
                log.info("refine: discarding %s, a partial run without --shard", tmp)
                shutil.rmtree(tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    job = RefineJob(scores, dataset_dir, split, settings, tmp)
    doc = index_doc(job)
    marker = {"shards": shard[1], "index": doc, "scores": str(Path(scores).resolve())}
    with file_lock(_lock_path(out)):
        _check_markers(tmp, marker)
    stats = run_images(job, shard_indices(len(job.records), shard), threads)
    write_json(tmp / SHARDS_DIR / f"{shard[0]}-of-{shard[1]}.json", marker)
    with file_lock(_lock_path(out)):
        _publish_if_complete(tmp, out, job, marker)
    return stats


def resume_fingerprint(
    scores: Path, dataset_dir: Path, split: str, settings: RefineSettings
) -> dict[str, Any]:
    """What a partial run's maps depend on: the predictions' bytes, the split and the settings."""
    return {
        "scores_digest": digest_tree(Path(scores)),
        "split": split,
        "split_index_sha256": file_digest(Path(dataset_dir) / f"{split}.csv"),
        "settings": settings.describe(),
        "save_probs": settings.save_probs,
    }


def _refine_resumable(
    scores: Path, dataset_dir: Path, split: str, out: Path, settings: RefineSettings, threads: int
) -> list[Stats]:
    """Refine every image not already in ``<out>.partial`` from a run with the same fingerprint."""
    tmp = partial_path(out)
    fingerprint = resume_fingerprint(scores, dataset_dir, split, settings)
    marker = tmp / RESUME_FILE
    resume = marker.is_file() and json.loads(marker.read_text()) == fingerprint
    if tmp.exists() and not resume:
        log.info("refine: discarding %s, made with other inputs or settings", tmp)
    with atomic_dir(out, resume=resume) as tmp:
        clear_temp_files(tmp)
        write_json(marker, fingerprint)
        job = RefineJob(scores, dataset_dir, split, settings, tmp)
        todo = [i for i in range(len(job.records)) if not job.done(i)]
        if len(todo) < len(job.records):
            done = len(job.records) - len(todo)
            log.info("refine: resuming %s, %d of %d images already done", tmp, done, len(job.records))
        stats = run_images(job, todo, threads)
        marker.unlink()
        write_index(tmp, index_doc(job))
    return stats


def _lock_path(out: Path) -> Path:
    """The lock beside ``out`` that shards hold while they inspect or publish it."""
    return out.with_name(f".{out.name}.lock")


def _check_markers(tmp: Path, marker: dict[str, Any]) -> None:
    """Every shard already done must have run with the same inputs and settings."""
    for path in sorted((tmp / SHARDS_DIR).glob("*.json")):
        if json.loads(path.read_text()) != marker:
            raise UssegError(
                f"{tmp}: shard {path.stem} was made with other inputs, settings or shard count; "
                f"delete {tmp} to start over"
            )


def _publish_if_complete(tmp: Path, out: Path, job: RefineJob, marker: dict[str, Any]) -> None:
    """The shard that completes the set writes index.json and renames the folder into place."""
    if not tmp.is_dir():
        return  # another shard already published
    _check_markers(tmp, marker)
    n = marker["shards"]
    done = {p.stem for p in (tmp / SHARDS_DIR).glob("*.json")}
    if done != {f"{i}-of-{n}" for i in range(n)}:
        log.info("refine: %d of %d shards done in %s", len(done), n, tmp)
        return
    missing = [r.id for r in job.records if not has_map(tmp, r.id)]
    if missing:
        raise UssegError(f"{tmp}: all shards reported done but {len(missing)} maps are missing (first {missing[0]!r})")
    shutil.rmtree(tmp / SHARDS_DIR)
    write_index(tmp, index_doc(job))
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    log.info("refine: all %d shards done; published %s", n, out)
