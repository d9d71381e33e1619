"""Source resolution and the verified download, against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from data import CANONICAL_SHA256, DataError, cache_root, load_corpus
from data.source import OFFLINE_HINT, cached_input, download, resolve_source, sha256_file
from labtui.cli import app


@pytest.fixture(scope="module")
def server(corpus_path):
    """Serves the canonical text, a corrupted copy, truncated and stalled responses."""
    body = corpus_path.read_bytes()
    corrupt = bytearray(body)
    corrupt[1000] ^= 1

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/missing.txt":
                self.send_error(404)
                return
            payload = bytes(corrupt) if self.path == "/corrupt.txt" else body
            self.send_response(200)
            if self.path != "/no-length.txt":
                self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.path in ("/truncated.txt", "/no-length.txt"):
                self.wfile.write(payload[: len(payload) // 2])
                self.close_connection = True
                return
            if self.path == "/stall.txt":
                self.wfile.write(payload[:100])
                self.wfile.flush()
                time.sleep(1.5)
                return
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def dead_url() -> str:
    """A URL on a port nobody listens on (bound, then closed)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/input.txt"


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def test_download_verifies_caches_and_is_then_used_offline(server, monkeypatch):
    monkeypatch.setenv("LABTUI_DATA_URL", f"{server}/input.txt")
    corpus = load_corpus()
    assert cached_input().is_file()
    assert sha256_file(cached_input()) == CANONICAL_SHA256
    assert corpus.source == str(cached_input())
    assert (corpus.vocab_size, len(corpus.train), len(corpus.val)) == (65, 1_003_854, 111_540)
    assert not [p for p in cached_input().parent.iterdir() if p.name != "input.txt"]

    monkeypatch.setenv("LABTUI_DATA_URL", dead_url())  # the cache step needs no network
    assert resolve_source() == (cached_input(), "cache")
    assert load_corpus().cache_dir == corpus.cache_dir


def test_url_parameter_overrides_environment(server, monkeypatch):
    monkeypatch.setenv("LABTUI_DATA_URL", dead_url())
    corpus = load_corpus(url=f"{server}/input.txt")
    assert corpus.sha256 == CANONICAL_SHA256


def test_damaged_cached_copy_is_downloaded_again(server, monkeypatch):
    monkeypatch.setenv("LABTUI_DATA_URL", f"{server}/input.txt")
    cached_input().parent.mkdir(parents=True)
    cached_input().write_text("not Shakespeare")
    path, origin = resolve_source()
    assert origin.endswith("/input.txt") and origin.startswith("http://")
    assert sha256_file(path) == CANONICAL_SHA256


def test_resolution_order(corpus_path, tmp_path, monkeypatch):
    other = tmp_path / "other.txt"
    other.write_text("hello world, some other text\n" * 10)
    monkeypatch.setenv("LABTUI_DATA_URL", dead_url())
    monkeypatch.setenv("LABTUI_DATA", str(other))
    assert resolve_source(corpus_path) == (corpus_path, "--data")
    assert resolve_source() == (other, "LABTUI_DATA")
    monkeypatch.setenv("LABTUI_DATA", "")
    with pytest.raises(DataError, match="cannot download"):
        resolve_source()


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/corrupt.txt", r"\(sha256 mismatch: got [0-9a-f]{16}\.\.\., expected 86c4e6aa9db7c042"),
        ("/truncated.txt", r"\(interrupted after 557,697 of 1,115,394 bytes\)"),
        ("/no-length.txt", r"\(sha256 mismatch"),
        ("/missing.txt", r"\(HTTP 404 Not Found\)"),
        ("/stall.txt", r"\(TimeoutError: timed out\)"),
    ],
)
def test_bad_download_leaves_nothing_behind(server, path, reason):
    with pytest.raises(DataError, match=reason) as err:
        download(server + path, cached_input(), timeout=0.5)
    message = str(err.value)
    assert message.startswith("cannot download tiny Shakespeare (")
    assert message.endswith(f"): {OFFLINE_HINT}")
    assert "\n" not in message
    assert files_under(cache_root()) == []


def test_offline_message_says_how_to_pass_a_local_copy(monkeypatch):
    monkeypatch.setenv("LABTUI_DATA_URL", dead_url())
    with pytest.raises(DataError) as err:
        load_corpus()
    assert str(err.value).startswith("cannot download tiny Shakespeare (")
    assert str(err.value).endswith("): pass a local copy with --data PATH or set LABTUI_DATA=PATH")


@pytest.mark.parametrize("path", ["/corrupt.txt", "/truncated.txt"])
def test_cli_bad_download_is_one_line_exit_2_and_cache_unchanged(server, corpus_path, path):
    runner = CliRunner()
    ok = runner.invoke(app, ["data", "--data", str(corpus_path)])  # something already cached
    assert ok.exit_code == 0, ok.output
    before = files_under(cache_root())

    result = runner.invoke(app, ["data"], env={"LABTUI_DATA_URL": server + path})
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("labtui: error: cannot download"), lines
    assert files_under(cache_root()) == before


def test_download_reports_its_progress(server, tmp_path, corpus_path):
    """The front end draws the bar; data only reports (received, total) as bytes arrive."""
    seen = []
    download(f"{server}/input.txt", tmp_path / "input.txt", progress=lambda *a: seen.append(a))
    size = corpus_path.stat().st_size
    assert seen and seen[-1] == (size, size)
    received = [r for r, _ in seen]
    assert received == sorted(received) and all(total == size for _, total in seen)
