"""Released weights by name (``mdetr://<name>``) against a local HTTP server on 127.0.0.1: download,
cache hit without a request, sha256 mismatch refused, broken downloads resumed or restarted, and the
names through build_official_model and tools/demo.py. Nothing here reaches the internet."""
import hashlib
import http.server
import io
import re
import threading
import urllib.parse
from pathlib import Path

import pytest
import torch
from detectron2.utils.file_io import PathManager

from mdetr_d2.model_zoo import (
    MODEL_ZOO,
    RELEASE_URL,
    ChecksumError,
    DownloadError,
    get_config,
    weights_base_url,
)

README = Path(__file__).resolve().parents[1] / "README.md"


class FileServer:
    """Serves ``files`` over HTTP/1.1 with Range support; can cut a file's first transfer in half
    (the connection drops mid-file) and can ignore Range headers (then a retry starts over)."""

    def __init__(self, files: dict):
        self.files = files
        self.requests: list[tuple[str, str | None]] = []
        self.cut_first_transfer: set[str] = set()
        self.ignore_range = False
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                name = urllib.parse.unquote(self.path.lstrip("/").split("?")[0])
                byte_range = self.headers.get("Range")
                server.requests.append((name, byte_range))
                if name not in server.files:
                    self.send_error(404)
                    return
                data, start = server.files[name], 0
                if byte_range and not server.ignore_range:
                    start = int(re.fullmatch(r"bytes=(\d+)-", byte_range).group(1))
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if name in server.cut_first_transfer:
                    server.cut_first_transfer.discard(name)
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/files"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _tiny_checkpoint() -> bytes:
    buffer = io.BytesIO()
    torch.save({"model": {"w": torch.arange(50000, dtype=torch.float32)}}, buffer)
    return buffer.getvalue()


@pytest.fixture
def server(monkeypatch, tmp_path):
    files = {"refcoco+_resnet101_checkpoint.pth": _tiny_checkpoint()}
    s = FileServer({f"files/{k}": v for k, v in files.items()})
    monkeypatch.setenv("MDETR_WEIGHTS_URL", s.url)
    monkeypatch.setenv("MDETR_WEIGHTS_CACHE", str(tmp_path / "cache"))
    s.payload = files["refcoco+_resnet101_checkpoint.pth"]
    yield s
    s.close()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_download_once_then_cache_hit_without_request(server, tmp_path):
    path = PathManager.get_local_path("mdetr://refcoco+_resnet101")
    assert Path(path) == tmp_path / "cache" / "refcoco+_resnet101_checkpoint.pth"
    assert Path(path).read_bytes() == server.payload
    # "+" is URL-encoded as on the release's links.
    assert server.requests == [("files/refcoco+_resnet101_checkpoint.pth", None)]
    record = Path(path + ".sha256").read_text()
    assert _sha(server.payload) in record and server.url in record
    assert PathManager.get_local_path("mdetr://refcoco+_resnet101") == path
    assert PathManager.get_local_path("mdetr://RefCOCO+_ResNet101") == path
    assert len(server.requests) == 1
    assert torch.load(path, weights_only=True)["model"]["w"].shape == (50000,)


def test_changed_file_is_refused_with_a_clear_message(server):
    path = Path(PathManager.get_local_path("mdetr://refcoco+_resnet101"))
    path.write_bytes(server.payload[:-10] + b"0123456789")  # same size, other bytes
    with pytest.raises(ChecksumError) as error:
        PathManager.get_local_path("mdetr://refcoco+_resnet101")
    message = str(error.value)
    assert str(path) in message and _sha(server.payload) in message and "Delete it" in message
    assert len(server.requests) == 1  # refused, not silently downloaded again


def test_broken_download_is_resumed(server):
    server.cut_first_transfer.add("files/refcoco+_resnet101_checkpoint.pth")
    path = PathManager.get_local_path("mdetr://refcoco+_resnet101")
    assert Path(path).read_bytes() == server.payload
    half = len(server.payload) // 2
    assert [r for _, r in server.requests] == [None, f"bytes={half}-"]
    assert _sha(server.payload) in Path(path + ".sha256").read_text()


def test_broken_download_restarts_when_the_server_cannot_resume(server):
    server.cut_first_transfer.add("files/refcoco+_resnet101_checkpoint.pth")
    server.ignore_range = True
    path = PathManager.get_local_path("mdetr://refcoco+_resnet101")
    assert Path(path).read_bytes() == server.payload
    assert len(server.requests) == 2 and server.requests[1][1] is not None


def test_partial_file_of_an_earlier_run_is_resumed(server, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "refcoco+_resnet101_checkpoint.pth.part").write_bytes(server.payload[:1000])
    path = PathManager.get_local_path("mdetr://refcoco+_resnet101")
    assert Path(path).read_bytes() == server.payload
    assert server.requests == [("files/refcoco+_resnet101_checkpoint.pth", "bytes=1000-")]


def test_unknown_name_and_missing_file(server):
    with pytest.raises(KeyError, match="known names: pretrained_resnet101"):
        PathManager.get_local_path("mdetr://refcoco_resnet50")
    with pytest.raises(DownloadError, match="HTTP 404"):
        PathManager.get_local_path("mdetr://gqa_EB5")


def test_default_source_is_the_official_release(monkeypatch):
    monkeypatch.delenv("MDETR_WEIGHTS_URL")
    assert weights_base_url() == RELEASE_URL == "https://zenodo.org/record/4721981/files"


def test_demo_and_build_official_model_take_a_name(official_fixtures, monkeypatch, tmp_path):
    """The det_r18 fixture served as refcoco_resnet101: the name works where a path does."""
    from mdetr_d2.checkpoint import build_official_model

    checkpoint = official_fixtures / "det_r18" / "checkpoint.pth"
    s = FileServer({"files/refcoco_resnet101_checkpoint.pth": checkpoint.read_bytes()})
    monkeypatch.setenv("MDETR_WEIGHTS_URL", s.url)
    monkeypatch.setenv("MDETR_WEIGHTS_CACHE", str(tmp_path / "cache"))
    try:
        text_encoder = str(official_fixtures / "tiny_roberta")
        by_name = build_official_model("mdetr://refcoco_resnet101", text_encoder=text_encoder,
                                       device="cpu")
        by_path = build_official_model(str(checkpoint), text_encoder=text_encoder, device="cpu")
        for (k, a), (_, b) in zip(by_name.state_dict().items(), by_path.state_dict().items()):
            assert torch.equal(a, b), k
        demo = __import__("tools.demo", fromlist=["main"]).main
        assert demo(["--official", "mdetr://refcoco_resnet101", "--text-encoder", text_encoder,
                     "--input", str(official_fixtures / "images" / "img0.png"),
                     "--caption", "a red square", "--output", str(tmp_path / "demo")]) == 0
        assert (tmp_path / "demo" / "img0_mdetr.png").is_file()
        assert len(s.requests) == 1  # downloaded once, then cache hits
    finally:
        s.close()


@pytest.mark.parametrize("name", sorted(MODEL_ZOO))
def test_every_released_name_has_a_config_and_a_readme_row(name):
    cfg = get_config(name)
    entry = MODEL_ZOO[name]
    assert cfg.MODEL.WEIGHTS == f"mdetr://{name}"
    if "EB" in name:
        assert cfg.MODEL.BACKBONE.NAME == "build_mdetr_efficientnet_backbone"
        assert cfg.MODEL.MDETR.EFFICIENTNET_VARIANT == name[-2:].lower()
    else:
        assert cfg.MODEL.BACKBONE.NAME == "build_mdetr_resnet_backbone"
    row = next((line for line in README.read_text().splitlines()
                if line.startswith(f"| `mdetr://{name}` |")), None)
    assert row is not None, f"README model-zoo table has no row for {name}"
    assert f"`configs/{entry.config}`" in row and entry.results in row
