"""The container images a real node runs, built on this machine without a Docker engine or a registry.

- root filesystems from Debian packages: `mmdebstrap` reads the machine's own apt sources files
  (by path: no mirror is named here) and the apt files are deleted from the result;
- images built by Debian's `buildah` with `--pull=never`: the project's image from the repository's
  own Dockerfile (only its BASE changed: a Python made from Debian's python3), the dev tools' image
  on top of it (dev/Containerfile: the in-cluster mock upstream), Redis from Debian's redis-server,
  and CoreDNS, Traefik and pause from the binaries `tools/k8s/build.sh --node` built;
- each exported as a docker archive that the node imports with `ctr images import`.

Everything lives in `~/.cache/aikeys/images/` and is rebuilt only when its inputs change (the
package lists, the apt sources, the binaries, or for the project's image the files the
Dockerfile copies; buildah's layer cache keeps the dependency layers while only code changes).
Progress goes to stderr. `python -m aikeys_dev.devstack.images` builds all of them and prints the
archives.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from aikeys_dev.devstack.binaries import REPO_ROOT, cache_dir
from aikeys_dev.devstack.node.addons import COREDNS_IMAGE, TRAEFIK_IMAGE
from aikeys_dev.devstack.node.binaries import NodeBinaries
from aikeys_dev.devstack.node.configs import PAUSE_IMAGE

FORMAT = "2"  # bump to rebuild every image
SUITE = "bookworm"
PYTHON_BASE = "aikeys.local/python:3.11-bookworm"
AIKEYS_IMAGE = "docker.io/library/aikeys:0.1.0"  # the chart's default image (repository aikeys, appVersion)
REDIS_IMAGE = "aikeys.local/redis:7.0-bookworm"
DEV_IMAGE = "aikeys.local/aikeys-dev:0.1.0"  # the project's image plus aikeys_dev (dev/Containerfile)
# what the project's Dockerfile copies into the image (see .dockerignore for what it leaves out)
DOCKERFILE_INPUTS = ("Dockerfile", "pyproject.toml", "README.md", "aikeys", "operator", "gateway")
DEV_DIR = REPO_ROOT / "dev"  # the dev image's build context
DEV_INPUTS = ("Containerfile", "aikeys_dev")
IGNORED_PARTS = {"__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache"}


def images_dir() -> Path:
    return cache_dir() / "images"


def log(message: str) -> None:
    print(f"[aikeys images] {message}", file=sys.stderr, flush=True)


@contextmanager
def _build_lock() -> Iterator[None]:
    """One image build at a time (two test runs, `make cluster` and CI share the cache)."""
    images_dir().mkdir(parents=True, exist_ok=True)
    with (images_dir() / ".build.lock").open("w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log("another image build is running; waiting for it ...")
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _digest(parts: Iterable[bytes]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:16]


def apt_sources() -> list[Path]:
    """The machine's active apt sources files (mmdebstrap reads them by path)."""
    found = [Path("/etc/apt/sources.list")] if Path("/etc/apt/sources.list").is_file() else []
    directory = Path("/etc/apt/sources.list.d")
    if directory.is_dir():
        found += sorted(p for p in directory.iterdir() if p.suffix in (".list", ".sources"))
    return [
        p
        for p in found
        if any(line.strip() and not line.lstrip().startswith("#") for line in p.read_text().splitlines())
    ]


# --- root filesystems ------------------------------------------------------------------------


@dataclass(frozen=True)
class Rootfs:
    name: str
    variant: str  # mmdebstrap variant: essential (with dpkg, a shell, maintainer scripts run) or extract
    packages: tuple[str, ...]

    def key(self) -> str:
        recipe = json.dumps([FORMAT, SUITE, self.variant, self.packages]).encode()
        return _digest([recipe, *(p.read_bytes() for p in apt_sources())])

    def path(self) -> Path:
        return images_dir() / "rootfs" / f"{self.name}-{self.key()}.tar"


# Python 3.11 from Debian with venv (the Dockerfile's RUN steps need a shell, groupadd and useradd)
PYTHON_ROOTFS = Rootfs("python", "essential", ("passwd", "python3", "python3-venv", "ca-certificates"))
# redis-server and redis-cli (the chart's readiness probe) with their libraries, nothing else
REDIS_ROOTFS = Rootfs("redis", "extract", ("redis-server", "redis-tools"))


def build_rootfs(spec: Rootfs) -> Path:
    target = spec.path()
    if target.exists():
        log(f"rootfs {spec.name}: cached ({target.name})")
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    debs = images_dir() / "debs"  # downloaded packages, shared by every rootfs
    debs.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    log(f"rootfs {spec.name}: mmdebstrap --variant={spec.variant} {' '.join(spec.packages)} ...")
    tmp = target.with_suffix(".tmp.tar")
    apt_cache = '"$1"/var/cache/apt/archives'
    hook = "extract" if spec.variant == "extract" else "customize"
    subprocess.run(
        [
            "mmdebstrap",
            "--quiet",
            f"--variant={spec.variant}",
            f"--include={','.join(spec.packages)}",
            "--skip=output/dev",
            "--aptopt=Acquire::Languages none",
            "--dpkgopt=path-exclude=/usr/share/doc/*",
            "--dpkgopt=path-exclude=/usr/share/man/*",
            "--dpkgopt=path-exclude=/usr/share/locale/*",
            "--skip=download/empty",
            "--skip=essential/unlink",
            f"--setup-hook=mkdir -p {apt_cache} && cp -a {debs}/. {apt_cache}",
            # keep the downloads for the next rootfs; then no apt sources, lists or caches, and none of
            # this machine's resolv.conf or host name in the image (extract runs no customize hooks)
            f"--{hook}-hook=cp -a {apt_cache}/*.deb {debs}/ 2>/dev/null || true",
            f'--{hook}-hook=cd "$1" && rm -rf etc/apt/sources.list etc/apt/sources.list.d/* '
            "var/lib/apt/lists/* var/cache/apt/archives/*.deb etc/resolv.conf etc/hostname",
            SUITE,
            str(tmp),
            *map(str, apt_sources()),
        ],
        check=True,
        stdout=sys.stderr,
    )
    tmp.rename(target)
    for old in target.parent.glob(f"{spec.name}-*.tar"):
        if old != target:
            old.unlink()
    log(f"rootfs {spec.name}: built in {time.monotonic() - started:.0f}s ({target.stat().st_size >> 20} MiB)")
    return target


# --- buildah ---------------------------------------------------------------------------------


def buildah(*args: str, quiet: bool = False, check: bool = True) -> subprocess.CompletedProcess[str]:
    storage = images_dir() / "buildah"
    argv = [
        "buildah",
        "--root",
        str(storage / "root"),
        "--runroot",
        str(storage / "run"),
        "--storage-driver",
        "overlay",
        *args,
    ]
    stderr = subprocess.DEVNULL if not check else None
    return subprocess.run(
        argv, check=check, text=True, stdout=subprocess.PIPE if quiet else sys.stderr, stderr=stderr
    )


def bud(tag: str, context: Path, containerfile: Path, build_args: dict[str, str] | None = None) -> None:
    """`buildah bud` that never pulls: every FROM is scratch or an image built here."""
    args = [f"--build-arg={k}={v}" for k, v in (build_args or {}).items()]
    buildah(
        "bud",
        "--pull=never",
        "--layers",
        "--isolation=chroot",
        # RUN steps that download Python packages (only the project's dependency layer) use the
        # machine's network and CA bundle, like pip on the host
        "--network=host",
        "--volume=/etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro",
        f"--file={containerfile}",
        f"--tag={tag}",
        *args,
        str(context),
    )


def export(tag: str, archive: Path) -> Path:
    """Write `tag` as a docker archive (what `ctr images import` reads, names included)."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    tmp = archive.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    buildah("push", "--quiet", tag, f"docker-archive:{tmp}:{tag}")
    tmp.rename(archive)
    return archive


def _archive(name: str, key: str) -> Path:
    return images_dir() / "archives" / f"{name}-{key}.tar"


def _prune(name: str, keep: Path) -> None:
    for old in keep.parent.glob(f"{name}-*.tar"):
        if old != keep:
            old.unlink()


def _from_scratch(tag: str, name: str, files: dict[str, Path], containerfile: str, key: str) -> Path:
    """A small image FROM scratch: `files` (name in the context → source) and a Containerfile."""
    archive = _archive(name, key)
    if archive.exists():
        log(f"image {tag}: cached")
        return archive
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"aikeys-{name}-") as tmp:
        context = Path(tmp)
        for dest, source in files.items():
            try:
                (context / dest).hardlink_to(source)
            except OSError:
                shutil.copy2(source, context / dest)
        (context / "Containerfile").write_text(containerfile)
        log(f"image {tag}: buildah bud ...")
        bud(tag, context, context / "Containerfile")
    export(tag, archive)
    _prune(name, archive)
    log(f"image {tag}: built in {time.monotonic() - started:.0f}s ({archive.stat().st_size >> 20} MiB)")
    return archive


def _binary_image(tag: str, name: str, binary: Path) -> Path:
    containerfile = f'FROM scratch\nCOPY {name} /{name}\nENTRYPOINT ["/{name}"]\n'
    return _from_scratch(
        tag, name, {name: binary}, containerfile, _digest([binary.read_bytes(), FORMAT.encode()])
    )


def _tree_digest(root: Path, names: Iterable[str]) -> str:
    parts: list[bytes] = []
    for name in names:
        path = root / name
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for f in files:
            rel = f.relative_to(root)
            if IGNORED_PARTS & set(rel.parts) or f.suffix == ".pyc" or ".egg-info" in str(rel):
                continue
            parts += [str(rel).encode(), f.read_bytes()]
    return _digest(parts)


def python_base() -> str:
    """The Debian python3 base image in buildah's storage; returns its tag."""
    rootfs = build_rootfs(PYTHON_ROOTFS)
    stamp = images_dir() / "buildah" / "python-base.key"
    if stamp.exists() and stamp.read_text() == rootfs.name:
        return PYTHON_BASE
    containerfile = 'FROM scratch\nADD rootfs.tar /\nCMD ["python3"]\n'
    with tempfile.TemporaryDirectory(prefix="aikeys-python-") as tmp:
        (Path(tmp) / "rootfs.tar").hardlink_to(rootfs)
        (Path(tmp) / "Containerfile").write_text(containerfile)
        log(f"image {PYTHON_BASE}: buildah bud from {rootfs.name} ...")
        bud(PYTHON_BASE, Path(tmp), Path(tmp) / "Containerfile")
    stamp.write_text(rootfs.name)
    return PYTHON_BASE


def aikeys_image() -> Path:
    """The project's image, built from the repository's Dockerfile on the Debian python base."""
    base = python_base()
    key = _digest(
        [
            _tree_digest(REPO_ROOT, DOCKERFILE_INPUTS).encode(),
            (images_dir() / "buildah" / "python-base.key").read_bytes(),
        ]
    )
    archive = _archive("aikeys", key)
    if archive.exists():
        log(f"image {AIKEYS_IMAGE}: cached")
        return archive
    started = time.monotonic()
    log(f"image {AIKEYS_IMAGE}: buildah bud -f Dockerfile --build-arg BASE={base} ...")
    bud(AIKEYS_IMAGE, REPO_ROOT, REPO_ROOT / "Dockerfile", {"BASE": base})
    export(AIKEYS_IMAGE, archive)
    _prune("aikeys", archive)
    size = archive.stat().st_size >> 20
    log(f"image {AIKEYS_IMAGE}: built in {time.monotonic() - started:.0f}s ({size} MiB)")
    return archive


def dev_image(aikeys: Path) -> Path:
    """The dev tools' image: dev/Containerfile on the project's image (`aikeys`, its archive)."""
    key = _digest([aikeys.name.encode(), _tree_digest(DEV_DIR, DEV_INPUTS).encode()])
    archive = _archive("aikeys-dev", key)
    if archive.exists():
        log(f"image {DEV_IMAGE}: cached")
        return archive
    started = time.monotonic()
    if buildah("inspect", "--type", "image", AIKEYS_IMAGE, quiet=True, check=False).returncode != 0:
        buildah("pull", "--quiet", f"docker-archive:{aikeys}", quiet=True)  # the archive outlived the storage
    log(f"image {DEV_IMAGE}: buildah bud -f dev/Containerfile --build-arg BASE={AIKEYS_IMAGE} ...")
    bud(DEV_IMAGE, DEV_DIR, DEV_DIR / "Containerfile", {"BASE": AIKEYS_IMAGE})
    export(DEV_IMAGE, archive)
    _prune("aikeys-dev", archive)
    log(f"image {DEV_IMAGE}: built in {time.monotonic() - started:.0f}s ({archive.stat().st_size >> 20} MiB)")
    return archive


def redis_image() -> Path:
    rootfs = build_rootfs(REDIS_ROOTFS)
    # the chart runs it as 999:999 with --dir /data; Debian's server, nothing else
    containerfile = 'FROM scratch\nADD rootfs.tar /\nUSER 999:999\nENTRYPOINT ["redis-server"]\n'
    return _from_scratch(
        REDIS_IMAGE, "redis", {"rootfs.tar": rootfs}, containerfile, rootfs.stem.split("-")[-1]
    )


@dataclass(frozen=True)
class Images:
    """Docker archives to import, and the references the manifests and the chart use."""

    node: list[Path]  # pause, CoreDNS, Traefik: what the node itself needs
    aikeys: Path
    dev: Path  # the dev tools (the in-cluster mock upstream)
    redis: Path
    aikeys_ref: str = AIKEYS_IMAGE
    dev_ref: str = DEV_IMAGE
    redis_ref: str = REDIS_IMAGE

    @property
    def all(self) -> list[Path]:
        return [*self.node, self.aikeys, self.dev, self.redis]


def build_all(binaries: NodeBinaries) -> Images:
    """Build what is missing (progress on stderr) and return every archive."""
    missing = [c for c in ("mmdebstrap", "buildah") if shutil.which(c) is None]
    if missing:
        raise RuntimeError(f"missing {', '.join(missing)}: run `make setup` (tools/setup-system.sh)")
    started = time.monotonic()
    with _build_lock():
        v = binaries.versions
        node = [
            _binary_image(PAUSE_IMAGE.format(version=v["PAUSE_VERSION"]), "pause", binaries.pause),
            _binary_image(COREDNS_IMAGE.format(version=v["COREDNS_VERSION"]), "coredns", binaries.coredns),
            _binary_image(TRAEFIK_IMAGE.format(version=v["TRAEFIK_VERSION"]), "traefik", binaries.traefik),
        ]
        aikeys = aikeys_image()
        images = Images(node=node, aikeys=aikeys, dev=dev_image(aikeys), redis=redis_image())
    log(f"images ready in {time.monotonic() - started:.0f}s")
    return images


if __name__ == "__main__":
    from aikeys_dev.devstack.node.binaries import ensure_node_built

    built = build_all(ensure_node_built())
    for path in built.all:
        print(path)
