"""The UI's workspace: one folder that holds recipes, uploads, audits and runs. Nothing the UI writes lands outside
it, and every path a person types is resolved inside it (or refused in plain words).

<workspace>/
  recipes/    recipes saved from the Train form
  uploads/    files uploaded in the Data tab (size-limited)
  audits/     data audits run from the Data tab
  runs/       run directories (the default output_dir)
  .tunelab-ui/  the UI's own state: launched `tunelab serve` processes
"""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from tunelab.errors import TunelabError

MAX_UPLOAD_BYTES = 200 * 1024 * 1024
SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def size_text(size: int) -> str:
    """1.5 MB, 980 KB, 12 bytes (binary units, as --max-upload-mb counts them)."""
    for unit, scale in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if size >= scale:
            return f"{size / scale:.3g} {unit}"
    return f"{size} bytes"


class UIError(TunelabError):
    """A problem to show in the page, in plain words."""


@dataclass(frozen=True)
class Workspace:
    root: Path
    max_upload_bytes: int = MAX_UPLOAD_BYTES

    @classmethod
    def open(cls, root: str | Path, max_upload_bytes: int = MAX_UPLOAD_BYTES) -> Workspace:
        path = Path(root).expanduser().resolve()
        if path.exists() and not path.is_dir():
            raise UIError(f"{path} is a file; the workspace must be a folder")
        path.mkdir(parents=True, exist_ok=True)
        for part in ("recipes", "uploads", "audits", "runs", ".tunelab-ui"):
            (path / part).mkdir(exist_ok=True)
        return cls(path, max_upload_bytes)

    recipes = property(lambda self: self.root / "recipes")
    uploads = property(lambda self: self.root / "uploads")
    audits = property(lambda self: self.root / "audits")
    runs = property(lambda self: self.root / "runs")
    state = property(lambda self: self.root / ".tunelab-ui")

    def resolve(self, text: str | None, what: str = "path", must_exist: bool = True) -> Path:
        """A path typed in a form, relative to the workspace or absolute, that must lie inside the workspace."""
        if text is None or not str(text).strip():
            raise UIError(f"the {what} is empty; type a path inside {self.root}")
        path = Path(str(text).strip()).expanduser()
        path = (path if path.is_absolute() else self.root / path).resolve()
        if not path.is_relative_to(self.root):
            raise UIError(f"the {what} {text!r} is outside the workspace {self.root}; tunelab's UI only reads and "
                          "writes there (copy or upload the file into it)")  # fmt: skip
        if must_exist and not path.exists():
            raise UIError(f"the {what} {text!r} does not exist (looked for {path})")
        return path

    def relative(self, path: Path) -> str:
        """How a path inside the workspace is shown (and typed back)."""
        path = Path(path).resolve()
        return str(path.relative_to(self.root)) if path.is_relative_to(self.root) else str(path)

    def store_upload(self, temporary: str | Path) -> Path:
        """Copy a file the browser uploaded into uploads/, refusing one over the size limit."""
        source = Path(temporary)
        size = source.stat().st_size
        if size > self.max_upload_bytes:
            limit = size_text(self.max_upload_bytes)
            raise UIError(f"{source.name} is {size_text(size)}; uploads are limited to {limit} (put larger files "
                          f"in {self.uploads} yourself)")  # fmt: skip
        name = SAFE_NAME.sub("_", source.name).lstrip(".") or "upload"
        target = self.uploads / name
        if target.exists():
            target = self.uploads / f"{target.stem}-{time.strftime('%Y%m%d-%H%M%S')}{target.suffix}"
        shutil.copyfile(source, target)
        return target

    def run_dirs(self, output_dir: str | Path | None = None) -> list[Path]:
        """Run directories (with a recipe.yaml) in the output folder, newest first."""
        folder = self.resolve(str(output_dir), "output folder", must_exist=False) if output_dir else self.runs
        if not folder.is_dir():
            return []
        found = [p for p in folder.iterdir() if (p / "recipe.yaml").is_file() or (p / "status.json").is_file()]
        return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)
