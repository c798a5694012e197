"""``dmlkit embed | index | search | export``: using a trained run for retrieval."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dmlkit.cli.consoles import console
from dmlkit.cli.json_output import JsonOpt, emit

RunArg = Annotated[Path, typer.Argument(help="a run directory (runs/<name>/)")]
ImagesArg = Annotated[Path, typer.Argument(help="a folder of images (class folders give labels)")]
BatchOpt = Annotated[int, typer.Option(help="images per forward pass")]
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1, ...")]
WorkersOpt = Annotated[int, typer.Option("--workers", help="image-decoding worker processes")]
ProgressOpt = Annotated[bool, typer.Option("--progress/--no-progress", help="progress bar")]


def _embed_folder(run_dir: Path, images_dir: Path, batch_size: int, device: str, workers: int,
                  progress: bool):
    from dmlkit.engine.seed import resolve_device
    from dmlkit.serve.image_listing import list_images
    from dmlkit.serve.load import load_run

    loaded = load_run(run_dir)
    listing = list_images(images_dir)
    emb = loaded.embed(listing.paths, batch_size, resolve_device(device), workers, progress)
    return loaded, listing, emb


def embed(
    run_dir: RunArg,
    images_dir: ImagesArg,
    output: Annotated[Path, typer.Option("-o", "--output", help="OUT.safetensors or OUT.npz")],
    batch_size: BatchOpt = 256,
    device: DeviceOpt = "auto",
    workers: WorkersOpt = 0,
    progress: ProgressOpt = True,
    as_json: JsonOpt = False,
):
    """Embed every image of a folder; writes embeddings, labels and relative paths."""
    import torch

    from dmlkit.serve.embeddings_file import EmbeddingsFile, check_suffix
    from dmlkit.version import __version__

    check_suffix(output)
    loaded, listing, emb = _embed_folder(run_dir, images_dir, batch_size, device, workers,
                                         progress)
    labels = None if listing.labels is None else torch.from_numpy(listing.labels)
    meta = {"run": str(loaded.path.resolve()), "fingerprint": loaded.fingerprint,
            "dmlkit_version": __version__, "root": str(listing.root.resolve()),
            "class_names": listing.class_names, "distance": loaded.cfg.eval.distance,
            "normalize": loaded.cfg.eval.normalize}
    EmbeddingsFile(emb, listing.relative, labels, meta).save(output)
    if as_json:
        emit({"output": str(output), "run": meta["run"], "count": emb.shape[0],
              "dim": emb.shape[1], "labeled": labels is not None,
              "classes": None if labels is None else len(listing.class_names)})
        return
    what = "unlabeled" if labels is None else f"{len(listing.class_names)} classes"
    console.print(f"wrote {emb.shape[0]} x {emb.shape[1]} embeddings ({what}) to {output}")


def index(
    run_dir: RunArg,
    images_dir: ImagesArg,
    output: Annotated[Path, typer.Option("-o", "--output", help="index file (+ OUT.json)")],
    kind: Annotated[str, typer.Option(help="flat (exact), ivf or hnsw")] = "flat",
    nlist: Annotated[int | None, typer.Option(help="ivf cells (default 4 sqrt(N))")] = None,
    nprobe: Annotated[int | None, typer.Option(help="ivf cells searched")] = None,
    hnsw_m: Annotated[int, typer.Option(help="hnsw links per node")] = 32,
    ef_search: Annotated[int, typer.Option(help="hnsw search candidates")] = 64,
    batch_size: BatchOpt = 256,
    device: DeviceOpt = "auto",
    workers: WorkersOpt = 0,
    progress: ProgressOpt = True,
    as_json: JsonOpt = False,
):
    """Embed a folder and build a faiss index of it; approximate kinds report their recall."""
    from rich.table import Table

    from dmlkit.serve.index import GalleryIndex, check_kind

    check_kind(kind)
    loaded, listing, emb = _embed_folder(run_dir, images_dir, batch_size, device, workers,
                                         progress)
    gallery = GalleryIndex.build(
        emb, listing.relative, loaded, listing.root, listing.labels, listing.class_names, kind,
        nlist=nlist, nprobe=nprobe, hnsw_m=hnsw_m, ef_search=ef_search,
    )
    gallery.save(output)
    m = gallery.meta
    if as_json:
        emit({"index": str(output), "kind": m.kind, "vectors": m.count, "dim": m.dim,
              "distance": m.distance, "parameters": m.params,
              "recall": None if m.recall is None else {
                  "k": m.recall.k, "recall_at_k": m.recall.recall_at_k,
                  "queries": m.recall.queries}})
        return
    table = Table(title=f"index {output}")
    for col in ("kind", "vectors", "dim", "distance", "parameters", "recall vs exact"):
        table.add_column(col)
    recall = ("1 (exact)" if m.recall is None
              else f"recall@{m.recall.k} = {m.recall.recall_at_k:.4f} ({m.recall.queries} queries)")
    params = ", ".join(f"{k}={v}" for k, v in m.params.items()) or "-"
    table.add_row(m.kind, str(m.count), str(m.dim), m.distance, params, recall)
    console.print(table)


def search(
    index_file: Annotated[Path, typer.Argument(help="an index written by dmlkit index")],
    queries: Annotated[list[Path], typer.Argument(help="query images (or folders of them)")],
    k: Annotated[int, typer.Option("-k", help="neighbours per query")] = 10,
    run: Annotated[Path | None, typer.Option(help="run directory (default: the index's)")] = None,
    html: Annotated[Path | None, typer.Option(help="also write a self-contained HTML page")] = None,
    batch_size: BatchOpt = 256,
    device: DeviceOpt = "auto",
    progress: ProgressOpt = False,
    as_json: JsonOpt = False,
):
    """Nearest gallery images of each query image."""
    from rich.table import Table

    from dmlkit.base.atomic_write import atomic_write_bytes
    from dmlkit.engine.seed import resolve_device
    from dmlkit.errors import CheckpointError
    from dmlkit.serve.gallery_html import search_page
    from dmlkit.serve.image_listing import expand_image_args
    from dmlkit.serve.index import GalleryIndex
    from dmlkit.serve.load import load_run

    gallery = GalleryIndex.load(index_file)
    if run is None:
        run = Path(gallery.meta.run.path)
        if not run.is_dir():
            raise CheckpointError(f"the index's run {run} does not exist; pass --run RUN_DIR")
    loaded = load_run(run)
    gallery.check_run(loaded)
    paths = expand_image_args(queries)
    hits = gallery.hits(loaded.embed(paths, batch_size, resolve_device(device), 0, progress), k)
    if html is not None:
        classes = set(gallery.meta.class_names.values())  # a query's folder may be one
        page = search_page(paths, hits, Path(gallery.meta.root), gallery.score_name,
                           f"dmlkit search: {index_file.name}",
                           [q.parent.name if q.parent.name in classes else None for q in paths])
        atomic_write_bytes(html, page.encode("utf-8"))
    if as_json:
        emit({"index": str(index_file), "score": gallery.score_name, "k": k,
              **({"html": str(html)} if html is not None else {}),
              "queries": [{"query": str(q), "hits": [
                  {"rank": h.rank, "path": h.path, "label": h.label, "score": h.score}
                  for h in row]} for q, row in zip(paths, hits, strict=True)]})
        return
    for query, row in zip(paths, hits, strict=True):
        table = Table(title=f"query {query}")
        for col, justify in (("rank", "right"), ("gallery image", "left"), ("label", "left"),
                             (gallery.score_name, "right")):
            table.add_column(col, justify=justify)
        for h in row:
            table.add_row(str(h.rank), h.path, h.label or "", f"{h.score:.4f}")
        console.print(table)
    if html is not None:
        console.print(f"wrote {html}")


def export(
    run_dir: RunArg,
    format_: Annotated[str, typer.Option("--format", help="torchscript or onnx")],
    output: Annotated[Path, typer.Option("-o", "--output", help="model file to write")],
    image_size: Annotated[
        int | None, typer.Option(help="example image side (default: the run's dataset images)")
    ] = None,
    as_json: JsonOpt = False,
):
    """Export the model (transformed images -> embeddings), checked against the eager model."""
    from dmlkit.serve.export import export_model
    from dmlkit.serve.load import load_run

    r = export_model(load_run(run_dir), format_, output, image_size)
    if as_json:
        emit({"format": r.format, "path": str(r.path), "input_shape": list(r.input_shape),
              "max_abs_diff": r.max_abs_diff})
        return
    console.print(
        f"wrote {r.format} model to {r.path} (input B x {' x '.join(map(str, r.input_shape))}); "
        f"max |exported - eager| = {r.max_abs_diff:.2e}"
    )


def register(app: typer.Typer) -> None:
    """Add the retrieval commands to the ``dmlkit`` app."""
    for command in (embed, index, search, export):
        app.command()(command)
