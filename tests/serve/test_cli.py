"""The retrieval commands (embed, index, search, export) through typer's CliRunner."""

import shutil

import pytest
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from cli_output import message_lines
from data.fixtures import write_png_header
from dmlkit.cli.app import app
from dmlkit.serve.embeddings_file import load_embeddings_file
from dmlkit.serve.image_listing import list_images
from dmlkit.serve.load import load_run
from numeric import assert_whole_close


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


@pytest.fixture(scope="module")
def flat_index(run_dir, digits_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("index") / "g.index"
    res = invoke("index", run_dir, digits_folder, "-o", out, "--no-progress")
    assert res.exit_code == 0, res.output
    assert "flat" in res.output and "1 (exact)" in res.output
    return out


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_embed_writes_embeddings_labels_and_paths(run_dir, digits_folder, tmp_path, suffix):
    out = tmp_path / f"e{suffix}"
    res = invoke("embed", run_dir, digits_folder, "-o", out, "--no-progress")
    assert res.exit_code == 0, res.output
    assert "120 x 32 embeddings (10 classes)" in res.output
    f = load_embeddings_file(out)
    listing = list_images(digits_folder)
    assert f.paths == listing.relative and f.labels.tolist() == listing.labels.tolist()
    expected = load_run(run_dir).embed(listing.paths, progress=False)
    assert_whole_close(f.embeddings, expected)
    assert f.meta["fingerprint"] == load_run(run_dir).fingerprint


def test_embed_refuses_an_unknown_suffix_before_working(run_dir, digits_folder, tmp_path):
    res = invoke("embed", run_dir, digits_folder, "-o", tmp_path / "e.pt")
    assert res.exit_code == 2 and "suffix" in res.output  # one line (DataError)


def test_search_finds_the_query_itself_and_writes_html(flat_index, digits_folder, tmp_path):
    query = digits_folder / "3" / sorted(p.name for p in (digits_folder / "3").iterdir())[0]
    res = invoke("search", flat_index, query, "-k", 3, "--html", tmp_path / "s.html")
    assert res.exit_code == 0, res.output
    first = next(line for line in res.output.splitlines() if "│    1 │" in line)
    assert f"3/{query.name}" in first and "0.0000" in first and "│ 3 " in first
    page = (tmp_path / "s.html").read_text()
    assert page.count("data:image/png;base64,") == 4  # the query and its 3 neighbours
    assert '<span class="">query</span> <span class="">[3]</span>' in page  # its class folder
    assert '<figure class="same">' in page  # the query itself, found in its class


@pytest.mark.parametrize("kind,extra", [("ivf", ["--nlist", 4, "--nprobe", 2]),
                                        ("hnsw", ["--hnsw-m", 8])])
def test_approximate_indexes_report_recall(run_dir, digits_folder, tmp_path, kind, extra):
    res = invoke("index", run_dir, digits_folder, "-o", tmp_path / "g.index", "--kind", kind,
                 "--no-progress", *extra)
    assert res.exit_code == 0, res.output
    assert "recall@10 = " in res.output and "(120 queries)" in res.output
    res = invoke("search", tmp_path / "g.index", digits_folder / "0", "-k", 2)
    assert res.exit_code == 0 and res.output.count("query ") == 12


def test_unknown_kind_fails_before_embedding(run_dir, tmp_path):
    res = invoke("index", run_dir, tmp_path / "no-such-folder", "-o", tmp_path / "g", "--kind", "x")
    assert res.exit_code == 2 and "unknown index kind 'x'" in res.output  # ConfigError


def test_search_with_another_model_is_a_checkpoint_error(run_dir, flat_index, digits_folder,
                                                         tmp_path):
    other = tmp_path / "other"
    shutil.copytree(run_dir, other)
    weights = load_file(other / "model.safetensors")
    weights = {k: v + 0.01 if v.is_floating_point() else v for k, v in weights.items()}
    save_file(weights, other / "model.safetensors")
    res = invoke("search", flat_index, digits_folder / "0", "--run", other)
    assert res.exit_code == 2 and "rebuild the index" in res.output  # CheckpointError


def test_search_without_the_indexs_run(flat_index, tmp_path, digits_folder):
    moved = tmp_path / "moved.index"
    shutil.copy(flat_index, moved)
    side = flat_index.with_name(flat_index.name + ".json")
    text = side.read_text().replace(str(side.parent.parent), "/nonexistent")
    moved.with_name("moved.index.json").write_text(text)
    res = invoke("search", moved, digits_folder / "0")
    assert res.exit_code == 2 and "--run" in res.output  # CheckpointError


def test_export_torchscript(run_dir, tmp_path):
    res = invoke("export", run_dir, "--format", "torchscript", "-o", tmp_path / "m.pt")
    assert res.exit_code == 0, res.output
    assert "max |exported - eager|" in res.output and (tmp_path / "m.pt").is_file()


def test_search_json_lists_every_query_and_its_hits(flat_index, digits_folder):
    import json

    res = CliRunner().invoke(app, ["search", str(flat_index), str(digits_folder / "3"), "-k",
                                   "2", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["k"] == 2 and len(doc["queries"]) == len(list((digits_folder / "3").iterdir()))
    first = doc["queries"][0]
    assert first["hits"][0]["rank"] == 1 and first["hits"][0]["score"] == pytest.approx(0, abs=1e-5)
    assert first["hits"][0]["path"].endswith(first["query"].rsplit("/", 1)[-1])


def test_embed_index_export_json_documents(run_dir, digits_folder, tmp_path):
    """--json on every retrieval verb: one JSON document on stdout, with schema_version."""
    import json

    from dmlkit.cli.json_output import SCHEMA_VERSION

    runs = {
        "embed": ["embed", run_dir, digits_folder, "-o", tmp_path / "e.npz", "--no-progress"],
        "index": ["index", run_dir, digits_folder, "-o", tmp_path / "g.index", "--no-progress"],
        "export": ["export", run_dir, "--format", "torchscript", "-o", tmp_path / "m.pt"],
    }
    docs = {}
    for name, args in runs.items():
        res = CliRunner().invoke(app, [str(a) for a in args] + ["--json"])
        assert res.exit_code == 0, res.output
        docs[name] = json.loads(res.stdout)
        assert docs[name]["schema_version"] == SCHEMA_VERSION
    n = sum(1 for p in digits_folder.rglob("*") if p.is_file())
    assert docs["embed"]["count"] == n and docs["embed"]["labeled"] is True
    assert docs["index"]["kind"] == "flat" and docs["index"]["recall"] is None
    assert docs["index"]["vectors"] == n == docs["index"]["vectors"]
    assert docs["export"]["format"] == "torchscript" and docs["export"]["max_abs_diff"] < 1e-3


def test_piped_result_lines_are_not_wrapped(run_dir, tmp_path):
    """Not a terminal (CliRunner, 80 columns): the result line stays one line."""
    out = tmp_path / ("a_rather_long_model_file_name_" * 3 + ".pt")
    res = CliRunner().invoke(app, ["export", str(run_dir), "--format", "torchscript", "-o",
                                   str(out)])
    assert res.exit_code == 0, res.output
    lines = [line for line in res.stdout.splitlines() if line.startswith("wrote")]
    assert len(lines) == 1 and "max |exported - eager|" in lines[0]


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("size", [(12000, 12000), (30000, 30000)])
def test_images_over_the_pixel_limit_are_one_line(run_dir, flat_index, digits_folder, tmp_path,
                                                  size):
    folder = tmp_path / "g"
    shutil.copytree(digits_folder, folder)
    big = write_png_header(folder / "0" / "big.png", size)
    for args in (["embed", run_dir, folder, "-o", tmp_path / "e.npz"],
                 ["index", run_dir, folder, "-o", tmp_path / "g.index"],
                 ["search", flat_index, big]):
        res = invoke(*args, "--no-progress")
        assert res.exit_code == 2 and f"image {big} is " in res.output, res.output
        assert len(message_lines(res.output)) == 1 and "Traceback" not in res.output
