"""A picture of a run's report for the documentation: headless Chromium opens RUN_DIR/report.html and saves the top of
the page (the findings, the held-out numbers and the first charts) as a PNG.

    python bench/report_picture.py runs/quickstart docs/img/report.png      # after python bench/quickstart.py --keep runs/quickstart
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir")
    ap.add_argument("out")
    ap.add_argument("--height", type=int, default=1400, help="pixels of the page kept, from the top")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    chromium = next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None)
    if chromium is None:
        raise SystemExit("needs Chromium (apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1280, "height": args.height})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto((Path(args.run_dir) / "report.html").resolve().as_uri())
        page.wait_for_selector("body[data-ready=true]", timeout=15000)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=args.out, clip={"x": 0, "y": 0, "width": 1280, "height": args.height})
        browser.close()
    if errors:
        raise SystemExit(f"the report raised errors: {errors}")
    print(args.out)


if __name__ == "__main__":
    main()
