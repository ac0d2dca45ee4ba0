"""`vigil-operator`: reconcile ProbePolicies into the agents' configuration.

vigil-operator render FILE...       the AgentConfig for policy files (offline)
vigil-operator crds [--write DIR]   the CRDs generated from the policy models
vigil-operator run                  the kopf operator (settings: flags, else env)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import signal
import sys
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from vigil import __version__
from vigil.api.config import AgentConfig, ConfigError, load_config

log = logging.getLogger("vigil.operator")
DEFAULT_CRD_DIR = Path("charts/vigil/crds")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vigil-operator",
        description="Reconciles ProbePolicy and ClusterProbePolicy objects into the "
        "agents' AgentConfig.",
    )
    parser.add_argument("--version", action="version", version=f"vigil-operator {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    render = commands.add_parser(
        "render", help="print the AgentConfig YAML for policy files (multi-document YAML)"
    )
    render.add_argument("files", nargs="+", type=Path, metavar="FILE", help="'-' reads stdin")
    render.add_argument(
        "--base", type=Path, help="AgentConfig with the node-level settings (default: defaults)"
    )
    render.add_argument(
        "--namespace",
        default="default",
        help="namespace of ProbePolicies that name none (default: default)",
    )

    crds = commands.add_parser("crds", help="print the CRDs generated from the policy models")
    crds.add_argument(
        "--write",
        nargs="?",
        const=DEFAULT_CRD_DIR,
        type=Path,
        metavar="DIR",
        help=f"write them as files into DIR (default {DEFAULT_CRD_DIR})",
    )
    crds.add_argument(
        "--check",
        nargs="?",
        const=DEFAULT_CRD_DIR,
        type=Path,
        metavar="DIR",
        help="exit 1 if the files in DIR differ from the models",
    )

    run = commands.add_parser("run", help="run the operator (watches policies cluster-wide)")
    run.add_argument("--config-map", help="the agents' ConfigMap (env VIGIL_CONFIGMAP)")
    run.add_argument("--namespace", help="its namespace (env VIGIL_CONFIGMAP_NAMESPACE)")
    run.add_argument("--base", type=Path, help="base AgentConfig file (env VIGIL_BASE_CONFIG)")
    run.add_argument("--kubeconfig", type=Path, help="outside a cluster (env KUBECONFIG)")
    run.add_argument(
        "--liveness",
        metavar="URL",
        help="serve kopf's liveness probe here, e.g. http://0.0.0.0:8080/healthz",
    )
    run.add_argument(
        "--peering",
        help="kopf ClusterKopfPeering name shared by replicas; only the highest priority one "
        "works (env VIGIL_PEERING; unset: standalone)",
    )
    run.add_argument(
        "--priority", type=int, help="peering priority (default: random, so one replica wins)"
    )
    return parser


def _documents(path: Path) -> Iterator[tuple[int, Any]]:
    text = sys.stdin.read() if str(path) == "-" else path.read_text()
    for index, doc in enumerate(yaml.safe_load_all(text)):
        if doc is not None:
            yield index, doc


def _render(args: argparse.Namespace) -> int:
    from vigil.api.policy import PolicyError, parse_policy
    from vigil.operator.reconcile import render, to_yaml

    base = load_config(args.base) if args.base else AgentConfig()
    policies = []
    failed = False
    seen: dict[str, str] = {}
    for path in args.files:
        try:
            documents = list(_documents(path))
        except OSError as exc:
            print(f"{path}: cannot read: {exc.strerror}", file=sys.stderr)
            failed = True
            continue
        except yaml.YAMLError as exc:
            print(f"{path}: not valid YAML: {exc}", file=sys.stderr)
            failed = True
            continue
        for index, doc in documents:
            source = f"{path}" if len(documents) == 1 else f"{path} (document {index + 1})"
            try:
                policy = parse_policy(
                    doc, source=source, default_namespace=args.namespace, base=base
                )
            except PolicyError as exc:
                print(str(exc), file=sys.stderr)
                failed = True
                continue
            if policy.ref in seen:
                print(
                    f"{source}: {policy.ref}: also defined in {seen[policy.ref]}", file=sys.stderr
                )
                failed = True
                continue
            seen[policy.ref] = source
            policies.append(policy)
    if failed:
        print("vigil-operator: invalid policies, nothing rendered", file=sys.stderr)
        return 1
    sys.stdout.write(to_yaml(render(policies, base)))
    return 0


def _crds(args: argparse.Namespace) -> int:
    from vigil.api import crd

    if args.check is not None:
        stale = crd.stale(args.check)
        for name in stale:
            print(
                f"{args.check / name}: differs from the models; run `vigil-operator crds --write`"
            )
        return 1 if stale else 0
    if args.write is not None:
        for path in crd.write(args.write):
            print(path)
        return 0
    sys.stdout.write("---\n".join(crd.render(c) for c in crd.all_crds().values()))
    return 0


def _run(args: argparse.Namespace) -> int:
    from vigil.operator.running import serve
    from vigil.operator.settings import from_environment

    settings = from_environment()
    overrides: dict[str, Any] = {}
    if args.config_map:
        overrides["config_map"] = args.config_map
    if args.namespace:
        overrides["namespace"] = args.namespace
    if args.base:
        overrides["base"] = load_config(args.base)
    if args.kubeconfig:
        overrides["kubeconfig"] = args.kubeconfig
    if args.peering:
        overrides["peering"] = args.peering
    if args.liveness:
        overrides["liveness"] = args.liveness
    # Same-priority peers all pause; a random one lets exactly one replica work.
    overrides["priority"] = args.priority if args.priority is not None else random.randint(1, 2**30)
    settings = replace(settings, **overrides)
    log.info(
        "writing ConfigMap %s/%s (key %s); %s",
        settings.namespace,
        settings.config_map,
        settings.key,
        f"peering {settings.peering} priority {settings.priority}"
        if settings.peering
        else "standalone",
    )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await serve(settings, stop_flag=stop)

    asyncio.run(main())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "render":
            return _render(args)
        if args.command == "crds":
            return _crds(args)
        return _run(args)
    except ConfigError as exc:
        print(f"vigil-operator: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
