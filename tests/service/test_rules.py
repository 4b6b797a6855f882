"""The service's rules without a server: request paths and URLs, hashed tokens, options."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from geoseg.errors import InputError
from geoseg.service.access import AccessError, check_url, resolve_path, root_names
from geoseg.service.jobs import JobRequest, parse_job_request, validate_options
from geoseg.service.store import Store


@pytest.fixture
def roots(tmp_path: Path) -> list[Path]:
    a, b = tmp_path / "a", tmp_path / "b"
    (a / "sub").mkdir(parents=True)
    b.mkdir()
    (a / "sub" / "x.tif").write_bytes(b"x")
    (tmp_path / "secret.tif").write_bytes(b"s")
    (b / "out.tif").symlink_to(tmp_path / "secret.tif")  # leads out of root b
    (b / "in.tif").symlink_to(a / "sub" / "x.tif")  # leads into root a: still out of b
    (a / "link").symlink_to(a / "sub")  # inside its root: fine
    return [a, b]


def test_paths_under_roots(roots: list[Path]) -> None:
    a, _ = roots
    assert resolve_path("sub/x.tif", roots) == a / "sub" / "x.tif"
    assert resolve_path("./sub//x.tif", roots, "a") == a / "sub" / "x.tif"
    assert resolve_path("link/x.tif", roots) == a / "sub" / "x.tif"
    assert list(root_names(roots)) == ["a", "b"]


@pytest.mark.parametrize("path", [
    "../secret.tif", "sub/../../secret.tif", "/etc/passwd", "~/x.tif", "C:/x.tif", "\\\\host\\x",
    "file:///etc/passwd", "/vsicurl/https://x/y.tif", "vsizip/x.zip", "https://x/y.tif",
    "sub\\..\\..\\secret.tif", "x\x00.tif", "",
])  # fmt: skip
def test_paths_refused(roots: list[Path], path: str) -> None:
    with pytest.raises(AccessError):
        resolve_path(path, roots)


def test_symlinks_out_of_their_root_refused(roots: list[Path]) -> None:
    for name in ("out.tif", "in.tif"):
        with pytest.raises(AccessError, match="outside the allowed root"):
            resolve_path(name, roots, "b")
    with pytest.raises(AccessError, match="no such allowed root"):
        resolve_path("sub/x.tif", roots, "c")
    with pytest.raises(AccessError, match="allows no folder"):
        resolve_path("sub/x.tif", [])


@pytest.mark.parametrize("url", [
    "http://example.com/a.tif", "file:///etc/passwd", "ftp://x/a.tif", "https://localhost/a.tif",
    "https://127.0.0.1/a.tif", "https://10.0.0.1/a.tif", "https://[::1]/a.tif",
    "https://169.254.169.254/latest", "https://user:pw@example.com/a.tif", "https:///a.tif",
    "/vsicurl/https://example.com/a.tif", "https://example.com/vsicurl/x", "https://a b/c",
])  # fmt: skip
def test_urls_refused(url: str) -> None:
    with pytest.raises(AccessError):
        check_url(url)


def test_urls_accepted() -> None:
    assert check_url("https://example.com/a.tif?x=1") == "https://example.com/a.tif?x=1"
    assert check_url("s3://bucket/key.tif") == "s3://bucket/key.tif"


def test_tokens_are_stored_hashed(tmp_path: Path) -> None:
    store = Store(tmp_path / "geoseg.db")
    token = store.create_token("alice")
    assert token.startswith("gst_") and len(token) > 40
    assert store.user_for_token(token)["name"] == "alice"
    assert store.user_for_token(token + "x") is None and store.user_for_token("") is None
    store.close()
    dump = "\n".join(sqlite3.connect(tmp_path / "geoseg.db").iterdump())
    assert token not in dump and token[4:] not in dump
    assert sqlite3.connect(tmp_path / "geoseg.db").execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store = Store(tmp_path / "geoseg.db")
    assert store.revoke_tokens("alice") == 1 and store.user_for_token(token) is None


def test_job_requests_and_options() -> None:
    assert isinstance(parse_job_request({"model": "m", "scene": "s"}), JobRequest)
    for bad, msg in (({"model": "m"}, "exactly one of"), ({"model": "m", "scene": "s", "x": 1},
                     "unknown key 'x'")):  # fmt: skip
        with pytest.raises(InputError, match=msg):
            parse_job_request(bad)
    assert validate_options({"tile": 128, "vector": "none"}) == {"tile": 128, "vector": "none"}
    with pytest.raises(InputError, match="did you mean 'overlap'"):
        validate_options({"overlpa": 3})
    with pytest.raises(InputError, match=r"options\.tiles_dir: set by the server"):
        validate_options({"tiles_dir": "/"})


def test_scene_requests(roots: list[Path]) -> None:
    from geoseg.service.scenes import parse_scene_request, scene_from_request

    req = parse_scene_request({"path": "sub/x.tif", "modalities": {"dsm": "link/x.tif"}})
    name, kind, mods = scene_from_request(req, roots)
    assert (name, kind, list(mods)) == ("x", "path", ["image", "dsm"])
    item = {"type": "Feature", "stac_version": "1.0.0", "id": "tile-7", "geometry": None,
            "properties": {"datetime": "2020-01-01T00:00:00Z"},
            "links": [{"rel": "self", "href": "file:///etc/item.json"}],
            "assets": {"image": {"href": "sub/x.tif", "roles": ["data"]},
                       "dem": {"href": "https://example.com/dem.tif", "roles": ["data"]},
                       "thumb": {"href": "/etc/passwd", "roles": ["thumbnail"]}}}  # fmt: skip
    with pytest.raises(AccessError):  # every asset href is checked, data or not
        scene_from_request(parse_scene_request({"stac_item": item}), roots)
    del item["assets"]["thumb"]
    name, kind, mods = scene_from_request(parse_scene_request({"stac_item": item}), roots)
    assert (name, kind) == ("tile-7", "stac")
    assert mods["image"]["path"] == str(roots[0] / "sub" / "x.tif")
    assert mods["dem"]["path"].endswith("https://example.com/dem.tif")  # GDAL's /vsicurl/ form
    with pytest.raises(InputError, match="exactly one of"):
        parse_scene_request({"path": "a.tif", "url": "https://example.com/a.tif"})


def test_cli_tokens_and_operator_scenes(tmp_path: Path) -> None:
    from tests.support import DATA, invoke

    data = tmp_path / "data"
    code, out, _ = invoke("serve", "token", "create", "alice", "--data", data)
    assert code == 0 and out.strip().startswith("gst_")
    sample = DATA / "alexandria"
    code, out, _ = invoke("serve", "scene", "add", sample / "hag.tif", "--modality",
                          f"dsm={sample / 'dsm.tif'}", "--user", "alice", "--data", data)
    assert code == 0, out
    store = Store(data / "geoseg.db")
    (scene,) = store.scenes(store.user("alice")["id"])
    assert scene["id"] == out.strip() and list(scene["modalities"]) == ["image", "dsm"]
    code, _, err = invoke("serve", "scene", "add", DATA / "README.md", "--user", "alice", "--data", data)
    assert code == 2 and "not a raster" in err
    code, out, _ = invoke("serve", "token", "list", "--data", data)
    assert "alice\t1 token(s)" in out
    assert invoke("serve", "token", "revoke", "alice", "--data", data)[1].startswith("revoked 1")
