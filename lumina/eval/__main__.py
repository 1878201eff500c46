"""python -m lumina.eval shapes|v2a|probe|vae [options]"""

import sys

BENCHES = {"shapes": "lumina.eval.shapes", "v2a": "lumina.eval.v2a", "probe": "lumina.eval.probe",
           "vae": "lumina.eval.vae_ceiling"}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in BENCHES:
        print(f"usage: python -m lumina.eval {{{'|'.join(BENCHES)}}} [options]", file=sys.stderr)
        return 2
    import importlib

    return importlib.import_module(BENCHES[argv[0]]).main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
