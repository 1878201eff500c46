"""python -m lumina_research.eval shapes|v2a|probe|vae [options]"""

import sys

BENCHES = {"shapes": "lumina_research.eval.shapes", "v2a": "lumina_research.eval.v2a",
           "probe": "lumina_research.eval.probe", "vae": "lumina_research.eval.vae_ceiling"}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in BENCHES:
        print(f"usage: python -m lumina_research.eval {{{'|'.join(BENCHES)}}} [options]", file=sys.stderr)
        return 2
    import importlib

    return importlib.import_module(BENCHES[argv[0]]).main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
