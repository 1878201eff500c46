"""Lumina-Video Studio: `python app.py [--model DIR] [--port N] [--host ADDR]`."""

import spaces  # noqa: F401  (ZeroGPU: must be imported before anything initialises CUDA)

import argparse
import os
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=None,
                        help="'tiny' (bundled, the default when present), or a diffusers/release model folder; "
                             "env LUMINA_MODEL")
    parser.add_argument("--extra-model", action="append", default=[], help="another model offered in the dropdown")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    parser.add_argument("--outputs", default=os.environ.get("LUMINA_OUTPUTS", "outputs"),
                        help="folder for generated videos and their JSON sidecars")
    parser.add_argument("--keep", type=int, default=100, help="keep only the newest N videos in --outputs")
    parser.add_argument("--queue-size", type=int, default=16,
                        help="requests that may wait; more get a 'busy' answer at once")
    parser.add_argument("--max-job-seconds", type=float, default=None,
                        help="refuse a job (a video, a comparison, a grid) predicted to take longer (default 900)")
    parser.add_argument("--max-jobs-per-client", type=int, default=None,
                        help="jobs one client (browser session) may have queued or running (default 2)")
    args = parser.parse_args(argv)

    from lumina.app import build_demo, launch_options
    from lumina.errors import LuminaError

    try:
        limits = {k: v for k, v in (("max_job_seconds", args.max_job_seconds),
                                    ("max_jobs_per_client", args.max_jobs_per_client)) if v is not None}
        demo = build_demo(model=args.model, outputs_dir=args.outputs, keep=args.keep, extra_models=args.extra_model,
                          queue_size=args.queue_size, **limits)
    except LuminaError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    demo.launch(server_name=args.host, server_port=args.port, **launch_options(demo))
    return 0


if __name__ == "__main__":
    sys.exit(main())
