"""The benchmark report in a real headless browser (Chromium, driven over the DevTools
protocol on a pipe): no console errors, no failed loads, every image decoded, not blank."""

import base64
import contextlib
import io
import json
import os
import select
import shutil
import subprocess
import time

import numpy as np
import pytest
import torch
from PIL import Image

from dmlkit import config
from dmlkit.base.files import save_weights
from dmlkit.base.run_dir import environment
from dmlkit.data.build import build_data
from dmlkit.engine.run_report import write_run_report
from dmlkit.protocol.benchmark_config import BenchmarkConfig
from dmlkit.protocol.final import EMBEDDINGS
from dmlkit.protocol.records import SCHEMA, record
from dmlkit.protocol.report import write_report
from dmlkit.serve.gallery_html import search_page
from dmlkit.serve.index import Hit
from run_fixtures import fake_run

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))
                 if p), None)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1200,900", "--remote-debugging-pipe"]
needs_browser = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")


class DevTools:
    """A minimal Chrome DevTools protocol client over --remote-debugging-pipe (fds 3 and 4)."""

    def __init__(self, user_dir, timeout=60.0):
        to_r, self._to = os.pipe()
        self._from, from_w = os.pipe()
        # the browser reads commands on fd 3 and writes replies and events on fd 4
        shell = f'exec "$0" "$@" 3<&{to_r} 4>&{from_w}'
        self.proc = subprocess.Popen(
            ["bash", "-c", shell, CHROMIUM, *FLAGS, f"--user-data-dir={user_dir}"],
            pass_fds=(to_r, from_w), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_r)
        os.close(from_w)
        self.deadline = time.monotonic() + timeout
        self.buffer, self.events, self.next_id = b"", [], 0

    def _read(self):
        while b"\0" not in self.buffer:
            left = self.deadline - time.monotonic()
            if left <= 0 or not select.select([self._from], [], [], left)[0]:
                raise TimeoutError("no answer from the browser")
            chunk = os.read(self._from, 1 << 20)
            if not chunk:
                raise EOFError("the browser closed the pipe")
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method, session=None, **params):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        os.write(self._to, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, event):
        while not any(e.get("method") == event for e in self.events):
            self.events.append(self._read())

    def close(self):
        with contextlib.suppress(EOFError, OSError, TimeoutError, RuntimeError):
            self.send("Browser.close")
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to)
        os.close(self._from)


IMAGES_JS = """JSON.stringify(Array.from(document.images).map(
    i => ({complete: i.complete, width: i.naturalWidth, height: i.naturalHeight})))"""


LAYOUT_JS = """JSON.stringify({scroll: document.documentElement.scrollWidth,
    window: window.innerWidth})"""
WIDTH = 1280  # a laptop window: no page may scroll sideways at this width


def browser_check(path, user_dir, layout=None):
    """Load ``path`` in a WIDTH px wide window; return (problems, images, screenshot as an
    RGB array); with ``layout`` (a dict) also fill in the page's scroll width and the
    window's width."""
    dt = DevTools(user_dir)
    try:
        target = dt.send("Target.createTarget", url="about:blank")["targetId"]
        session = dt.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            dt.send(f"{domain}.enable", session)
        dt.send("Emulation.setDeviceMetricsOverride", session, width=WIDTH, height=900,
                deviceScaleFactor=1, mobile=False)
        dt.send("Page.navigate", session, url=path.resolve().as_uri())
        dt.wait_for("Page.loadEventFired")
        images = json.loads(dt.send("Runtime.evaluate", session, expression=IMAGES_JS,
                                    returnByValue=True)["result"]["value"])
        if layout is not None:
            layout.update(json.loads(dt.send("Runtime.evaluate", session, expression=LAYOUT_JS,
                                             returnByValue=True)["result"]["value"]))
        shot = dt.send("Page.captureScreenshot", session, format="png",
                       captureBeyondViewport=True)["data"]
    finally:
        dt.close()
    problems = []
    for e in dt.events:
        p = e.get("params", {})
        if e.get("method") == "Runtime.consoleAPICalled" and p["type"] in ("error", "assert"):
            problems.append(f"console.{p['type']}: {p['args']}")
        elif e.get("method") == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            problems.append(f"{d.get('text')} {d.get('exception', {}).get('description')}")
        elif e.get("method") == "Log.entryAdded" and p["entry"]["level"] == "error":
            problems.append(f"log: {p['entry']['text']}")
    pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(shot))).convert("RGB"))
    return problems, images, pixels


def fake_results(tmp_path):
    """A finished two-method benchmark without training: configs, curves, embeddings."""
    out = tmp_path / "bench"
    bench = BenchmarkConfig.model_validate({
        "name": "html-check", "output": str(out), "folds": 2, "seeds": 2, "trials": 3,
        "methods": {"good": {"preset": "digits-smoke"}, "bad": {"preset": "digits-smoke"}},
        "report": {"map_points": 50, "gallery_queries": 2, "gallery_k": 3}})
    cfg = config.load("digits-smoke", ["data.val_fraction=0", "data.folds=2", "data.fold=0"])
    test = build_data(cfg.data).test.query
    labels = torch.as_tensor(test.catalog.labels)
    rng = np.random.default_rng(0)
    methods, records = {}, []
    for i, name in enumerate(bench.methods):
        runs = []
        for k in range(2):
            run = out / name / f"fold{k}"
            run.mkdir(parents=True)
            config.save(cfg, run / "config.yaml")
            rows = [f"{e},{1 / e:.3f},{0.5 + 0.1 * e - 0.2 * i:.3f}" for e in range(1, 4)]
            (run / "metrics.csv").write_text("epoch,train_loss,val_map_at_r\n" +
                                             "\n".join(rows) + "\n")
            runs.append(f"{name}/fold{k}")
        centres = rng.normal(size=(10, 8)) * (3.0 if name == "good" else 0.1)
        emb = torch.tensor(centres[labels.numpy()] + rng.normal(size=(len(labels), 8)),
                           dtype=torch.float32)
        save_weights({"embeddings": emb, "labels": labels}, out / name / EMBEDDINGS)
        level = 0.8 if name == "good" else 0.3
        for s in range(2):
            records += [record(name, "final", s, k, {"map_at_r": level + 0.01 * (s + k),
                                                     "precision_at_1": level})
                        for k in range(2)]
            records.append(record(name, "final", s, None, {"map_at_r": level + 0.05,
                                                           "precision_at_1": level}))
        methods[name] = {
            "preset": "digits-smoke", "dataset": "digits", "baseline": None,
            "search": {"counts": {"complete": 2, "pruned": 1}, "best_value": level,
                       "seconds": 4.5, "trials": [{"seconds": 1.5}] * 3},
            "final": {"params": {"optim.lr": 0.001234}, "trial": 0, "runs": runs,
                      "seconds": 2.0}}
    return {"schema": SCHEMA, "benchmark": bench.model_dump(mode="json"),
            "environment": environment(0), "methods": methods, "records": records}


def test_report_contents_mark_the_best_method(tmp_path):
    md, page = write_report(tmp_path / "report", fake_results(tmp_path))
    text = md.read_text()
    good = next(line for line in text.splitlines() if line.startswith("| good |"))
    bad = next(line for line in text.splitlines() if line.startswith("| bad |"))
    # one value per seed (the mean of its 2 fold models): 0.805, 0.815; t(0.975, 1) = 12.706
    assert "**0.810 ± 0.064**" in good and "**" not in bad.split("|")[3]
    assert "| good | **0.800** | 3 (1) | 4 | 2 |" in text  # the search table
    assert "| bad | 0.300 | 3 (1) |" in text and "optim.lr=0.001234" in text
    for name in ("learning-curves", "embedding-map", "gallery-good", "gallery-bad"):
        assert f"figures/{name}.png" in text
        assert (tmp_path / "report" / "figures" / f"{name}.png").stat().st_size > 1000
    html = page.read_text()
    assert html.count('src="data:image/png;base64,') == 4 and "<b>0.810 ± 0.064</b>" in html
    assert "http" not in html.replace("http-equiv", "")  # nothing fetched from elsewhere


@needs_browser
def test_report_loads_cleanly_and_renders_in_a_browser(tmp_path):
    _, page = write_report(tmp_path / "report", fake_results(tmp_path))
    layout = {}
    problems, images, pixels = browser_check(page, tmp_path / "profile", layout)
    assert problems == []
    assert layout["scroll"] <= layout["window"] <= WIDTH and pixels.shape[1] <= WIDTH
    assert len(images) == 4
    assert all(i["complete"] and i["width"] > 100 and i["height"] > 100 for i in images)
    assert pixels.shape[0] > 900  # the whole page, beyond the first screen
    assert pixels.std() > 20 and (pixels < 128).mean() > 0.01  # not blank


@needs_browser
def test_browser_check_catches_errors_and_broken_images(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head><body>'
                    '<img src="missing.png"><script>console.error("boom"); nope();</script>'
                    "</body></html>")
    problems, images, _ = browser_check(page, tmp_path / "profile")
    assert any("boom" in p for p in problems)
    assert any("nope" in p for p in problems)
    assert any("missing.png" in p or "ERR_FILE_NOT_FOUND" in p for p in problems)
    assert images == [{"complete": True, "width": 0, "height": 0}]


@needs_browser
def test_a_run_report_renders_without_sideways_scroll(tmp_path):
    run = fake_run(tmp_path / "run")
    write_run_report(run)
    layout = {}
    problems, images, pixels = browser_check(run / "report.html", tmp_path / "profile", layout)
    assert problems == [] and len(images) == 1
    assert images[0]["complete"] and images[0]["width"] > 300
    assert layout["scroll"] <= layout["window"] <= WIDTH and pixels.shape[1] <= WIDTH
    assert (pixels < 200).mean() > 0.005  # not blank


@needs_browser
def test_a_search_gallery_wraps_its_hits_within_the_window(tmp_path):
    for r in range(12):
        Image.new("L", (28, 28), 20 * r).save(tmp_path / f"{r}.png")
    hits = [[Hit(r, r, f"{r}.png", "3", 0.3326 + r) for r in range(1, 12)]]
    page = tmp_path / "gallery.html"
    page.write_text(search_page([tmp_path / "0.png"], hits, tmp_path, "distance",
                                query_labels=["3"]))
    layout = {}
    problems, images, pixels = browser_check(page, tmp_path / "profile", layout)
    assert problems == [] and len(images) == 12 and all(i["complete"] for i in images)
    assert layout["scroll"] <= layout["window"] <= WIDTH and pixels.shape[1] <= WIDTH
    # 12 figures of 136 px do not fit in one 1280 px row: the grid wrapped to a second row
    assert pixels.shape[0] > 2 * 128
