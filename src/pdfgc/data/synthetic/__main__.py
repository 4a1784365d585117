"""``python -m pdfgc.data.synthetic ROOT``: generate a synthetic dataset and its contact sheet."""

import argparse
import time
from collections import Counter
from pathlib import Path

from pdfgc.data.synthetic.generate import contact_sheet, generate_dataset
from pdfgc.errors import exit_on_user_error


def main(argv: list[str] | None = None) -> None:
    """Parse the command line, generate (or resume) the dataset, write the contact sheet."""
    parser = argparse.ArgumentParser(prog="python -m pdfgc.data.synthetic",
                                     description=__doc__.split(":")[1].strip())
    parser.add_argument("root", type=Path, help="dataset folder (created; resumed if present)")
    parser.add_argument("--image-size", type=int, default=64, help="frame side in pixels")
    parser.add_argument("--identities", type=int, default=40, help="number of identities")
    parser.add_argument("--clips-per-identity", type=int, default=8)
    parser.add_argument("--test-clips-per-identity", type=int,
                        help="clips of each test speaker (default: --clips-per-identity)")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each clip")
    parser.add_argument("--val-identities", type=int, default=4)
    parser.add_argument("--test-identities", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="rendering processes")
    parser.add_argument("--sheet", type=Path, help="contact sheet PNG (ROOT/contact_sheet.png)")
    parser.add_argument("--rows", type=int, default=4, help="contact sheet rows")
    parser.add_argument("--cols", type=int, default=8, help="contact sheet columns")
    args = parser.parse_args(argv)
    with exit_on_user_error():
        start = time.perf_counter()
        records = generate_dataset(
            args.root, num_identities=args.identities, clips_per_identity=args.clips_per_identity,
            seconds=args.seconds, image_size=args.image_size, val_identities=args.val_identities,
            test_identities=args.test_identities, seed=args.seed, workers=args.workers,
            test_clips_per_identity=args.test_clips_per_identity)
        seconds = time.perf_counter() - start
        sheet = contact_sheet(args.root, args.sheet or args.root / "contact_sheet.png",
                              args.rows, args.cols, records)
        splits = Counter(r.split for r in records)
        print(f"{len(records)} clips ({', '.join(f'{n} {s}' for s, n in sorted(splits.items()))})"
              f" in {args.root} after {seconds:.1f} s; contact sheet {sheet}")


if __name__ == "__main__":
    main()
