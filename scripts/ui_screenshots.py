"""Screenshots of the MLflow UI over a finished study, as a new user sees it: a check anyone can repeat.

    python scripts/ui_screenshots.py --results-dir results --study quickstart

starts `crisp ui` on a free loopback port (crisp_pl.ui.serve), opens three views in headless Chromium (Debian's
package: `apt-get install chromium`) and saves them as PNG under RESULTS/screenshots/STUDY/:

- runs.png: the experiment's runs table, where `crisp ui` opens;
- parent.png: the study's parent run (its description, grid, summary metrics, figures);
- compare.png: MLflow's compare view over the study's points.

Chromium's own `--screenshot` renders each page; `--virtual-time-budget` lets the page's requests
finish before the shot, so no browser-driving package is needed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
from pathlib import Path

from crisp_pl.ui import MODEL_TRAINING_VIEW, serve, study_runs

# flags Chromium needs as root on a closed network (it otherwise stalls on Google's hosts)
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--hide-scrollbars",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def screenshot(chromium: str, url: str, path: Path, size: str, wait_ms: int) -> None:
    with tempfile.TemporaryDirectory() as profile:  # a fresh profile: no state from an earlier shot
        subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={size}",
                        f"--virtual-time-budget={wait_ms}", f"--screenshot={path}", url],
                       check=True, capture_output=True, timeout=180)
    print(f"{path}: {url}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results-dir", default="results", type=Path, help="the results folder (default: results)")
    parser.add_argument("--study", help="the study whose runs to show (default: the latest study run)")
    parser.add_argument("--out", type=Path, help="where the PNGs go (default: RESULTS/screenshots/STUDY)")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium", help="the Chromium binary")
    parser.add_argument("--size", default="1920,1080", help="window size in pixels, W,H (default: 1920,1080)")
    parser.add_argument("--wait-ms", type=int, default=20000, help="virtual time for each page to load (default: 20000)")
    args = parser.parse_args(argv)
    if not Path(args.chromium).is_file():
        raise SystemExit(f"{args.chromium}: no Chromium; install Debian's (apt-get install chromium) or pass --chromium")

    with serve(args.results_dir) as base:
        try:
            experiment, parent, children = study_runs(base, args.study)
        except LookupError as error:
            raise SystemExit(str(error)) from None
        study = next(t["value"] for t in parent["data"]["tags"] if t["key"] == "crisp.study")
        out = args.out or args.results_dir / "screenshots" / study
        out.mkdir(parents=True, exist_ok=True)
        ids = [run["info"]["run_id"] for run in children]
        views = {  # each with the model-training switch `crisp ui` prints: MLflow 3 otherwise shows its GenAI pages
            "runs": f"{base}/#/experiments/{experiment}?{MODEL_TRAINING_VIEW}",
            "parent": f"{base}/#/experiments/{experiment}/runs/{parent['info']['run_id']}?{MODEL_TRAINING_VIEW}",
            "compare": f"{base}/#/compare-runs?runs={urllib.parse.quote(json.dumps(ids))}"
                       f"&experiments={urllib.parse.quote(json.dumps([experiment]))}&{MODEL_TRAINING_VIEW}",
        }
        for name, url in views.items():
            screenshot(args.chromium, url, out / f"{name}.png", args.size, args.wait_ms)
    return 0


if __name__ == "__main__":
    sys.exit(main())
