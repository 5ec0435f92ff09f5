"""The weights resolver: a model name or a path becomes a verified local file.

Names (``clip-lit``, ``clip-lit-init``) mean the released CLIP-LIT files, downloaded on first use from the official
repository at a pinned commit, checked against their SHA-256 and cached under ``$CLIPLIT_HOME`` (default
``~/.cache/cliplit``). ``clip-lit-rt``, the real-time student distilled from ``clip-lit`` (``cliplit distill``), is
small enough to ship inside the package (``core/released/``) and resolves offline, also checked against its SHA-256.
Anything else is taken as a path. No torch here: the runtime resolves weights too.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from cliplit.core.atomic import atomic_output
from cliplit.core.errors import CliplitError

OFFICIAL_REPO = "ZhexinLiang/CLIP-LIT"
OFFICIAL_COMMIT = "25ed5be6086cd34d2bc1020c6088ac3f9d3a9522"


@dataclass(frozen=True)
class ReleasedWeights:
    """One released file: where it lives in the official repository and what it must hash to."""

    name: str
    repo_path: str
    sha256: str
    description: str

    @property
    def filename(self) -> str:
        return Path(self.repo_path).name

    @property
    def url(self) -> str:
        return f"https://raw.githubusercontent.com/{OFFICIAL_REPO}/{OFFICIAL_COMMIT}/{self.repo_path}"


RELEASED: dict[str, ReleasedWeights] = {
    "clip-lit": ReleasedWeights(
        "clip-lit",
        "pretrained_models/enhancement_model.pth",
        "67aa1bdbac345842670e494b02953f299e5088bcb3f98a18bd60b06fef48b5c9",
        "the released CLIP-LIT enhancement network (the paper's model)",
    ),
    "clip-lit-init": ReleasedWeights(
        "clip-lit-init",
        "pretrained_models/init_pretrained_models/init_enhancement_model.pth",
        "14c32e3163e7e10734b48b9641ba44222daaf2feb0f3ba76cbb15b4080be25ab",
        "the released identity-like initial network for training",
    ),
}


@dataclass(frozen=True)
class BundledWeights:
    """A file shipped inside the package: its name there and what it must hash to."""

    name: str
    filename: str
    sha256: str
    description: str

    @property
    def path(self) -> Path:
        return BUNDLED_DIR / self.filename


BUNDLED_DIR = Path(__file__).resolve().parent / "released"
BUNDLED: dict[str, BundledWeights] = {
    "clip-lit-rt": BundledWeights(
        "clip-lit-rt",
        "clip-lit-rt.pth",
        "4c498e14d09c98c9b4587dc3675321bc51d53ddab5e6c8f02baa4d6feb49e5d2",
        "the real-time student distilled from clip-lit (S-Lab License 1.0, see core/released/LICENSE-S-Lab.txt)",
    ),
}

DEFAULT_WEIGHTS = "clip-lit"


class WeightsError(CliplitError):
    """Weights could not be found, fetched or verified; the message says what to do."""


def cliplit_home() -> Path:
    """The cache root: ``$CLIPLIT_HOME`` or ``~/.cache/cliplit``."""
    return Path(os.environ.get("CLIPLIT_HOME") or Path.home() / ".cache" / "cliplit")


def weights_dir() -> Path:
    return cliplit_home() / "weights"


def sha256_of(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in chunks so large files cost no memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def is_released_name(name_or_path: str | os.PathLike[str]) -> bool:
    return str(name_or_path) in RELEASED or str(name_or_path) in BUNDLED


def resolve_weights(name_or_path: str | os.PathLike[str], *, download: bool = True) -> Path:
    """Return a local file for a released name or a path, downloading and verifying released files as needed."""
    key = str(name_or_path)
    if key in BUNDLED:
        return _bundled(BUNDLED[key])
    if key not in RELEASED:
        path = Path(key).expanduser()
        if not path.is_file():
            known = ", ".join([*RELEASED, *BUNDLED])
            raise WeightsError(f"weights {key!r} not found: give a path to a .pth file or one of the names {known}")
        return path
    release = RELEASED[key]
    target = weights_dir() / release.filename
    if target.is_file():
        actual = sha256_of(target)
        if actual == release.sha256:
            return target
        raise WeightsError(
            f"cached {target} has SHA-256 {actual}, expected {release.sha256}; delete it to download it again"
        )
    if not download:
        raise WeightsError(_offline_hint(release, target, "downloads are disabled"))
    _download(release, target)
    return target


def _bundled(bundle: BundledWeights) -> Path:
    """The packaged file, verified: a missing or altered file means a broken installation, never silent drift."""
    if not bundle.path.is_file():
        raise WeightsError(f"{bundle.name} should ship inside cliplit at {bundle.path} but is missing; reinstall it")
    actual = sha256_of(bundle.path)
    if actual != bundle.sha256:
        raise WeightsError(f"{bundle.path} has SHA-256 {actual}, expected {bundle.sha256}: reinstall cliplit")
    return bundle.path


def _download(release: ReleasedWeights, target: Path) -> None:
    """Fetch into a temporary file beside the target, verify, then rename: never a partial file under the name."""
    try:
        with atomic_output(target) as tmp:
            with open(tmp, "wb") as out, urllib.request.urlopen(release.url, timeout=60) as response:
                shutil.copyfileobj(response, out)
            actual = sha256_of(tmp)
            if actual != release.sha256:
                raise WeightsError(
                    f"downloaded {release.url} has SHA-256 {actual}, expected {release.sha256}; refusing to use it"
                )
    except (urllib.error.URLError, OSError) as error:
        raise WeightsError(_offline_hint(release, target, f"download failed ({error})")) from error


def _offline_hint(release: ReleasedWeights, target: Path, why: str) -> str:
    return (
        f"cannot get {release.name} ({release.description}): {why}. Download {release.url} "
        f"(SHA-256 {release.sha256}) and save it as {target}, or pass the path to a local copy instead of the name."
    )
