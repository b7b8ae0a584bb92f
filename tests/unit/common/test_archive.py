from __future__ import annotations

import io
import stat
import struct
import warnings
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flame_service.archive import inspect_zip, safe_extract
from flame_service.errors import InvalidArgument, TooLarge


def make_zip(
    members: list[tuple[str, bytes]], *, symlink: str | None = None, deflate: bool = True
) -> bytes:
    buf = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in members:
            zf.writestr(name, data)
        if symlink is not None:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    return buf.getvalue()


def test_lists_members_of_a_good_zip_and_extracts_them(tmp_path: Path) -> None:
    data = make_zip([("trainer/main.py", b"print(1)\n"), ("aggregator/main.py", b"x = 2\n")])
    assert inspect_zip(data) == ["trainer/main.py", "aggregator/main.py"]
    names = safe_extract(data, tmp_path / "out")
    assert names == ["trainer/main.py", "aggregator/main.py"]
    assert (tmp_path / "out" / "trainer" / "main.py").read_bytes() == b"print(1)\n"
    assert (tmp_path / "out" / "aggregator" / "main.py").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("../evil.py", "'..'"),
        ("trainer/../../evil.py", "'..'"),
        ("/etc/cron.d/evil", "absolute"),
        ("C:/windows/evil.py", "drive letter"),
        ("trainer\\..\\evil.py", "backslash"),
    ],
)
def test_rejects_path_escapes(name: str, fragment: str, tmp_path: Path) -> None:
    data = make_zip([("trainer/main.py", b"ok"), (name, b"bad")])
    with pytest.raises(InvalidArgument, match=fragment):
        inspect_zip(data)
    with pytest.raises(InvalidArgument):
        safe_extract(data, tmp_path / "out")
    assert not (tmp_path / "evil.py").exists()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*"))


def test_rejects_symlinks(tmp_path: Path) -> None:
    data = make_zip([("trainer/main.py", b"ok")], symlink="trainer/link")
    with pytest.raises(InvalidArgument, match="symbolic link"):
        inspect_zip(data)
    with pytest.raises(InvalidArgument, match="symbolic link"):
        safe_extract(data, tmp_path / "out")


def test_rejects_duplicates_including_case_folded() -> None:
    with pytest.warns(UserWarning):  # zipfile itself warns about the duplicate
        data = make_zip([("trainer/main.py", b"a"), ("trainer/main.py", b"b")])
    with pytest.raises(InvalidArgument, match="more than once"):
        inspect_zip(data)
    data = make_zip([("trainer/main.py", b"a"), ("Trainer/Main.py", b"b")])
    with pytest.raises(InvalidArgument, match="more than once"):
        inspect_zip(data)


def test_rejects_file_shadowing_a_folder() -> None:
    data = make_zip([("trainer", b"a file"), ("trainer/main.py", b"b")])
    with pytest.raises(InvalidArgument, match="below the file"):
        inspect_zip(data)


def test_caps_compressed_size_member_count_and_uncompressed_total() -> None:
    data = make_zip([("a/main.py", b"x" * 1000)], deflate=False)
    with pytest.raises(TooLarge, match="limit is 100 bytes"):
        inspect_zip(data, max_bytes=100)
    many = make_zip([(f"a/{i}.py", b"") for i in range(11)])
    with pytest.raises(TooLarge, match="11 members"):
        inspect_zip(many, max_files=10)
    with pytest.raises(TooLarge, match="uncompressed size cap"):
        inspect_zip(data, max_uncompressed=999)
    assert inspect_zip(data, max_uncompressed=1000) == ["a/main.py"]


def test_rejects_a_compression_bomb(tmp_path: Path) -> None:
    bomb = make_zip([("a/zeros.bin", bytes(20 * 1024 * 1024))])
    assert len(bomb) < 100_000
    with pytest.raises(TooLarge, match="ratio cap"):
        inspect_zip(bomb)
    with pytest.raises(TooLarge):
        safe_extract(bomb, tmp_path / "out")
    assert not (tmp_path / "out" / "a" / "zeros.bin").exists()


def test_rejects_garbage_and_encrypted_members() -> None:
    with pytest.raises(InvalidArgument, match="not a valid zip"):
        inspect_zip(b"this is not a zip")
    data = bytearray(make_zip([("a/main.py", b"x")], deflate=False))
    # Set the "encrypted" flag bit in the central directory entry.
    cd = data.rfind(b"PK\x01\x02")
    flags = struct.unpack_from("<H", data, cd + 8)[0]
    struct.pack_into("<H", data, cd + 8, flags | 0x1)
    with pytest.raises(InvalidArgument, match="encrypted"):
        inspect_zip(bytes(data))


def test_extract_detects_a_member_that_lies_about_its_size(tmp_path: Path) -> None:
    payload = b"y" * 5000
    data = bytearray(make_zip([("a/big.bin", payload)], deflate=False))
    # Shrink the declared uncompressed size in the central directory to 10 bytes.
    cd = data.rfind(b"PK\x01\x02")
    struct.pack_into("<I", data, cd + 24, 10)
    with pytest.raises(InvalidArgument):
        safe_extract(bytes(data), tmp_path / "out")
    written = tmp_path / "out" / "a" / "big.bin"
    assert not written.exists() or written.stat().st_size <= 10


def test_extract_never_follows_an_existing_symlink(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "trainer").symlink_to(outside, target_is_directory=True)
    data = make_zip([("trainer/main.py", b"print('escaped')")])
    with pytest.raises(InvalidArgument, match="outside"):
        safe_extract(data, dest)
    assert not (outside / "main.py").exists()


_segments = st.sampled_from(["a", "b", "..", ".", "", "C:", "x\\y", "main.py", "~", "..."])


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    names=st.lists(
        st.tuples(st.booleans(), st.lists(_segments, min_size=1, max_size=4)),
        min_size=1,
        max_size=5,
    )
)
def test_whatever_the_names_nothing_is_written_outside_dest(
    tmp_path_factory: pytest.TempPathFactory, names: list[tuple[bool, list[str]]]
) -> None:
    root = tmp_path_factory.mktemp("prop")
    dest = root / "dest"
    members = [("/" if absolute else "") + "/".join(parts) for absolute, parts in names]
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about duplicate names
        with zipfile.ZipFile(buf, "w") as zf:
            for name in members:
                if zipfile.ZipInfo(name).filename:  # zipfile itself cannot write an empty name
                    zf.writestr(name, b"x")
    try:
        extracted = safe_extract(buf.getvalue(), dest)
    except InvalidArgument:
        extracted = []
    for path in root.rglob("*"):
        assert path == dest or dest in path.parents, f"{path} escaped {dest}"
    for name in extracted:
        assert ".." not in name.split("/") and not name.startswith("/")
