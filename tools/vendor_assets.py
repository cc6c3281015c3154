"""Copy the web UI's browser libraries from node_modules/ into fleet/web/static/vendor/.

`npm ci` installs exactly what package-lock.json pins; this script takes the prebuilt browser files the UI
loads (no bundler: each library ships a ready build) and the licences that must travel with them. The
vendor folder is git-ignored and included in the Python package data, so a wheel carries the files and a
`pip install` user needs no Node. Run by `make` (the rule keyed on package-lock.json).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODULES = ROOT / "node_modules"
VENDOR = ROOT / "fleet" / "web" / "static" / "vendor"

# package → (files or folders to copy, relative to the package root) ; the destination is vendor/<package>/
FILES: dict[str, tuple[str, ...]] = {
    "leaflet": ("dist/leaflet.js", "dist/leaflet.css", "dist/images", "LICENSE"),
    "supercluster": ("dist/supercluster.min.js", "LICENSE"),
    "uplot": ("dist/uPlot.iife.min.js", "dist/uPlot.min.css", "LICENSE"),
}


def main() -> int:
    if not MODULES.is_dir():
        print("node_modules/ is missing: run `npm ci` first", file=sys.stderr)
        return 1
    if VENDOR.exists():
        shutil.rmtree(VENDOR)
    for package, names in FILES.items():
        target = VENDOR / package
        target.mkdir(parents=True)
        for name in names:
            source = MODULES / package / name
            if source.is_dir():
                shutil.copytree(source, target / source.name)
            elif source.is_file():
                shutil.copy2(source, target / source.name)
            else:
                print(f"{source} is missing (package-lock.json and FILES disagree)", file=sys.stderr)
                return 1
    (VENDOR / ".installed").write_text("copied by tools/vendor_assets.py\n", encoding="utf-8")
    print(f"vendored {', '.join(FILES)} into {VENDOR.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
