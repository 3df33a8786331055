"""Run a check in two environments: the pack's side here, then the original code's side in the reference's
environment (scripts/reference_env.sh: .reference/site first on the path), over one shared folder."""

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

REFERENCE_SITE = Path(__file__).resolve().parents[2] / ".reference" / "site"


def run_check(script: str, description: str, pack_side: Callable[[Path], None],
              reference_side: Callable[[Path], dict], reference_paths: list[str]) -> dict | None:
    """`script` run as a command: both sides, returning the reference side's result; run with --side: that side
    alone (None returned). reference_paths: the original code's source folders, after REFERENCE_SITE."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", choices=["pack", "reference"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side == "pack":
        pack_side(Path(args.folder))
        return None
    if args.side == "reference":
        print(json.dumps(reference_side(Path(args.folder))))
        return None
    if not (REFERENCE_SITE / ".done").exists():
        sys.exit("run scripts/reference_env.sh first (the reference's environment in .reference/)")
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run([sys.executable, script, "--side", "pack", "--folder", folder], check=True)
        finished = subprocess.run(
            [sys.executable, script, "--side", "reference", "--folder", folder], check=True, capture_output=True,
            text=True, env={"PYTHONPATH": ":".join([str(REFERENCE_SITE), *reference_paths]), "PATH": "/usr/bin:/bin"},
        )
    return json.loads(finished.stdout.strip().splitlines()[-1])
