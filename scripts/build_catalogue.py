"""Build moodbot's music catalogue from the Spotify Tracks Dataset CSV.

    uv run python scripts/build_catalogue.py ../shared/datasets/spotify-tracks-114k.csv.gz

writes bot/catalogue.npz (or the path given with --out) and prints what it kept.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.catalogue import DEFAULT_PATH, Catalogue, build_from_csv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="the dataset CSV (.csv or .csv.gz)")
    parser.add_argument("--out", type=Path, default=DEFAULT_PATH, help="the catalogue to write")
    args = parser.parse_args()
    catalogue = build_from_csv(args.source)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    catalogue.save(args.out)
    check = Catalogue.load(args.out)
    size_mb = args.out.stat().st_size / 1e6
    print(
        f"{args.out}: {len(check)} tracks, {len(check.genre_names)} genres, "
        f"{int(check.explicit.sum())} explicit, {size_mb:.1f} MB"
    )


if __name__ == "__main__":
    main()
