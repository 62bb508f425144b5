from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from omegaconf import DictConfig, OmegaConf

from pipeline.archive import safe_extract
from pipeline.checksums import content_digest, file_sha256
from pipeline.download import download_images
from pipeline.errors import DownloadError
from pipeline.fetch import HTTP_CHUNK, DownloadSettings, fetch_http, kaggle_credentials_present
from tests.http_server import Route
from tests.lfw_fixtures import make_archive, make_lfw_tree

FAST = DownloadSettings(timeout_s=5, retries=2, backoff_s=0.01)


def with_sources(cfg: DictConfig, *sources: str, **download: object) -> DictConfig:
    cfg = OmegaConf.create(OmegaConf.to_container(cfg))
    cfg.download.sources = list(sources)
    for key, value in download.items():
        cfg.download[key] = value
    return cfg


def expected_digest(lfw_source: dict) -> str:
    root = lfw_source["dir"]
    return content_digest(root, [p.relative_to(root).as_posix() for p in root.rglob("*.jpg")])


@pytest.mark.parametrize("form", ["path", "file_url", "folder"])
def test_local_sources_give_verified_images(
    tmp_path: Path, data_cfg: DictConfig, lfw_source: dict, form: str
) -> None:
    source = {
        "path": str(lfw_source["archive"]),
        "file_url": lfw_source["archive"].as_uri(),
        "folder": str(lfw_source["dir"]),
    }[form]
    digest = expected_digest(lfw_source)
    summary = download_images(
        with_sources(data_cfg, source, content_sha256=digest), tmp_path / "raw", tmp_path / "dl"
    )
    assert summary["images"] == len(lfw_source["keys"])
    assert summary["content_sha256"] == digest
    got = {
        p.relative_to(tmp_path / "raw/lfw-deepfunneled")
        for p in (tmp_path / "raw/lfw-deepfunneled").rglob("*.jpg")
    }
    assert got == {p.relative_to(lfw_source["dir"]) for p in lfw_source["dir"].rglob("*.jpg")}


def test_http_download_and_no_second_download(
    tmp_path: Path, data_cfg: DictConfig, lfw_source: dict, http_server
) -> None:
    http_server.routes["/lfw.tgz"] = route = Route(lfw_source["archive"].read_bytes())
    cfg = with_sources(data_cfg, f"{http_server.url}/lfw.tgz")
    summary = download_images(cfg, tmp_path / "raw", tmp_path / "dl")
    assert summary["images"] == len(lfw_source["keys"])
    assert len(route.requests) == 1
    # images present and verified: nothing fetched again
    download_images(cfg, tmp_path / "raw", tmp_path / "dl")
    assert len(route.requests) == 1
    # images gone (DVC deletes outputs before a stage runs) but the archive is kept: re-extract only
    import shutil

    shutil.rmtree(tmp_path / "raw")
    assert download_images(cfg, tmp_path / "raw", tmp_path / "dl")["images"] == len(
        lfw_source["keys"]
    )
    assert len(route.requests) == 1


def test_dropped_connection_resumes_with_range(tmp_path: Path, http_server) -> None:
    body = np.random.default_rng(0).bytes(1_000_000)
    cut = 600_000
    http_server.routes["/a.tgz"] = route = Route(body, drop_after=cut)
    dest = fetch_http(f"{http_server.url}/a.tgz", tmp_path / "a.tgz", FAST)
    assert dest.read_bytes() == body
    assert len(route.requests) == 2
    assert "Range" not in route.requests[0]
    resumed_at = int(route.requests[1]["Range"].removeprefix("bytes=").rstrip("-"))
    # at most one chunk of what arrived is fetched again
    assert cut - HTTP_CHUNK <= resumed_at <= cut
    assert not (tmp_path / "a.tgz.part").exists()


def test_partial_file_from_a_cut_run_is_continued_with_if_range(
    tmp_path: Path, http_server
) -> None:
    body = np.random.default_rng(2).bytes(1_000_000)
    http_server.routes["/a.tgz"] = route = Route(body, drop_after=600_000)
    no_retry = DownloadSettings(timeout_s=5, retries=0, backoff_s=0.01)
    with pytest.raises(DownloadError, match="gave up"):
        fetch_http(f"{http_server.url}/a.tgz", tmp_path / "a.tgz", no_retry)
    have = (tmp_path / "a.tgz.part").stat().st_size
    assert have > 0  # a later process finds the partial file and its record
    fetch_http(f"{http_server.url}/a.tgz", tmp_path / "a.tgz", FAST)
    assert (tmp_path / "a.tgz").read_bytes() == body
    assert route.requests[1]["Range"] == f"bytes={have}-"
    assert route.requests[1]["If-Range"] == '"' + hashlib.md5(body).hexdigest() + '"'  # its ETag
    assert not (tmp_path / "a.tgz.part.json").exists()


def test_remote_file_changed_between_cut_and_resume_starts_over(
    tmp_path: Path, http_server
) -> None:
    """The old bytes and the new file's bytes must never be joined."""
    rng = np.random.default_rng(1)
    old, new = rng.bytes(300_000), rng.bytes(300_000)
    http_server.routes["/a.tgz"] = route = Route(old, drop_after=100_000)
    no_retry = DownloadSettings(timeout_s=5, retries=0, backoff_s=0.01)
    with pytest.raises(DownloadError):
        fetch_http(f"{http_server.url}/a.tgz", tmp_path / "a.tgz", no_retry)
    route.body = new  # the mirror replaced its file while we were away
    fetch_http(f"{http_server.url}/a.tgz", tmp_path / "a.tgz", FAST)
    assert (tmp_path / "a.tgz").read_bytes() == new
    assert "If-Range" in route.requests[1]


def test_partial_file_of_unknown_origin_is_fetched_again(
    tmp_path: Path, lfw_source: dict, http_server
) -> None:
    body = lfw_source["archive"].read_bytes()
    (tmp_path / "a.tgz.part").write_bytes(b"x" * 1000)  # no record of which file it came from
    http_server.routes["/a.tgz"] = route = Route(body)
    fetch_http(f"{http_server.url}/a.tgz", tmp_path / "a.tgz", FAST)
    assert (tmp_path / "a.tgz").read_bytes() == body
    assert "Range" not in route.requests[0]


def test_incomplete_archive_is_not_reused_once_the_mirror_is_fixed(
    tmp_path: Path, data_cfg: DictConfig, lfw_source: dict, http_server
) -> None:
    """A mirror first serves an archive with too few images, then the complete one."""
    short = tmp_path / "short"
    make_lfw_tree(short / "lfw-deepfunneled", {"Person_A": 2})
    http_server.routes["/lfw.tgz"] = route = Route(
        make_archive(short, tmp_path / "short.tgz").read_bytes()
    )
    cfg = with_sources(data_cfg, f"{http_server.url}/lfw.tgz")
    with pytest.raises(DownloadError, match=r"holds 2 images.*deleted, rerun to fetch it again"):
        download_images(cfg, tmp_path / "raw", tmp_path / "dl")
    assert list((tmp_path / "dl").iterdir()) == []
    route.body = lfw_source["archive"].read_bytes()
    summary = download_images(cfg, tmp_path / "raw", tmp_path / "dl")
    assert summary["images"] == len(lfw_source["keys"]) and len(route.requests) == 2


def test_truncated_local_archive_is_left_alone_and_says_so(
    tmp_path: Path, data_cfg: DictConfig, lfw_source: dict
) -> None:
    body = lfw_source["archive"].read_bytes()
    local = tmp_path / "mine.tgz"
    local.write_bytes(body[: len(body) // 2])
    with pytest.raises(DownloadError, match=r"truncated or corrupt.*left as it is") as err:
        download_images(with_sources(data_cfg, str(local)), tmp_path / "raw", tmp_path / "dl")
    assert "deleted" not in str(err.value)
    assert local.read_bytes() == body[: len(body) // 2]


def test_zip_written_by_python_zipfile_is_accepted(
    tmp_path: Path, data_cfg: DictConfig, lfw_source: dict
) -> None:
    archive = tmp_path / "lfw.zip"
    with zipfile.ZipFile(archive, "w") as zf:  # writestr leaves no file-type bits
        for path in sorted(lfw_source["dir"].rglob("*.jpg")):
            zf.writestr(
                f"lfw-deepfunneled/{path.relative_to(lfw_source['dir'])}", path.read_bytes()
            )
    summary = download_images(
        with_sources(data_cfg, str(archive)), tmp_path / "raw", tmp_path / "dl"
    )
    assert summary["images"] == len(lfw_source["keys"])


def test_html_page_instead_of_archive(tmp_path: Path, data_cfg: DictConfig, http_server) -> None:
    http_server.routes["/lfw.tgz"] = Route(
        b"<!DOCTYPE html><html>Sign in</html>", content_type="text/html"
    )
    with pytest.raises(DownloadError, match="HTML page"):
        download_images(
            with_sources(data_cfg, f"{http_server.url}/lfw.tgz"), tmp_path / "raw", tmp_path / "dl"
        )
    assert not (tmp_path / "raw/lfw-deepfunneled").exists()


def test_html_served_as_octet_stream_is_caught_by_sniffing(
    tmp_path: Path, data_cfg: DictConfig, http_server
) -> None:
    http_server.routes["/lfw.tgz"] = Route(b"<!DOCTYPE html><html>virus scan warning</html>")
    with pytest.raises(DownloadError, match="HTML page"):
        download_images(
            with_sources(data_cfg, f"{http_server.url}/lfw.tgz"), tmp_path / "raw", tmp_path / "dl"
        )
    assert list((tmp_path / "dl").iterdir()) == []  # the bad download is not kept for reuse


def test_404_names_the_url_and_leaves_nothing(
    tmp_path: Path, data_cfg: DictConfig, http_server
) -> None:
    url = f"{http_server.url}/missing.tgz"
    with pytest.raises(DownloadError, match=r"missing.tgz answered HTTP 404"):
        download_images(with_sources(data_cfg, url), tmp_path / "raw", tmp_path / "dl")
    assert not (tmp_path / "raw").exists() or not any((tmp_path / "raw").iterdir())


def test_wrong_checksum_is_refused_and_archive_deleted(
    tmp_path: Path, data_cfg: DictConfig, lfw_source: dict, http_server
) -> None:
    http_server.routes["/lfw.tgz"] = Route(lfw_source["archive"].read_bytes())
    cfg = with_sources(data_cfg, f"{http_server.url}/lfw.tgz", archive_sha256={"lfw.tgz": "0" * 64})
    with pytest.raises(DownloadError, match="sha256"):
        download_images(cfg, tmp_path / "raw", tmp_path / "dl")
    assert list((tmp_path / "dl").iterdir()) == []
    assert not (tmp_path / "raw/lfw-deepfunneled").exists()


def test_right_checksum_passes(tmp_path: Path, data_cfg: DictConfig, lfw_source: dict) -> None:
    cfg = with_sources(
        data_cfg,
        str(lfw_source["archive"]),
        archive_sha256={"lfw-deepfunneled.tgz": file_sha256(lfw_source["archive"])},
    )
    assert download_images(cfg, tmp_path / "raw", tmp_path / "dl")["images"] == len(
        lfw_source["keys"]
    )


def test_sources_are_tried_in_order(
    tmp_path: Path, data_cfg: DictConfig, lfw_source: dict, http_server
) -> None:
    cfg = with_sources(
        data_cfg, f"{http_server.url}/gone.tgz", "kaggle://someone/lfw", str(lfw_source["archive"])
    )
    summary = download_images(cfg, tmp_path / "raw", tmp_path / "dl")
    assert summary["source"] == str(lfw_source["archive"])


def test_all_sources_failing_lists_each_reason(
    tmp_path: Path, data_cfg: DictConfig, http_server, monkeypatch
) -> None:
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "nokaggle"))
    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    cfg = with_sources(
        data_cfg, f"{http_server.url}/gone.tgz", "kaggle://someone/lfw", str(tmp_path / "nope.tgz")
    )
    with pytest.raises(DownloadError) as err:
        download_images(cfg, tmp_path / "raw", tmp_path / "dl")
    text = str(err.value)
    assert "HTTP 404" in text and "Kaggle credentials" in text and "does not exist" in text
    assert not kaggle_credentials_present()


def test_truncated_gzip_is_reported_and_not_reused(
    tmp_path: Path, data_cfg: DictConfig, lfw_source: dict, http_server
) -> None:
    body = lfw_source["archive"].read_bytes()
    http_server.routes["/lfw.tgz"] = Route(body[: len(body) // 2])
    with pytest.raises(DownloadError, match="truncated or corrupt"):
        download_images(
            with_sources(data_cfg, f"{http_server.url}/lfw.tgz"), tmp_path / "raw", tmp_path / "dl"
        )
    assert list((tmp_path / "dl").iterdir()) == []
    assert not (tmp_path / "raw/lfw-deepfunneled").exists()


def test_wrong_image_count_is_refused(
    tmp_path: Path, data_cfg: DictConfig, lfw_source: dict
) -> None:
    cfg = with_sources(data_cfg, str(lfw_source["archive"]), expected_images=13233)
    with pytest.raises(DownloadError, match=r"holds \d+ images, expected 13233"):
        download_images(cfg, tmp_path / "raw", tmp_path / "dl")
    assert not (tmp_path / "raw/lfw-deepfunneled").exists()


def _tar_with(tmp_path: Path, member: tarfile.TarInfo, data: bytes = b"") -> Path:
    path = tmp_path / "evil.tgz"
    with tarfile.open(path, "w:gz") as tar:
        ok = tarfile.TarInfo("lfw-deepfunneled/A_B/A_B_0001.jpg")
        ok.size = 3
        tar.addfile(ok, io.BytesIO(b"abc"))
        member.size = len(data) if member.isfile() else 0
        tar.addfile(member, io.BytesIO(data) if data else None)
    return path


@pytest.mark.parametrize(
    ("name", "kind", "message"),
    [
        ("../escaped.txt", tarfile.REGTYPE, "climbs out"),
        ("lfw-deepfunneled/../../escaped.txt", tarfile.REGTYPE, "climbs out"),
        ("/tmp/absolute.txt", tarfile.REGTYPE, "absolute path"),
        ("lfw-deepfunneled/link", tarfile.SYMTYPE, "link"),
        ("lfw-deepfunneled/hard", tarfile.LNKTYPE, "link"),
        ("lfw-deepfunneled/dev", tarfile.CHRTYPE, "device"),
        ("lfw-deepfunneled/fifo", tarfile.FIFOTYPE, "device"),
    ],
)
def test_malicious_members_are_refused(
    tmp_path: Path, name: str, kind: bytes, message: str
) -> None:
    member = tarfile.TarInfo(name)
    member.type = kind
    if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
        member.linkname = "/etc/passwd"
    archive = _tar_with(tmp_path, member, b"pwned" if kind == tarfile.REGTYPE else b"")
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(DownloadError, match=message):
        safe_extract(archive, dest, 10**9)
    assert not (tmp_path / "escaped.txt").exists()
    assert not Path("/tmp/absolute.txt").exists()
    assert not (dest / "lfw-deepfunneled" / "link").exists()


def test_gzip_bomb_stops_at_the_cap(tmp_path: Path) -> None:
    path = tmp_path / "bomb.tgz"
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo("lfw-deepfunneled/A/A_0001.jpg")
        info.size = 5_000_000
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    path.write_bytes(gzip.compress(raw.getvalue()))
    assert path.stat().st_size < 50_000
    (tmp_path / "out").mkdir()
    with pytest.raises(DownloadError, match="gzip bomb"):
        safe_extract(path, tmp_path / "out", max_bytes=1_000_000)


def test_a_rerun_over_verified_images_keeps_naming_their_source(
    tmp_path: Path, data_cfg: DictConfig, lfw_source: dict
) -> None:
    cfg = with_sources(data_cfg, str(lfw_source["archive"]))
    first = download_images(cfg, tmp_path / "raw", tmp_path / "dl")
    assert first["source"] == str(lfw_source["archive"])
    again = download_images(cfg, tmp_path / "raw", tmp_path / "dl")
    assert again["source"].startswith("already present")  # no record: says so
    (tmp_path / "raw/download.json").write_text(json.dumps(first))
    assert download_images(cfg, tmp_path / "raw", tmp_path / "dl")["source"] == first["source"]
