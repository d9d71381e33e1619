"""`labtui data`: the summary it prints, and one clear line with exit code 2 for bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from data import cache_root
from labtui.cli import app

ROOT = Path(__file__).resolve().parents[1]


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def test_data_prints_source_checksum_vocabulary_and_counts(corpus_path):
    result = CliRunner().invoke(app, ["data", "--data", str(corpus_path)])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert str(corpus_path) in out
    assert "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed" in out
    assert "65 characters" in out
    assert "1,003,854 tokens" in out and "111,540 tokens" in out
    assert str(cache_root() / "prepared" / "86c4e6aa9db7c042") in out


def _too_many_characters(path: Path) -> None:
    chars = [chr(c) for c in range(0x20, 0x11000) if not 0xD800 <= c <= 0xDFFF][:65_536]
    path.write_text("".join(chars), encoding="utf-8")


BAD = {
    "missing": (lambda p: None, "corpus file not found: "),
    "directory": (lambda p: p.mkdir(), "cannot read corpus "),
    "empty": (lambda p: p.write_bytes(b""), "is empty"),
    "not-utf8": (lambda p: p.write_bytes(b"hello \xff\xfe world"), "is not UTF-8 text"),
    "too-short": (lambda p: p.write_text("abc"), "is too short"),
    "too-many-chars": (_too_many_characters, "65,536 distinct characters"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_corpus_is_one_line_exit_2_and_cache_unchanged(case, corpus_path, tmp_path):
    runner = CliRunner()
    assert runner.invoke(app, ["data", "--data", str(corpus_path)]).exit_code == 0
    before = files_under(cache_root())
    make, expected = BAD[case]
    bad = tmp_path / "bad.txt"
    make(bad)
    result = runner.invoke(app, ["data", "--data", str(bad)])
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("labtui: error: "), lines
    assert expected in lines[0]
    assert files_under(cache_root()) == before


def test_unreadable_file(tmp_path):
    bad = tmp_path / "secret.txt"
    bad.write_text("some text that nobody may read\n" * 3)
    bad.chmod(0)
    try:
        with open(bad, "rb"):
            pytest.skip("running as root: a chmod 000 file is still readable")
    except PermissionError:
        pass
    result = CliRunner().invoke(app, ["data", "--data", str(bad)])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"labtui: error: cannot read corpus {bad}: Permission denied"
    assert files_under(cache_root()) == []


def test_labtui_data_environment_variable(corpus_path, tmp_path):
    result = CliRunner().invoke(app, ["data"], env={"LABTUI_DATA": str(tmp_path / "gone.txt")})
    assert result.exit_code == 2
    assert result.stderr.strip().endswith("gone.txt (from LABTUI_DATA)")
    result = CliRunner().invoke(app, ["data"], env={"LABTUI_DATA": str(corpus_path)})
    assert result.exit_code == 0 and "1,003,854 tokens" in result.stdout


def test_real_subprocess_error_is_one_line_without_traceback(tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("café".encode("latin-1") * 10)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "labtui.cli", "data", "--data", str(bad)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr == (
        f"labtui: error: corpus {bad} is not UTF-8 text (invalid byte at offset 3)\n"
    )
    assert files_under(cache_root()) == []


def test_cache_that_cannot_be_written(corpus_path, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    result = CliRunner().invoke(app, ["data", "--data", str(corpus_path)])
    assert result.exit_code == 2
    assert result.stderr.startswith("labtui: error: cannot write the corpus cache in ")
    assert len(result.stderr.splitlines()) == 1
    assert blocker.read_text() == "not a folder"
