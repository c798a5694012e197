import hashlib
import io
import tarfile
import zipfile

import pytest

from dmlkit.data.download import fetch, file_digest, safe_extract
from dmlkit.errors import DataError


def test_fetch_file_url_with_checksums(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"payload" * 1000)
    md5 = hashlib.md5(src.read_bytes()).hexdigest()
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    assert file_digest(src) == md5 and file_digest(src, "sha256") == sha
    dest = fetch(src.as_uri(), tmp_path / "out/dest.bin", md5=md5, sha256=sha)
    assert dest.read_bytes() == src.read_bytes()
    src.unlink()  # a file with the right checksum is not fetched again
    assert fetch(src.as_uri(), dest, md5=md5) == dest


def test_fetch_refuses_wrong_checksum(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"tampered")
    with pytest.raises(DataError, match=r"checksum mismatch"):
        fetch(src.as_uri(), tmp_path / "out/dest.bin", md5="0" * 32)
    assert list((tmp_path / "out").iterdir()) == []  # no partial or bad file is left


def test_fetch_failure(tmp_path):
    with pytest.raises(DataError, match=r"download of .* failed"):
        fetch((tmp_path / "absent").as_uri(), tmp_path / "dest")


def _tar(path, members):
    """members: (TarInfo, bytes or None)."""
    with tarfile.open(path, "w:gz") as tf:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name, data=b"x"):
    return tarfile.TarInfo(name), data


def _link(name, target, kind=tarfile.SYMTYPE):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def test_safe_extract_good_archives(tmp_path):
    tgz = _tar(tmp_path / "ok.tar.gz", [_file("a/b.txt", b"hello"), _file("c.txt")])
    safe_extract(tgz, tmp_path / "t")
    assert (tmp_path / "t/a/b.txt").read_bytes() == b"hello"
    with zipfile.ZipFile(tmp_path / "ok.zip", "w") as z:
        z.writestr("d/e.txt", "zip")
    safe_extract(tmp_path / "ok.zip", tmp_path / "z")
    assert (tmp_path / "z/d/e.txt").read_text() == "zip"


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([_file("ok.txt"), _file("../evil.txt")], "outside"),
        ([_file("a/../../evil.txt")], "outside"),
        ([_link("inside", "/etc/passwd")], "link"),
        ([_link("inside", "../../evil.txt")], "link"),
        ([_file("f.txt"), _link("hard", "f.txt", tarfile.LNKTYPE)], "link"),
    ],
)
def test_safe_extract_refuses_malicious_tars(tmp_path, members, message):
    tgz = _tar(tmp_path / "bad.tar.gz", members)
    target = tmp_path / "deep/target"
    with pytest.raises(DataError, match=message):
        safe_extract(tgz, target)
    assert not (tmp_path / "deep/evil.txt").exists() and not (tmp_path / "evil.txt").exists()
    assert not list(target.iterdir())  # checked before anything is written


def test_safe_extract_keeps_absolute_tar_names_inside_the_target(tmp_path):
    """tarfile's "data" filter strips the leading slash: the member lands under the target."""
    safe_extract(_tar(tmp_path / "abs.tar.gz", [_file("/tmp/dmlkit-absolute.txt")]), tmp_path / "t")
    assert (tmp_path / "t/tmp/dmlkit-absolute.txt").is_file()


def test_safe_extract_refuses_malicious_zips(tmp_path):
    with zipfile.ZipFile(tmp_path / "bad.zip", "w") as z:
        z.writestr("../evil.txt", "x")
    with pytest.raises(DataError, match=r"outside"):
        safe_extract(tmp_path / "bad.zip", tmp_path / "t")
    info = zipfile.ZipInfo("link")
    info.external_attr = 0o120777 << 16
    with zipfile.ZipFile(tmp_path / "link.zip", "w") as z:
        z.writestr(info, "/etc/passwd")
    with pytest.raises(DataError, match=r"symbolic link"):
        safe_extract(tmp_path / "link.zip", tmp_path / "t2")
    assert not (tmp_path / "evil.txt").exists()


def test_not_an_archive(tmp_path):
    (tmp_path / "x.tgz").write_bytes(b"plain text")
    with pytest.raises(DataError, match=r"not a readable tar or zip"):
        safe_extract(tmp_path / "x.tgz", tmp_path / "t")
