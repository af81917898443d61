"""``python -m thor_core.rl --config FILE [--name value ...]``: one RL run (``accelerate launch`` works too).

``--sandbox-url URL`` (repeatable) adds a sandbox host to ``sandbox_urls``.
"""

from __future__ import annotations

import sys

import yaml

from thor_core.rl.config import RLParams, load_params
from thor_core.rl.trainer import train


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    config, overrides = None, {}
    while argv:
        arg = argv.pop(0)
        if arg in ("-h", "--help"):
            print(__doc__)
            for name, f in RLParams.__dataclass_fields__.items():
                print(f"  --{name:24s} {f.metadata.get('help', '')} (default: {f.default!r})")
            return 0
        if not arg.startswith("--") or not argv:
            raise SystemExit(f"expected --name value pairs, got {arg!r}; see --help")
        name, value = arg[2:].replace("-", "_"), yaml.safe_load(argv.pop(0))
        if name == "config":
            config = value
        elif name == "sandbox_url":  # repeatable: one host each
            overrides.setdefault("sandbox_urls", []).append(value)
        else:
            overrides[name] = value
    summary = train(load_params(config, overrides))
    print(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
